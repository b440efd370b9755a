//! Retention for the node's own streams: what they let go of so that a
//! long-running node never fills its disk.
//!
//! ```text
//! after each segment of any own stream:
//!     every own stream's limits (retain, retain_bytes) + the data dir's free
//!     space (min_free_bytes)
//!     -> plan: per stream, its oldest past sessions while over its own limits;
//!        then, while space is lacking, the oldest media across all own
//!        streams: past sessions (never a stream's latest, which its site and
//!        archive name) and the publishing session's oldest segments (never
//!        its live window)
//!     -> drop session files, trim the archive's head, store_playlists (the
//!        new archive pinned, the old one let go)
//!     -> unpin what nothing kept names (sessions of the same encoder share
//!        init segments, byte for byte) -> repo GC
//! ```
//!
//! The plan is pure ([`plan`], [`released`]); the rest is the I/O around
//! it. What goes is first removed from what the API and the playlists
//! name, then unpinned, then collected, so that nothing listed is ever
//! missing. A stream's live segments can only be trimmed by its own
//! publish task (which holds its pipeline); another live stream's go at its
//! next segment. What kept sessions name is read from their session files,
//! which a live stream writes with each segment.

use super::publish::Pipeline;
use super::session::SessionRecord;
use super::{now_ms, Streams};
use cid::Cid;
use std::collections::HashSet;
use std::time::Duration;

/// Something retention could let go of: its bytes and when its media ends
/// (ms since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Held {
    pub(super) bytes: u64,
    pub(super) end_ms: u64,
}

/// One own stream as retention sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Candidates {
    /// What may go, oldest first: past sessions, then (for the stream
    /// being published) the live session's segments before its window.
    pub(super) held: Vec<Held>,
    /// The stream's bytes, what may not go included.
    pub(super) total: u64,
    pub(super) retain: Option<Duration>,
    pub(super) retain_bytes: Option<u64>,
}

/// How many of each stream's `held` go (a count per stream, oldest first):
/// first what a stream's own limits let go (older than `retain`, over
/// `retain_bytes`); then, while the data directory still lacks
/// `need_free` bytes, the oldest left across all streams.
pub(super) fn plan(streams: &[Candidates], need_free: u64, now_ms: u64) -> Vec<usize> {
    let mut need = need_free;
    let mut gone = vec![0; streams.len()];
    for (s, n) in streams.iter().zip(&mut gone) {
        let mut total = s.total;
        for h in &s.held {
            let too_old = s
                .retain
                .is_some_and(|r| now_ms.saturating_sub(h.end_ms) > r.as_millis() as u64);
            let too_big = s.retain_bytes.is_some_and(|b| total > b);
            if !(too_old || too_big) {
                break;
            }
            total = total.saturating_sub(h.bytes);
            need = need.saturating_sub(h.bytes);
            *n += 1;
        }
    }
    while need > 0 {
        let oldest = streams
            .iter()
            .zip(&gone)
            .enumerate()
            .filter_map(|(i, (s, n))| s.held.get(*n).map(|h| (h.end_ms, i)))
            .min();
        let Some((_, i)) = oldest else { break };
        need = need.saturating_sub(streams[i].held[gone[i]].bytes);
        gone[i] += 1;
    }
    gone
}

/// What to unpin of what goes: every CID it names that nothing kept
/// names too, once each.
pub(super) fn released(gone: impl IntoIterator<Item = Cid>, kept: &HashSet<Cid>) -> Vec<Cid> {
    let mut out: Vec<Cid> = gone.into_iter().filter(|c| !kept.contains(c)).collect();
    out.sort();
    out.dedup();
    out
}

/// Every CID a session record names: segments, init segments, archive,
/// site.
fn named_by(r: &SessionRecord) -> impl Iterator<Item = Cid> + '_ {
    let media = r
        .playlist
        .segments()
        .iter()
        .flat_map(|s| [Some(s.uri.as_str()), s.init_uri.as_deref()])
        .flatten()
        .filter_map(cid_of);
    let roots = [r.archive_cid.as_deref(), r.site_cid.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(|c| Cid::try_from(c).ok());
    media.chain(roots)
}

