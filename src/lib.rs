//! meshcast: live video over a peer-to-peer, content-addressed network.
//!
//! The data flow, stage by stage (see `docs/ARCHITECTURE.md`):
//!
//! ```text
//! files / segments -> unixfs::import -> store (blocks + pins) -> unixfs::export -> http gateway
//! ```

pub mod config;
pub mod http;
pub mod media;
pub mod node;
pub mod rtmp;
pub mod store;
pub mod unixfs;
