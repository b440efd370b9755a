//! meshcast: live video over a peer-to-peer, content-addressed network.
//!
//! The data flow, stage by stage (see `docs/ARCHITECTURE.md`):
//!
//! ```text
//! RTMP publisher -> rtmp (handshake, chunks, AMF0, session) -> media (FLV tags) -> [segmenter]
//! files / segments -> unixfs::import -> store (blocks + pins) -> unixfs::export -> http gateway
//! ```
//!
//! The ingest protocols (`rtmp`, `media`) are pure; `rtmp::server` is the
//! I/O edge that drives them and hands frames to the stream manager.

pub mod config;
pub mod hls;
pub mod http;
pub mod media;
pub mod node;
pub mod rtmp;
pub mod store;
pub mod unixfs;
