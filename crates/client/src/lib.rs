#![doc = include_str!("../README.md")]

mod cio;
mod client;
mod client_side;
mod container;
mod error;
mod events;
mod image;
mod remote_content;
pub mod spec;
mod task;
mod transfer;
pub mod user;

pub use berth_api::Category;
pub use cio::{Buffer, Io, Stdio};
pub use client::{Client, DEFAULT_NAMESPACE, Plugin, Version};
pub use container::{Container, ContainerBuilder, DEFAULT_RUNTIME};
pub use error::{Error, Result};
pub use events::{Event, EventStream, Payload, decode as decode_event};
pub use image::{
    Descriptor, Image, ImageConfig, ImageRecord, chain_id, descriptor_from_wire,
    descriptor_to_wire, normalize,
};
pub use task::{ExitStatus, ExitWaiter, Process, Status, Task};
pub use transfer::{
    ConvertOpts, DEFAULT_SNAPSHOTTER, ExportOpts, FetchOpts, ImportOpts, ObjectOpts, Progress,
    ProgressHandler, PullOpts, PushOpts,
};

/// The generated protobuf types, for the calls this crate does not wrap
/// (use with [`Client::raw`]).
pub use berth_api as api;
