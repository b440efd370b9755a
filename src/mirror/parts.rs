//! The low-latency side of a mirror: the origin's part announcements,
//! verified by `p2p::parts`, turned into held media and a served LL-HLS
//! copy.
//!
//! ```text
//! Announcements::follow(name) --queue (64)--> PartsFollower task
//!   part:    Bitswap (one raw block) -> pinned directly -> Streams::mirror_part
//!   segment: Bitswap (its root; the leaves are the parts) -> pinned
//!            -> Streams::mirror_segment -> Held --(bounded)--> the name's Follower
//!   init:    fetched and pinned, Held the same way
//! ```
//!
//! The task runs beside its name's [`Follower`](super::Follower), so a
//! part never waits for an IPNS sync; what it pinned as media goes to the
//! follower, which holds it for retention like any segment (what
//! retention lets go leaves the copy too) and does not fetch it again
//! (each block crosses the link once). A part that cannot be fetched in
//! time is skipped (players then take its segment); nothing here waits
//! longer than [`FETCH_TIMEOUT`].

use super::MAX_SEGMENT_BLOCKS;
use super::{fetch_block, fetch_dag, FollowMetrics, Held, MirrorError, MirrorStats};
use crate::hls::streams::Streams;
use crate::ipns::announce::{Announcement, Media};
use crate::ipns::Name;
use crate::p2p::bitswap::Bitswap;
use crate::p2p::P2p;
use crate::store::pins::PinKind;
use crate::store::{Repo, StoreError};
use cid::Cid;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The longest a part or segment fetch is waited for.
const FETCH_TIMEOUT: Duration = Duration::from_secs(4);
/// Media this task handed over lately, not to hand over twice.
const RECENT_MEDIA: usize = 64;

/// A followed name's announcements and the parts pinned for them.
pub(super) struct PartsFollower {
    pub(super) name: Name,
    pub(super) rx: mpsc::Receiver<Announcement>,
    pub(super) repo: Repo,
    pub(super) bitswap: Bitswap,
    pub(super) streams: Streams,
    pub(super) p2p: P2p,
    /// The stream's name here, once the follower has its first site.
    pub(super) stream: watch::Receiver<Option<String>>,
    /// Media pinned, for the follower to hold.
    pub(super) held: mpsc::Sender<Held>,
    pub(super) stats: Arc<Mutex<MirrorStats>>,
    pub(super) metrics: Option<FollowMetrics>,
}

