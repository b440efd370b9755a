//! Peer-to-peer exchange of blocks with other IPFS nodes.
//!
//! [`bitswap`] serves the store's blocks to peers and fetches missing ones
//! from them, over streams of the libp2p node.

pub mod bitswap;
