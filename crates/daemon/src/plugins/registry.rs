//! The plugin registry: what can be built, in which order, and what was.
//!
//! A plugin is a registration (type, id, the plugin types it requires and an
//! init function) plus, once initialised, an instance or the error it failed
//! with. berthd initialises what `config.toml` enables in dependency order;
//! a failure is recorded (and shown by Introspection) and is fatal only for
//! plugins listed in `required_plugins`.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;

/// Plugin type names, as containerd spells them.
pub mod types {
    /// Event exchange.
    pub const EVENT: &str = "io.containerd.event.v1";
    /// Metadata store.
    pub const METADATA: &str = "io.containerd.metadata.v1";
    /// gRPC services.
    pub const GRPC: &str = "io.containerd.grpc.v1";
    /// ttrpc services.
    pub const TTRPC: &str = "io.containerd.ttrpc.v1";
    /// Internal helpers.
    pub const INTERNAL: &str = "io.containerd.internal.v1";
    /// Snapshotters.
    pub const SNAPSHOT: &str = "io.containerd.snapshotter.v1";
    /// Content stores.
    pub const CONTENT: &str = "io.containerd.content.v1";
    /// Garbage collection scheduler.
    pub const GC: &str = "io.containerd.gc.v1";
    /// Task runtimes (the shim manager).
    pub const RUNTIME: &str = "io.containerd.runtime.v2";
    /// Services used by the gRPC layer and other plugins.
    pub const SERVICE: &str = "io.containerd.service.v1";
    /// The registry of client streams (progress and auth of transfers).
    pub const STREAMING: &str = "io.containerd.streaming.v1";
}

/// A type-erased plugin instance.
pub type Instance = Arc<dyn Any + Send + Sync>;

/// Why a plugin did not initialise.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    /// The plugin chose not to run here (e.g. a kernel feature is missing).
    #[error("skip plugin: {0}")]
    Skipped(String),
    /// Initialisation failed.
    #[error("{0}")]
    Failed(String),
}

impl PluginError {
    /// A failure with message `msg`.
    pub fn failed(msg: impl std::fmt::Display) -> PluginError {
        PluginError::Failed(msg.to_string())
    }
}

/// Everything a plugin may use while initialising.
#[derive(Debug)]
pub struct InitContext<'a> {
    /// This plugin's id.
    pub id: String,
    /// This plugin's private persistent directory (`<root>/<type>.<id>`).
    pub root: PathBuf,
    /// This plugin's private state directory (`<state>/<type>.<id>`).
    pub state: PathBuf,
    /// The daemon configuration.
    pub config: &'a Config,
    /// This plugin's `[plugins."type.id"]` section, if any.
    pub section: Option<&'a toml::Table>,
    /// Values advertised through Introspection (`exports`).
    pub exports: BTreeMap<String, String>,
    /// Capabilities advertised through Introspection.
    pub capabilities: Vec<String>,
    /// Work that must finish before berthd serves (see [`InitContext::before_serving`]).
    startup: Pending,
    plugins: &'a [Plugin],
}

/// The recovery work plugins asked for so far.
#[derive(Default)]
struct Pending(Vec<StartupWork>);

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} startup tasks", self.0.len())
    }
}

/// Recovery a plugin must finish before the daemon accepts calls.
pub type StartupWork = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

/// What [`init_all`] built: the plugins and the recovery to await before serving.
pub struct Initialised {
    /// Every plugin, initialised or failed.
    pub plugins: Vec<Plugin>,
    /// Recovery work (finishing interrupted commits, reconnecting shims):
    /// the daemon awaits all of it before it creates its sockets, so no
    /// client sees the state from before recovery.
    pub startup: Vec<StartupWork>,
}

impl std::fmt::Debug for Initialised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initialised")
            .field("plugins", &self.plugins)
            .field("startup", &self.startup.len())
            .finish()
    }
}

impl InitContext<'_> {
    /// The first initialised plugin of `plugin_type` whose instance is a `T`.
    pub fn get<T: Any + Send + Sync>(&self, plugin_type: &str) -> Result<Arc<T>, PluginError> {
        self.plugins
            .iter()
            .filter(|p| p.plugin_type == plugin_type)
            .find_map(|p| {
                p.instance
                    .as_ref()
                    .ok()
                    .and_then(|i| i.clone().downcast::<T>().ok())
            })
            .ok_or_else(|| {
                PluginError::failed(format!("no initialised {plugin_type} plugin available"))
            })
    }

    /// Every plugin initialised or failed so far (for Introspection).
    pub fn all(&self) -> &[Plugin] {
        self.plugins
    }

    /// Runs `work` once every plugin is built and before the daemon serves
    /// (containerd, too, recovers its state before it accepts calls).
    pub fn before_serving(&mut self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.startup.0.push(Box::pin(work));
    }
}

