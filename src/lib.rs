//! meshcast: live video over a peer-to-peer, content-addressed network.
//!
//! The data flow, stage by stage (see `docs/ARCHITECTURE.md`):
//!
//! ```text
//! OBS / ffmpeg --RTMP--> rtmp (server; pure handshake, chunks, AMF0, session)
//!   -> media (FLV tags -> frames; segmenter; fmp4 / ts muxers)
//!   -> hls::streams (per-stream pipeline) -> unixfs::import -> store (blocks + pins)
//!   -> hls::playlist (live + archive playlists, also stored)
//!   -> http (live playlists, API, player; gateway via unixfs::export)
//! files --meshcast add--> unixfs::import -> store
//! ipns (stream keys -> signed records naming the latest content)
//! ```
//!
//! The ingest protocols (`rtmp`, `media`) are pure; `rtmp::server` is the
//! I/O edge that drives them and hands frames to the stream manager.

pub mod config;
pub mod dagpb;
pub mod hls;
pub mod http;
pub mod ipns;
pub mod media;
pub mod node;
pub mod p2p;
pub mod rtmp;
pub mod store;
pub mod unixfs;
