//! meshcast: live video over a peer-to-peer, content-addressed network.
//!
//! The modules are the stages of the data flow (see `docs/ARCHITECTURE.md`),
//! and imports run one way along it: a stage uses the ones above it, never
//! one below (`scripts/module-graph` checks this in CI).
//!
//! ```text
//! name, media, assets     leaves: stream names; FLV, segmenter, fMP4/TS muxers (pure); web assets
//! admission               leaf: connection slots by source, rate-limited refusal logs (RTMP, HTTP)
//! ipns                    stream keys -> signed records naming the latest site (pure records)
//! config                  the one TOML tree
//! dagpb, store, unixfs    blocks and pins; files and directories as DAGs (import/export, pure)
//! rtmp                    OBS / ffmpeg --RTMP--> frames (pure protocol; server at the edge)
//! hls                     frames -> segments, playlists and each stream's site, in the store
//! p2p                     libp2p: Bitswap, IPNS over pubsub, the DHTs
//! mesh                    Yggdrasil and cjdns link telemetry from their admin interfaces
//! mirror                  follow another node's stream by its name
//! http                    gateway, live playlists, API, the web UI
//! node                    wires the stages together and owns shutdown
//! ```
//!
//! The protocols (`rtmp`, `media`, `hls::playlist`, `ipns::record`,
//! `unixfs`, the Bitswap engine) are pure; the servers and tasks that drive
//! them are the I/O edge.

pub mod admission;
pub mod assets;
pub mod config;
pub mod dagpb;
#[doc(hidden)]
pub mod fuzzing;
pub mod hls;
pub mod http;
pub mod ipns;
pub mod media;
pub mod mesh;
pub mod mirror;
pub mod name;
pub mod node;
pub mod p2p;
pub mod rtmp;
pub mod store;
pub mod unixfs;