/// The init function of a registration.
pub type InitFn = fn(&mut InitContext<'_>) -> Result<Instance, PluginError>;

/// What a plugin is and how to build it.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Plugin type (`io.containerd.grpc.v1`).
    pub plugin_type: &'static str,
    /// Plugin id, unique within its type (owned for plugins named by config,
    /// such as `proxy_plugins`).
    pub id: std::borrow::Cow<'static, str>,
    /// Types this plugin needs initialised first; `"*"` means every other plugin.
    pub requires: &'static [&'static str],
    /// Builds the instance.
    pub init: InitFn,
}

impl Registration {
    /// `type.id`, the name used in config and `disabled_plugins`.
    pub fn uri(&self) -> String {
        format!("{}.{}", self.plugin_type, self.id)
    }
}

/// A plugin after initialisation was attempted.
#[derive(Debug, Clone)]
pub struct Plugin {
    /// Plugin type.
    pub plugin_type: String,
    /// Plugin id.
    pub id: String,
    /// Required types.
    pub requires: Vec<String>,
    /// Advertised exports.
    pub exports: BTreeMap<String, String>,
    /// Advertised capabilities.
    pub capabilities: Vec<String>,
    /// The instance, or why there is none.
    pub instance: Result<Instance, PluginError>,
}

/// Errors building the plugin set.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Two registrations share a type and id.
    #[error("plugin {0} is registered twice")]
    Duplicate(String),
    /// Requirements form a cycle.
    #[error("plugin dependency cycle among: {0}")]
    Cycle(String),
    /// A required plugin failed to initialise.
    #[error("required plugin {uri} failed to initialise: {error}")]
    RequiredFailed {
        /// `type.id`.
        uri: String,
        /// Why.
        error: PluginError,
    },
}

/// Orders registrations so that each comes after the types it requires.
/// Registration order breaks ties, so the result is deterministic.
pub fn sort(registrations: &[Registration]) -> Result<Vec<Registration>, RegistryError> {
    let mut seen = std::collections::BTreeSet::new();
    for r in registrations {
        if !seen.insert(r.uri()) {
            return Err(RegistryError::Duplicate(r.uri()));
        }
    }
    let mut pending: Vec<Registration> = registrations.to_vec();
    let mut ordered: Vec<Registration> = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let ready = pending.iter().position(|r| {
            r.requires.iter().all(|req| {
                if *req == "*" {
                    // Everything else without a "*" must be done first.
                    pending
                        .iter()
                        .all(|o| o.uri() == r.uri() || o.requires.contains(&"*"))
                } else {
                    // A "*" plugin comes last: nothing can wait for it.
                    !pending.iter().any(|o| {
                        o.plugin_type == *req && o.uri() != r.uri() && !o.requires.contains(&"*")
                    })
                }
            })
        });
        match ready {
            Some(i) => ordered.push(pending.remove(i)),
            None => {
                let names: Vec<String> = pending.iter().map(Registration::uri).collect();
                return Err(RegistryError::Cycle(names.join(", ")));
            }
        }
    }
    Ok(ordered)
}

/// Whether `disabled` (entries of `disabled_plugins`) names `r`, by `type.id` or id.
fn is_disabled(r: &Registration, disabled: &[String]) -> bool {
    disabled.iter().any(|d| *d == r.uri() || *d == r.id)
}

/// Initialises `registrations` in dependency order against `config`.
///
/// Disabled plugins are left out. A failing plugin is logged and recorded; it
/// stops the daemon only if `required_plugins` names it.
pub fn init_all(
    registrations: &[Registration],
    config: &Config,
) -> Result<Vec<Plugin>, RegistryError> {
    Ok(init_all_staged(registrations, config)?.plugins)
}

