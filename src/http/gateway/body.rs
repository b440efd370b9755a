//! Streamed response bodies: one block read per blocking call, fed to the
//! connection through a small bounded channel, and blocks missing on the
//! way fetched from peers (with those after them) before the body goes on.
//!
//! Read-ahead is bounded per response and in total. Per response: one
//! chunk being read, one in the channel and what hyper queues for the
//! socket (it stops polling the body at its buffer limit). In total: each
//! chunk carries permits of the state's body budget (`http.body_buffer`)
//! that go back when the last handle to the chunk is dropped, i.e. once
//! hyper has written it to the socket, so clients that stop reading hold
//! at most the budget (200 stalled readers of a large file used to hold
//! 2 MB each) until the write timeout closes their connections; others
//! wait for it meanwhile. A consumer that kept every chunk of a body larger
//! than the budget would wait forever; hyper writes and drops them.

use super::AppState;
use crate::store::BlockRead;
use crate::unixfs::export::{ExportError, FileRange};
use axum::body::Body;
use bytes::Bytes;
use cid::Cid;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

/// Chunks buffered between the block reader and the connection.
const BODY_CHANNEL: usize = 1;
/// Permits (KiB) taken before a chunk is read, since its size is known
/// only after: kubo's and our chunk size. A larger chunk takes the rest
/// once read.
const CHUNK_ESTIMATE: u32 = 256;
/// Most permits (KiB) one chunk takes, so that one always fits the budget
/// (which is at least twice this): blocks are at most 1 MiB as we and
/// kubo make them; a larger one is counted as 1 MiB.
pub(in crate::http) const CHUNK_MAX: u32 = 1024;
/// Blocks of a file fetched at once when the body reaches one this node
/// lacks: the missing one and those after it that are missing too, this
/// many in all, so a file held only by peers costs a round trip per this
/// many blocks, not per block (16 kubo chunks are 4 MiB).
pub(super) const READ_AHEAD: usize = 16;

/// A body produced one block read at a time.
pub(super) trait Step: Send + 'static {
    fn step(&mut self, store: &dyn BlockRead) -> Result<Option<Bytes>, ExportError>;

    /// Blocks the next steps will want, to fetch along with a missing one.
    fn upcoming(&self) -> Vec<Cid> {
        Vec::new()
    }
}

impl Step for FileRange {
    fn step(&mut self, store: &dyn BlockRead) -> Result<Option<Bytes>, ExportError> {
        self.next_chunk(store)
    }

    fn upcoming(&self) -> Vec<Cid> {
        FileRange::upcoming(self, READ_AHEAD).collect()
    }
}

/// Streams `body`: a task runs one step per blocking call and feeds a
/// bounded channel. When the client goes away the channel closes and the
/// task stops. A block missing mid-stream is fetched from peers when the
/// state fetches, and the step runs again (the exporter's readers stay put
/// on a missing block); when it cannot be had, or a block is bad, the body
/// ends with an error, so the client sees a cut connection rather than a
/// short file that looks complete.
pub(super) fn stream(state: AppState, body: impl Step) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(BODY_CHANNEL);
    let producer = async move {
        let mut body = Some(body);
        while let Some(mut b) = body.take() {
            let Some(mut held) = Held::take(&state.body_budget, CHUNK_ESTIMATE).await else {
                return;
            };
            let fetches = state.fetches();
            let stepped = state
                .read_once(move |s| {
                    let r = b.step(s);
                    // What else is missing ahead, to fetch with it.
                    let ahead: Vec<Cid> = match r {
                        Err(ExportError::BlockNotFound { cid }) if fetches => b
                            .upcoming()
                            .into_iter()
                            .filter(|c| *c != cid && !matches!(s.has(c), Ok(true)))
                            .collect(),
                        _ => Vec::new(),
                    };
                    (b, r, ahead)
                })
                .await;
            let sent = match stepped {
                Ok((b, Ok(Some(bytes)), _)) => {
                    body = Some(b);
                    let kib = u32::try_from(bytes.len().div_ceil(1024).max(1)).unwrap_or(u32::MAX);
                    if kib < CHUNK_ESTIMATE {
                        // Give back what a small chunk does not use.
                        drop(held.0.split((CHUNK_ESTIMATE - kib) as usize));
                    } else if kib > CHUNK_ESTIMATE {
                        let more = kib.min(CHUNK_MAX) - CHUNK_ESTIMATE;
                        match Held::take(&state.body_budget, more).await {
                            Some(more) => held.merge(more),
                            None => return,
                        }
                    }
                    tx.send(Ok(Bytes::from_owner(Budgeted { bytes, _held: held })))
                        .await
                }
                Ok((b, Err(ExportError::BlockNotFound { cid }), ahead)) if fetches => {
                    let all = std::iter::once(cid).chain(ahead).map(|c| state.fetch(c));
                    match futures::future::try_join_all(all).await.map(|_| ()) {
                        Ok(()) => {
                            body = Some(b);
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "response body cut short");
                            tx.send(Err(std::io::Error::other("content unavailable")))
                                .await
                        }
                    }
                }
                Ok((_, Ok(None), _)) => return,
                Ok((_, Err(e), _)) => {
                    tracing::warn!(error = %e, "response body cut short");
                    tx.send(Err(std::io::Error::other("content unavailable")))
                        .await
                }
                // Already logged by `read`.
                Err(_) => tx.send(Err(std::io::Error::other("internal error"))).await,
            };
            if sent.is_err() {
                return;
            }
        }
    };
    tokio::spawn(producer.in_current_span());
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Permits of a chunk from the total budget.
struct Held(OwnedSemaphorePermit);

impl Held {
    /// Waits for `kib` permits; None if the semaphore closed (never).
    async fn take(budget: &Arc<Semaphore>, kib: u32) -> Option<Self> {
        budget.clone().acquire_many_owned(kib).await.ok().map(Self)
    }

    fn merge(&mut self, more: Held) {
        self.0.merge(more.0);
    }
}

/// A chunk that gives its permits back when the last of its clones is
/// dropped. Same address as the chunk, so a mapped block is still found by
/// the connection and sent with sendfile.
struct Budgeted {
    bytes: Bytes,
    _held: Held,
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}