impl PartsFollower {
    pub(super) async fn run(mut self, shutdown: CancellationToken) {
        // Parts pinned directly while their segment is open: (msn, CID).
        let mut open: Vec<(u64, Cid)> = Vec::new();
        let mut recent: VecDeque<(Cid, u64)> = VecDeque::with_capacity(RECENT_MEDIA);
        loop {
            let a = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = self.rx.recv() => match a {
                    Some(a) => a,
                    None => return,
                },
            };
            // Until the first site is in, the stream has no name here.
            let Some(stream) = self.stream.borrow().clone() else {
                continue;
            };
            self.take(&stream, a.media, &mut open, &mut recent).await;
        }
    }

    async fn take(
        &self,
        stream: &str,
        media: Media,
        open: &mut Vec<(u64, Cid)>,
        recent: &mut VecDeque<(Cid, u64)>,
    ) {
        if let Some(init) = media.init {
            if let Err(e) = self.hold_dag(init, recent).await {
                tracing::debug!(name = %self.name, "init segment {init}: {e}");
                return;
            }
        }
        let ipns = self.name.to_string();
        if media.part.is_some() {
            if open.first().is_some_and(|(msn, _)| *msn != media.msn) {
                // Parts of a segment whose close we never heard of.
                let stale: Vec<Cid> = open.drain(..).map(|(_, c)| c).collect();
                self.unpin_direct(stale, recent).await;
            }
            let bytes = match tokio::time::timeout(
                FETCH_TIMEOUT,
                fetch_block(&self.repo, &self.bitswap, media.cid),
            )
            .await
            {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    tracing::debug!(name = %self.name, "part {}: {e}", media.cid);
                    return;
                }
                Err(_) => {
                    tracing::debug!(name = %self.name, "part {} timed out", media.cid);
                    return;
                }
            };
            // Listed as soon as it is stored, pinned after: a pin is a
            // synced write, and the live edge should not wait for it (the
            // collector runs at most once a minute, and a listed block it
            // took would be fetched again by the gateway).
            self.streams.mirror_part(stream, &ipns, &media, bytes);
            if let Err(e) = self.pin_as(media.cid, PinKind::Direct).await {
                tracing::debug!(name = %self.name, "part {}: {e}", media.cid);
                return;
            }
            open.push((media.msn, media.cid));
            return;
        }
        let size = match self.fetch_dag(media.cid).await {
            Ok(size) => size,
            Err(e) => {
                tracing::debug!(name = %self.name, "segment {}: {e}", media.cid);
                return;
            }
        };
        self.streams.mirror_segment(stream, &ipns, &media, size);
        if let Err(e) = self.hold(media.cid, size, recent).await {
            tracing::debug!(name = %self.name, "segment {}: {e}", media.cid);
            return;
        }
        // The segment's pin covers its parts now.
        let (done, rest): (Vec<_>, Vec<_>) = open.drain(..).partition(|(msn, _)| *msn <= media.msn);
        *open = rest;
        self.unpin_direct(done.into_iter().map(|(_, c)| c).collect(), recent)
            .await;
        if let Some(m) = &self.metrics {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let edge = media.program_date_time_ms + media.duration_ms;
            m.lag.set(now.saturating_sub(edge) as f64 / 1000.0);
        }
    }

    /// Fetches a DAG (a segment, an init segment), pins it and hands it to
    /// the follower to hold; returns its bytes. Once per CID lately.
    async fn hold_dag(
        &self,
        cid: Cid,
        recent: &mut VecDeque<(Cid, u64)>,
    ) -> Result<u64, MirrorError> {
        if let Some((_, bytes)) = recent.iter().find(|(c, _)| *c == cid) {
            return Ok(*bytes);
        }
        let bytes = self.fetch_dag(cid).await?;
        self.hold(cid, bytes, recent).await?;
        Ok(bytes)
    }

    async fn fetch_dag(&self, cid: Cid) -> Result<u64, MirrorError> {
        tokio::time::timeout(
            FETCH_TIMEOUT,
            fetch_dag(&self.repo, &self.bitswap, cid, MAX_SEGMENT_BLOCKS),
        )
        .await
        .map_err(|_| MirrorError::Site(format!("fetching {cid} timed out")))?
    }

    /// Pins fetched media and hands it to the follower to hold.
    async fn hold(
        &self,
        cid: Cid,
        bytes: u64,
        recent: &mut VecDeque<(Cid, u64)>,
    ) -> Result<(), MirrorError> {
        self.pin_as(cid, PinKind::Recursive).await?;
        if recent.len() == RECENT_MEDIA {
            recent.pop_front();
        }
        recent.push_back((cid, bytes));
        let _ = self
            .held
            .send(Held {
                cid,
                bytes,
                at: Instant::now(),
            })
            .await;
        super::count_segment(&self.stats, self.metrics.as_ref(), bytes);
        let _ = self.p2p.provide(vec![cid]).await;
        Ok(())
    }

    async fn pin_as(&self, cid: Cid, kind: PinKind) -> Result<(), MirrorError> {
        let repo = self.repo.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            let _guard = repo.writer()?;
            repo.pins.add(&cid, kind)
        })
        .await
        .map_err(|e| MirrorError::Site(e.to_string()))??;
        Ok(())
    }

    /// Drops parts' direct pins, but for blocks held as media themselves
    /// (a segment of one part is that part's block).
    async fn unpin_direct(&self, mut cids: Vec<Cid>, recent: &VecDeque<(Cid, u64)>) {
        cids.retain(|c| !recent.iter().any(|(m, _)| m == c));
        if cids.is_empty() {
            return;
        }
        let repo = self.repo.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for cid in &cids {
                if let Err(e) = repo.pins.remove(cid) {
                    tracing::debug!("unpinning part {cid}: {e}");
                }
            }
        })
        .await;
    }
}
