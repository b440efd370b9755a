//! Blocks the store lacks, fetched from somewhere else (peers, with
//! Bitswap, or the node running on this data directory).
//!
//! Readers of the blocking store (the gateway's exporter calls) cannot wait
//! for the network themselves: they note which block was missing, await a
//! [`Fetcher`] to put it into the store, and read again.
//!
//! The repo commands (`cat`, `get`) run beside a server rather than inside
//! it: [`missing_blocks`] tells what a DAG lacks, and [`from_node_api`]
//! asks the node named by the [`API_FILE`] for the DAG as a CAR (it asks its
//! peers) and imports every block, hash-checked, into the repo.

use super::car::CarReader;
use super::{links, BatchWriter, BlockSink, Blockstore, Repo, StoreError};
use cid::Cid;
use futures::future::BoxFuture;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// The file that tells other `meshcast` commands on this data directory
/// where the running node's gateway is (`http://IP:PORT`), so `cat` and
/// `get` can fetch what the repo lacks through it.
pub const API_FILE: &str = "api";

/// How long a fetch through the node may take in all.
const NODE_API_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a block could not be fetched.
#[derive(Debug, Error)]
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
    #[error("cannot fetch block {cid}: {source}")]
    Failed {
        /// The block.
        cid: Cid,
        /// Why (the fetcher's own error).
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Puts missing blocks into the store.
pub trait Fetcher: Send + Sync + 'static {
    /// Fetches `cid` into the store, waiting at most `timeout`.
    fn fetch(&self, cid: Cid, timeout: Duration) -> BoxFuture<'static, Result<(), FetchError>>;
}

/// Why blocks could not be fetched through the node's API.
#[derive(Debug, Error)]
pub enum NodeApiError {
    /// The node did not answer at all.
    #[error(
        "blocks are missing here and the node at {api} (from {}) did not answer: {source}; is `meshcast serve` running?",
        file.display()
    )]
    Unreachable {
        /// The node's gateway, as the API file names it.
        api: String,
        /// The API file.
        file: PathBuf,
        /// What the HTTP client said.
        source: Box<ureq::Error>,
    },
    /// The node answered, but could not get the blocks (no peer sent them
    /// in time, or the path does not exist).
    #[error("the node at {api} could not get {path}: {message} (HTTP {status})")]
    Refused {
        /// The node's gateway.
        api: String,
        /// The content path asked for.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The gateway's own explanation (the first line of its answer).
        message: String,
    },
    /// The answer is not a CAR, or a block in it does not match its CID.
    #[error("reading the CAR the node sent: {source}")]
    Car {
        /// What the reader found.
        source: StoreError,
    },
    /// The repo could not take the blocks.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The blocks of the DAG under `root` that `store` lacks (each once), in
/// the order a depth-first walk meets them.
pub fn missing_blocks(store: &dyn Blockstore, root: &Cid) -> Result<Vec<Cid>, StoreError> {
    let mut seen = HashSet::new();
    let mut stack = vec![*root];
    let mut missing = Vec::new();
    while let Some(c) = stack.pop() {
        if !seen.insert(*c.hash()) {
            continue;
        }
        match store.get(&c)? {
            Some(data) => stack.extend(links(&c, &data)?),
            None => missing.push(c),
        }
    }
    Ok(missing)
}

/// Fetches the DAG at `root/segments` into `repo` through the gateway of
/// the node running on it, as a CAR. Returns `false`, fetching nothing,
/// when no node runs there (no [`API_FILE`]).
pub fn from_node_api(repo: &Repo, root: &Cid, segments: &[String]) -> Result<bool, NodeApiError> {
    let file = repo.dir().join(API_FILE);
    let Ok(api) = std::fs::read_to_string(&file) else {
        return Ok(false);
    };
    let api = api.trim().to_owned();
    let mut path = format!("/ipfs/{root}");
    for s in segments {
        path.push('/');
        path.extend(percent_encoding::utf8_percent_encode(
            s,
            percent_encoding::NON_ALPHANUMERIC,
        ));
    }
    let url = format!("{api}{path}?format=car");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(NODE_API_TIMEOUT))
        // An error status carries the gateway's reason in its body.
        .http_status_as_error(false)
        .build()
        .into();
    let resp = match agent.get(&url).call() {
        Ok(resp) => resp,
        Err(e) => {
            return Err(NodeApiError::Unreachable {
                api,
                file,
                source: Box::new(e),
            })
        }
    };
    let status = resp.status();
    let mut body = resp.into_body().into_reader();
    if !status.is_success() {
        use std::io::Read;
        // The gateway's messages are one line; more is not worth reading.
        let mut text = String::new();
        let _ = body.by_ref().take(4096).read_to_string(&mut text);
        let message = text.lines().next().unwrap_or_default().trim().to_owned();
        return Err(NodeApiError::Refused {
            api,
            path,
            status: status.as_u16(),
            message: if message.is_empty() {
                status.canonical_reason().unwrap_or("error").to_owned()
            } else {
                message
            },
        });
    }
    // Held while the blocks are written, so a GC does not run halfway.
    let _guard = repo.writer()?;
    let car = |source| NodeApiError::Car { source };
    let mut reader = CarReader::new(std::io::BufReader::new(body)).map_err(car)?;
    let mut writer = BatchWriter::new(repo.blocks.clone());
    while let Some(block) = reader.next_block().map_err(car)? {
        writer.put_block(block)?;
    }
    writer.flush()?;
    Ok(true)
}
