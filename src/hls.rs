//! HLS delivery: the playlists that name a stream's segments.
//!
//! Flow: the [`crate::media::segmenter`] emits segments; [`streams`] (the stream manager)
//! muxes each, adds it to the store, and records it in a
//! [`playlist::Session`] under its `/ipfs/<cid>` URI. The session renders
//! the live playlist (a sliding window) and the archive playlist (every
//! segment; a VOD once the stream ends), and is persisted as JSON so
//! archives survive a restart.

pub mod playlist;
pub mod site;
pub mod streams;
