//! meshcast: live video over a peer-to-peer, content-addressed network.
//!
//! The data flow, stage by stage (see `docs/ARCHITECTURE.md`):
//!
//! ```text
//! RTMP publisher -> rtmp (handshake, chunks, AMF0, session) -> media (FLV tags) -> [segmenter]
//! files / segments -> unixfs::import -> store (blocks + pins) -> unixfs::export -> http gateway
//! ```
//!
//! The ingest stages (`rtmp`, `media`) are pure protocol code so far; the
//! server that drives them and the segmenter come next.

pub mod config;
pub mod hls;
pub mod http;
pub mod media;
pub mod node;
pub mod rtmp;
pub mod store;
pub mod unixfs;
