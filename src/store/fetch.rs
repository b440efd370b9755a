//! Blocks the store lacks, fetched from somewhere else (peers, with
//! Bitswap).
//!
//! Readers of the blocking store (the gateway's exporter calls) cannot wait
//! for the network themselves: they note which block was missing, await a
//! [`Fetcher`] to put it into the store, and read again.

use cid::Cid;
use futures::future::BoxFuture;
use std::time::Duration;
use thiserror::Error;

/// Why a block could not be fetched.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum FetchError {
    /// Nobody sent the block in time.
    #[error("block {cid} was not found on any peer within {}", humantime::format_duration(*.timeout))]
    Timeout {
        /// The block.
        cid: Cid,
        /// How long was waited.
        timeout: Duration,
    },
    /// Too much is being fetched already.
    #[error("{0}")]
    Busy(String),
    /// Anything else (the block cannot be verified, the store failed, the
    /// fetcher stopped).
    #[error("cannot fetch block {cid}: {reason}")]
    Failed {
        /// The block.
        cid: Cid,
        /// Why.
        reason: String,
    },
}

/// Puts missing blocks into the store.
pub trait Fetcher: Send + Sync + 'static {
    /// Fetches `cid` into the store, waiting at most `timeout`.
    fn fetch(&self, cid: Cid, timeout: Duration) -> BoxFuture<'static, Result<(), FetchError>>;
}
