//! The topics containerd publishes on, for publishers and for subscription
//! filters such as `topic=="/tasks/exit"`.

/// A container record was created.
pub const CONTAINER_CREATE: &str = "/containers/create";
/// A container record was updated.
pub const CONTAINER_UPDATE: &str = "/containers/update";
/// A container record was deleted.
pub const CONTAINER_DELETE: &str = "/containers/delete";

/// Content was deleted from the content store.
pub const CONTENT_DELETE: &str = "/content/delete";

/// An image record was created.
pub const IMAGE_CREATE: &str = "/images/create";
/// An image record was updated.
pub const IMAGE_UPDATE: &str = "/images/update";
/// An image record was deleted.
pub const IMAGE_DELETE: &str = "/images/delete";

/// A namespace was created.
pub const NAMESPACE_CREATE: &str = "/namespaces/create";
/// A namespace's labels were updated.
pub const NAMESPACE_UPDATE: &str = "/namespaces/update";
/// A namespace was deleted.
pub const NAMESPACE_DELETE: &str = "/namespaces/delete";

/// An active snapshot was prepared (containerd spells it `snapshot`, singular).
pub const SNAPSHOT_PREPARE: &str = "/snapshot/prepare";
/// An active snapshot was committed.
pub const SNAPSHOT_COMMIT: &str = "/snapshot/commit";
/// A snapshot was removed.
pub const SNAPSHOT_REMOVE: &str = "/snapshot/remove";

/// A task was created.
pub const TASK_CREATE: &str = "/tasks/create";
/// A task was started.
pub const TASK_START: &str = "/tasks/start";
/// A task ran out of memory.
pub const TASK_OOM: &str = "/tasks/oom";
/// A task's process (init or exec) exited.
pub const TASK_EXIT: &str = "/tasks/exit";
/// A task was deleted.
pub const TASK_DELETE: &str = "/tasks/delete";
/// An exec process was added to a task.
pub const TASK_EXEC_ADDED: &str = "/tasks/exec-added";
/// An exec process was started.
pub const TASK_EXEC_STARTED: &str = "/tasks/exec-started";
/// A task was paused.
pub const TASK_PAUSED: &str = "/tasks/paused";
/// A task was resumed.
pub const TASK_RESUMED: &str = "/tasks/resumed";
/// A task was checkpointed.
pub const TASK_CHECKPOINTED: &str = "/tasks/checkpointed";

/// Every topic above.
pub const ALL: &[&str] = &[
    CONTAINER_CREATE,
    CONTAINER_UPDATE,
    CONTAINER_DELETE,
    CONTENT_DELETE,
    IMAGE_CREATE,
    IMAGE_UPDATE,
    IMAGE_DELETE,
    NAMESPACE_CREATE,
    NAMESPACE_UPDATE,
    NAMESPACE_DELETE,
    SNAPSHOT_PREPARE,
    SNAPSHOT_COMMIT,
    SNAPSHOT_REMOVE,
    TASK_CREATE,
    TASK_START,
    TASK_OOM,
    TASK_EXIT,
    TASK_DELETE,
    TASK_EXEC_ADDED,
    TASK_EXEC_STARTED,
    TASK_PAUSED,
    TASK_RESUMED,
    TASK_CHECKPOINTED,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_topics_are_valid() {
        for topic in ALL {
            assert!(crate::validate_topic(topic).is_ok(), "{topic}");
        }
    }
}
