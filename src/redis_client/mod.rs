//! The Redis client every user of Redis shares: the Redis source
//! (`sync::redis`), the node reports (`sync::report`), `publish`, `fleet`,
//! `conformance --redis` and the simulator.
//!
//! * [`connection`]: the one way to connect, whatever the deployment
//!   (a server, a socket, a Cluster, Sentinel), with TLS and the password;
//! * [`layout`]: how the data lives in Redis (the keys under one hash tag)
//!   and the fenced script every writer uses;
//! * [`read`]: reading what a writer wrote, every value's size checked.
//!
//! It knows the layout, not what the sidecar makes of it: following the
//! stream and judging documents are the source's and the store's.

pub mod connection;
pub mod layout;
pub mod read;

pub use connection::{Conn, Connector, Lazy, Role};
pub use layout::{
    is_fenced, population, remove_project, stream_end, write_changes, write_changes_after,
    write_project, Change, Population, RedisKeys, STREAM_MAX_LEN,
};
pub use read::{read_project, read_projects, EntryChange, StreamBackwards, StreamEntry};