/// The CID a playlist URI (`/ipfs/<cid>?filename=...`) names.
fn cid_of(uri: &str) -> Option<Cid> {
    let rest = uri.strip_prefix("/ipfs/")?;
    let end = rest.find(['?', '/']).unwrap_or(rest.len());
    Cid::try_from(&rest[..end]).ok()
}

/// One own stream's candidates and the sessions behind them.
struct Own {
    name: String,
    /// Ids of its past sessions that may go, oldest first (the first
    /// entries of `candidates.held`).
    past: Vec<String>,
    candidates: Candidates,
}

impl Streams {
    /// Bytes the data directory's filesystem lacks to have
    /// `min_free_bytes` free (0 when off or when it cannot tell).
    fn need_free(&self) -> u64 {
        let min = self.inner.live.min_free_bytes;
        if min == 0 {
            return 0;
        }
        match rustix::fs::statvfs(self.inner.repo.dir()) {
            Ok(st) => min.saturating_sub(st.f_bavail.saturating_mul(st.f_frsize)),
            Err(e) => {
                tracing::debug!("statvfs of the data directory: {e}");
                0
            }
        }
    }

    /// Lets go of the oldest media of the node's own streams while one is
    /// over its limits or the disk is low on space (see the module docs).
    /// `name` is the stream being published, `p` its session.
    pub(super) async fn enforce_retention(&self, name: &str, p: &mut Pipeline) {
        let need_free = self.need_free();
        // One stream's task at a time: two would plan on the same sessions.
        let _turn = self.inner.retention.lock().await;
        let mut own: Vec<Own> = {
            let map = self.lock();
            if need_free == 0
                && map
                    .values()
                    .all(|s| s.retain.is_none() && s.retain_bytes.is_none())
            {
                return;
            }
            map.iter()
                .filter(|(_, s)| s.mirror_of.is_none())
                .map(|(n, s)| {
                    let past: Vec<_> = if n == name {
                        s.sessions.iter().filter(|i| i.id != p.record.id).collect()
                    } else {
                        // The latest is what the stream's site names.
                        s.sessions[..s.sessions.len().saturating_sub(1)]
                            .iter()
                            .collect()
                    };
                    let held = past
                        .iter()
                        .map(|i| Held {
                            bytes: i.bytes,
                            end_ms: i.media_end_ms,
                        })
                        .collect();
                    Own {
                        name: n.clone(),
                        past: past.iter().map(|i| i.id.clone()).collect(),
                        candidates: Candidates {
                            held,
                            total: s.sessions.iter().map(|i| i.bytes).sum(),
                            retain: s.retain,
                            retain_bytes: s.retain_bytes,
                        },
                    }
                })
                .collect()
        };
        let playlist = &p.record.playlist;
        let live_start = (playlist.media_sequence() - playlist.trimmed()) as usize;
        let current: u64 = playlist
            .segments()
            .iter()
            .filter(|s| !s.gap)
            .map(|s| s.bytes)
            .sum();
        if let Some(this) = own.iter_mut().find(|o| o.name == name) {
            let past: u64 = this.candidates.held.iter().map(|h| h.bytes).sum();
            // The current session as it is now, not as last listed.
            this.candidates.total = past + current;
            this.candidates
                .held
                .extend(playlist.segments()[..live_start].iter().map(|s| Held {
                    bytes: if s.gap { 0 } else { s.bytes },
                    end_ms: s.program_date_time_ms + s.duration_ms,
                }));
        }
        let candidates: Vec<Candidates> = own.iter().map(|o| o.candidates.clone()).collect();
        let gone = plan(&candidates, need_free, now_ms());
        if gone.iter().all(|n| *n == 0) {
            return;
        }
        let mut released_cids: Vec<Cid> = Vec::new();
        let mut sessions = 0;
        let mut segments = 0;
        let mut freed = 0u64;
        let mut kept_anyway: Vec<Cid> = Vec::new();
        for (o, n) in own.iter().zip(&gone) {
            let whole = (*n).min(o.past.len());
            for id in &o.past[..whole] {
                released_cids.extend(self.drop_session(&o.name, id));
                sessions += 1;
            }
            if o.name != name || *n <= whole {
                continue;
            }
            segments = n - whole;
            let trimmed = p.record.playlist.trim_front(segments);
            let cids: Vec<Cid> = trimmed
                .iter()
                .filter(|s| !s.gap)
                .flat_map(|s| [Some(s.uri.as_str()), s.init_uri.as_deref()])
                .flatten()
                .filter_map(cid_of)
                .collect();
            freed = trimmed.iter().map(|s| s.bytes).sum();
            // The new archive no longer names them; stored before they are
            // unpinned, so what the API names stays whole. If it cannot be
            // stored, the archive the API names is still the old one, which
            // names them: they stay.
            if let Err(e) = self.store_playlists(name, p).await {
                tracing::warn!(stream = %name, "retention: storing the shortened archive: {e}");
                kept_anyway.extend(cids.iter().copied());
            }
            released_cids.extend(cids);
        }
        tracing::info!(
            stream = %name,
            sessions,
            segments,
            segment_bytes = freed,
            low_space = need_free > 0,
            "retention lets old media go"
        );
        let kept_sessions: Vec<(String, Vec<String>)> = {
            let map = self.lock();
            map.iter()
                .filter(|(_, s)| s.mirror_of.is_none())
                .map(|(n, s)| {
                    let ids = s
                        .sessions
                        .iter()
                        .filter(|i| !(n == name && i.id == p.record.id))
                        .map(|i| i.id.clone())
                        .collect();
                    (n.clone(), ids)
                })
                .collect()
        };
        let mut kept: HashSet<Cid> = named_by(&p.record)
            .chain(p.init_uri.as_deref().and_then(cid_of))
            .chain(kept_anyway)
            .collect();
        let repo = self.inner.repo.clone();
        let dir = self.inner.dir.clone();
        let done = tokio::task::spawn_blocking(move || {
            for (stream, ids) in &kept_sessions {
                for id in ids {
                    let path = dir.join(stream).join(format!("{id}.json"));
                    match std::fs::read(&path)
                        .map_err(|e| e.to_string())
                        .and_then(|t| {
                            serde_json::from_slice::<SessionRecord>(&t).map_err(|e| e.to_string())
                        }) {
                        Ok(r) => kept.extend(named_by(&r)),
                        Err(e) => {
                            // Unpinning blind could take what it names.
                            tracing::warn!(
                                path = %path.display(),
                                "retention: reading a kept session: {e}; unpinning nothing this time"
                            );
                            return Ok(None);
                        }
                    }
                }
            }
            for cid in &released(released_cids, &kept) {
                repo.pins.remove(cid)?;
            }
            repo.gc().map(Some)
        })
        .await;
        match done {
            Ok(Ok(Some(report))) => tracing::debug!(
                stream = %name,
                removed = report.removed.len(),
                "retention: collected"
            ),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(stream = %name, "retention: {e}"),
            Err(e) => tracing::warn!(stream = %name, "retention: {e}"),
        }
    }