/// [`init_all`], also returning the recovery work plugins asked to finish
/// before the daemon serves.
pub fn init_all_staged(
    registrations: &[Registration],
    config: &Config,
) -> Result<Initialised, RegistryError> {
    let mut plugins: Vec<Plugin> = Vec::new();
    let mut startup: Vec<StartupWork> = Vec::new();
    for r in sort(registrations)? {
        let uri = r.uri();
        if is_disabled(&r, &config.disabled_plugins) {
            tracing::info!(plugin = %uri, "plugin disabled by config");
            continue;
        }
        let mut ctx = InitContext {
            id: r.id.to_string(),
            root: config.root.join(&uri),
            state: config.state.join(&uri),
            config,
            section: config.plugin_section(&uri),
            exports: BTreeMap::new(),
            capabilities: Vec::new(),
            startup: Pending::default(),
            plugins: &plugins,
        };
        let started = std::time::Instant::now();
        let instance = (r.init)(&mut ctx);
        let (exports, capabilities) = (ctx.exports, ctx.capabilities);
        if instance.is_ok() {
            startup.extend(ctx.startup.0);
        }
        match &instance {
            Ok(_) => tracing::debug!(plugin = %uri, elapsed = ?started.elapsed(), "plugin loaded"),
            Err(PluginError::Skipped(why)) => tracing::info!(plugin = %uri, %why, "plugin skipped"),
            Err(error) => {
                if config.required_plugins.contains(&uri) {
                    return Err(RegistryError::RequiredFailed {
                        uri,
                        error: error.clone(),
                    });
                }
                tracing::warn!(plugin = %uri, %error, "failed to load plugin");
            }
        }
        plugins.push(Plugin {
            plugin_type: r.plugin_type.to_string(),
            id: r.id.to_string(),
            requires: r.requires.iter().map(|s| (*s).to_string()).collect(),
            exports,
            capabilities,
            instance,
        });
    }
    Ok(Initialised { plugins, startup })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: &mut InitContext<'_>) -> Result<Instance, PluginError> {
        Ok(Arc::new(1_u32))
    }
    fn fail(_: &mut InitContext<'_>) -> Result<Instance, PluginError> {
        Err(PluginError::failed("no such kernel feature"))
    }
    fn needs_u32(ctx: &mut InitContext<'_>) -> Result<Instance, PluginError> {
        let v = ctx.get::<u32>("a")?;
        Ok(Arc::new(*v + 1))
    }

    fn reg(
        t: &'static str,
        id: &'static str,
        requires: &'static [&'static str],
        init: InitFn,
    ) -> Registration {
        Registration {
            plugin_type: t,
            id: id.into(),
            requires,
            init,
        }
    }

    fn config() -> Config {
        Config {
            root: PathBuf::from("/nonexistent/root"),
            state: PathBuf::from("/nonexistent/state"),
            ..Config::default()
        }
    }

    #[test]
    fn dependency_order_and_star_last() {
        let regs = [
            reg("all", "x", &["*"], ok),
            reg("b", "x", &["a"], needs_u32),
            reg("a", "x", &[], ok),
        ];
        let order: Vec<String> = sort(&regs).unwrap().iter().map(Registration::uri).collect();
        assert_eq!(order, ["a.x", "b.x", "all.x"]);
        let plugins = init_all(&regs, &config()).unwrap();
        let b = plugins.iter().find(|p| p.plugin_type == "b").unwrap();
        let v = b
            .instance
            .as_ref()
            .unwrap()
            .clone()
            .downcast::<u32>()
            .unwrap();
        assert_eq!(*v, 2);
    }

    #[test]
    fn cycles_and_duplicates_are_errors() {
        let cyc = [reg("a", "x", &["b"], ok), reg("b", "x", &["a"], ok)];
        assert!(matches!(sort(&cyc), Err(RegistryError::Cycle(_))));
        let dup = [reg("a", "x", &[], ok), reg("a", "x", &[], ok)];
        assert!(matches!(sort(&dup), Err(RegistryError::Duplicate(_))));
    }

    #[test]
    fn failure_is_recorded_unless_required() {
        let regs = [reg("a", "x", &[], fail), reg("b", "x", &["a"], needs_u32)];
        let plugins = init_all(&regs, &config()).unwrap();
        assert!(plugins[0].instance.is_err());
        // b cannot find an initialised `a` and says so.
        let err = plugins[1].instance.as_ref().unwrap_err().to_string();
        assert!(err.contains("no initialised a plugin"), "{err}");

        let mut c = config();
        c.required_plugins = vec!["a.x".to_string()];
        assert!(matches!(
            init_all(&regs, &c),
            Err(RegistryError::RequiredFailed { .. })
        ));
    }

    #[test]
    fn disabled_plugins_are_skipped() {
        let regs = [reg("a", "x", &[], ok), reg("c", "y", &[], ok)];
        let mut c = config();
        c.disabled_plugins = vec!["c.y".to_string()];
        let plugins = init_all(&regs, &c).unwrap();
        assert_eq!(plugins.len(), 1);
        c.disabled_plugins = vec!["x".to_string()];
        let plugins = init_all(&regs, &c).unwrap();
        assert_eq!(plugins.len(), 1);
        assert_eq!(plugins[0].id, "y");
    }
}
