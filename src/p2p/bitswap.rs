//! Bitswap 1.2.0 (and 1.1.0, 1.0.0): blocks to and from connected peers
//! (ipfs/specs `bitswap-protocol.md`; kubo's behaviour is boxo's
//! `bitswap/`).

pub mod message;
pub mod engine;