    /// Removes a past session from the stream (the list, its session
    /// file) and returns what it named: its segments, init segments,
    /// archive and site (what nothing kept names is to be unpinned).
    fn drop_session(&self, name: &str, id: &str) -> Vec<Cid> {
        if let Some(s) = self.lock().get_mut(name) {
            s.sessions.retain(|i| i.id != id);
        }
        let path = self.inner.dir.join(name).join(format!("{id}.json"));
        let record = std::fs::read(&path)
            .ok()
            .and_then(|t| serde_json::from_slice::<SessionRecord>(&t).ok());
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(stream = %name, path = %path.display(), "retention: {e}");
        }
        record
            .as_ref()
            .map_or_else(Vec::new, |r| named_by(r).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Held = Held {
        bytes: 10,
        end_ms: 1_000,
    };

    fn held(end_ms: &[u64]) -> Vec<Held> {
        end_ms.iter().map(|&end_ms| Held { end_ms, ..H }).collect()
    }

    fn one(held: Vec<Held>, total: u64) -> Candidates {
        Candidates {
            held,
            total,
            ..Candidates::default()
        }
    }

    #[test]
    fn nothing_goes_within_the_limits() {
        let s = Candidates {
            retain: Some(Duration::from_secs(60)),
            retain_bytes: Some(100),
            ..one(vec![H, H], 20)
        };
        assert_eq!(plan(std::slice::from_ref(&s), 0, 2_000), [0]);
        assert_eq!(plan(&[Candidates { held: vec![], ..s }], 0, 2_000), [0]);
        assert_eq!(plan(&[], 1_000, 2_000), Vec::<usize>::new());
    }

    #[test]
    fn the_oldest_go_first_until_within_every_limit() {
        let bytes = Candidates {
            retain_bytes: Some(25),
            ..one(vec![H, H, H], 40)
        };
        // 40 bytes, of which 30 may go: two must.
        assert_eq!(plan(&[bytes], 0, 0), [2]);
        let age = Candidates {
            retain: Some(Duration::from_secs(1)),
            ..one(held(&[1_000, 1_000, 5_000]), 30)
        };
        assert_eq!(plan(&[age], 0, 5_500), [2]);
        assert_eq!(plan(&[one(vec![H, H, H], 30)], 15, 0), [2]);
    }

    #[test]
    fn low_space_takes_the_oldest_across_streams() {
        // Three streams' candidates, each oldest first, interleaved in time.
        let a = one(held(&[1_000, 4_000, 7_000]), 40);
        let b = one(held(&[2_000, 3_000]), 30);
        let c = one(held(&[5_000]), 20);
        let streams = [a, b, c];
        // 10 bytes each: a's 1 s, b's 2 s and 3 s, then a's 4 s.
        assert_eq!(plan(&streams, 35, 9_000), [2, 2, 0]);
        assert_eq!(plan(&streams, 10, 9_000), [1, 0, 0]);
        assert_eq!(plan(&streams, 50, 9_000), [2, 2, 1]);
        // However much is lacking, only candidates go: never a stream's
        // latest session or the live window, which are not among them.
        assert_eq!(plan(&streams, u64::MAX, 9_000), [3, 2, 1]);
    }

    #[test]
    fn what_a_stream_lets_go_by_its_own_limits_counts_toward_low_space() {
        let a = one(held(&[5_000, 6_000]), 20);
        let b = Candidates {
            retain_bytes: Some(15),
            ..one(held(&[8_000, 9_000]), 30)
        };
        // b must let its oldest go anyway; that is the 10 bytes lacking,
        // though a's media is older.
        assert_eq!(plan(&[a.clone(), b.clone()], 10, 10_000), [0, 2]);
        assert_eq!(plan(&[a, b], 30, 10_000), [1, 2]);
    }

    #[test]
    fn what_a_kept_session_names_stays_pinned() {
        let cid = |n: u8| Cid::new_v1(crate::store::RAW, crate::store::sha256_multihash(&[n]));
        // Two sessions of the same encoder share their init segment (the
        // same bytes): dropping one must not unpin the other's.
        let (init, seg1, seg2, seg3) = (cid(0), cid(1), cid(2), cid(3));
        let gone = [init, seg1, init, seg2];
        let kept: HashSet<Cid> = [init, seg3].into();
        let mut want = vec![seg1, seg2];
        want.sort();
        assert_eq!(released(gone, &kept), want);
        assert_eq!(released([init], &kept), vec![]);
    }

    #[test]
    fn a_record_names_its_media_archive_and_site() {
        let init = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
        let record: SessionRecord = serde_json::from_value(serde_json::json!({
            "id": "x",
            "started_ms": 0,
            "archive_cid": init,
            "playlist": serde_json::to_value(crate::hls::playlist::Session::new(
                crate::hls::playlist::PlaylistConfig::default()
            ).unwrap()).unwrap(),
        }))
        .unwrap();
        assert_eq!(
            named_by(&record).map(|c| c.to_string()).collect::<Vec<_>>(),
            [init]
        );
    }

    #[test]
    fn playlist_uris_name_their_cids() {
        let cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
        assert_eq!(
            cid_of(&format!("/ipfs/{cid}?filename=000001.m4s")).map(|c| c.to_string()),
            Some(cid.to_owned())
        );
        assert_eq!(cid_of("https://example.com/x"), None);
    }
}
