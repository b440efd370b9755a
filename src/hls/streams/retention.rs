//! Retention for the node's own streams: what a publishing stream lets go
//! of so that a long-running node never fills its disk.
//!
//! ```text
//! after each segment: limits (retain, retain_bytes) + free space of the data dir (min_free_bytes)
//!     -> plan: oldest past sessions first, then the live session's oldest segments
//!        (never its live window) -> unpin, drop session files, trim the archive's head
//!     -> store_playlists (the new archive pinned, the old one let go) -> repo GC
//! ```
//!
//! The plan is pure ([`plan`]); the rest is the I/O around it. What goes is
//! first removed from what the API and the playlists name, then unpinned,
//! then collected, so that nothing listed is ever missing.

use super::publish::Pipeline;
use super::session::SessionRecord;
use super::{now_ms, Streams};
use cid::Cid;
use std::collections::HashSet;
use std::time::Duration;

/// A stream's limits and the space the data directory lacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Limits {
    pub(super) retain: Option<Duration>,
    pub(super) retain_bytes: Option<u64>,
    /// Bytes to free to get back above the low-space watermark.
    pub(super) need_free: u64,
}

/// Something retention could let go of, oldest first: its bytes and when
/// its media ends (ms since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Held {
    pub(super) bytes: u64,
    pub(super) end_ms: u64,
}

/// How many of `held` (oldest first, the stream's only candidates; `total`
/// the stream's bytes including what may not go) go: while the oldest is
/// older than `retain`, the stream is over `retain_bytes`, or space is
/// still needed.
pub(super) fn plan(held: &[Held], total: u64, limits: Limits, now_ms: u64) -> usize {
    let mut total = total;
    let mut need = limits.need_free;
    let mut n = 0;
    for h in held {
        let too_old = limits
            .retain
            .is_some_and(|r| now_ms.saturating_sub(h.end_ms) > r.as_millis() as u64);
        let too_big = limits.retain_bytes.is_some_and(|b| total > b);
        if !(too_old || too_big || need > 0) {
            break;
        }
        total = total.saturating_sub(h.bytes);
        need = need.saturating_sub(h.bytes);
        n += 1;
    }
    n
}

/// The CID a playlist URI (`/ipfs/<cid>?filename=...`) names.
fn cid_of(uri: &str) -> Option<Cid> {
    let rest = uri.strip_prefix("/ipfs/")?;
    let end = rest.find(['?', '/']).unwrap_or(rest.len());
    Cid::try_from(&rest[..end]).ok()
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

    /// Lets go of the stream's oldest media while it is over its limits
    /// or the disk is low on space (see the module docs). `p` is the
    /// session being published.
    pub(super) async fn enforce_retention(&self, name: &str, p: &mut Pipeline) {
        let (retain, retain_bytes, past) = {
            let map = self.lock();
            let Some(s) = map.get(name) else { return };
            let past: Vec<(String, Held)> = s
                .sessions
                .iter()
                .filter(|i| i.id != p.record.id)
                .map(|i| {
                    let held = Held {
                        bytes: i.bytes,
                        end_ms: i.media_end_ms,
                    };
                    (i.id.clone(), held)
                })
                .collect();
            (s.retain, s.retain_bytes, past)
        };
        let limits = Limits {
            retain,
            retain_bytes,
            need_free: self.need_free(),
        };
        if limits == Limits::default() {
            return;
        }
        let playlist = &p.record.playlist;
        let live_start = (playlist.media_sequence() - playlist.trimmed()) as usize;
        let head: Vec<Held> = playlist.segments()[..live_start]
            .iter()
            .map(|s| Held {
                bytes: if s.gap { 0 } else { s.bytes },
                end_ms: s.program_date_time_ms + s.duration_ms,
            })
            .collect();
        let current: u64 = playlist
            .segments()
            .iter()
            .filter(|s| !s.gap)
            .map(|s| s.bytes)
            .sum();
        let held: Vec<Held> = past.iter().map(|(_, h)| *h).chain(head).collect();
        let total = held.iter().take(past.len()).map(|h| h.bytes).sum::<u64>() + current;
        let n = plan(&held, total, limits, now_ms());
        if n == 0 {
            return;
        }
        let sessions: Vec<String> = past.iter().take(n).map(|(id, _)| id.clone()).collect();
        let segments = n - sessions.len();
        let mut unpin: Vec<Cid> = Vec::new();
        for id in &sessions {
            unpin.extend(self.drop_session(name, id));
        }
        let mut freed = 0u64;
        if segments > 0 {
            let gone = p.record.playlist.trim_front(segments);
            let used: HashSet<Cid> = p
                .record
                .playlist
                .segments()
                .iter()
                .filter_map(|s| s.init_uri.as_deref().and_then(cid_of))
                .chain(p.init_uri.as_deref().and_then(cid_of))
                .collect();
            for s in &gone {
                freed += s.bytes;
                if !s.gap {
                    unpin.extend(cid_of(&s.uri));
                }
                unpin.extend(
                    s.init_uri
                        .as_deref()
                        .and_then(cid_of)
                        .filter(|c| !used.contains(c)),
                );
            }
            // The new archive no longer names them; stored before they are
            // unpinned, so what the API names stays whole. If it cannot be
            // stored, the archive the API names is still the old one, which
            // names them: they stay.
            if let Err(e) = self.store_playlists(name, p).await {
                tracing::warn!(stream = %name, "retention: storing the shortened archive: {e}");
                unpin.retain(|c| !gone.iter().any(|s| cid_of(&s.uri) == Some(*c)));
                unpin.retain(|c| {
                    !gone
                        .iter()
                        .any(|s| s.init_uri.as_deref().and_then(cid_of) == Some(*c))
                });
            }
        }
        tracing::info!(
            stream = %name,
            sessions = sessions.len(),
            segments,
            segment_bytes = freed,
            low_space = limits.need_free > 0,
            "retention lets old media go"
        );
        let repo = self.inner.repo.clone();
        let done = tokio::task::spawn_blocking(move || {
            unpin.sort();
            unpin.dedup();
            for cid in &unpin {
                repo.pins.remove(cid)?;
            }
            repo.gc()
        })
        .await;
        match done {
            Ok(Ok(report)) => tracing::debug!(
                stream = %name,
                removed = report.removed.len(),
                "retention: collected"
            ),
            Ok(Err(e)) => tracing::warn!(stream = %name, "retention: {e}"),
            Err(e) => tracing::warn!(stream = %name, "retention: {e}"),
        }
    }

    /// Removes a past session from the stream (the list, its session
    /// file) and returns what it pinned: its segments, init segments,
    /// archive and site.
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
        let Some(r) = record else {
            return Vec::new();
        };
        let mut cids: Vec<Cid> = r
            .playlist
            .segments()
            .iter()
            .flat_map(|s| [Some(s.uri.as_str()), s.init_uri.as_deref()])
            .flatten()
            .filter_map(cid_of)
            .collect();
        cids.extend(r.archive_cid.as_deref().and_then(|c| Cid::try_from(c).ok()));
        cids.extend(r.site_cid.as_deref().and_then(|c| Cid::try_from(c).ok()));
        cids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Held = Held {
        bytes: 10,
        end_ms: 1_000,
    };

    #[test]
    fn nothing_goes_within_the_limits() {
        let limits = Limits {
            retain: Some(Duration::from_secs(60)),
            retain_bytes: Some(100),
            need_free: 0,
        };
        assert_eq!(plan(&[H, H], 20, limits, 2_000), 0);
        assert_eq!(plan(&[], 200, limits, 2_000), 0);
    }

    #[test]
    fn the_oldest_go_first_until_within_every_limit() {
        let bytes = Limits {
            retain_bytes: Some(25),
            ..Limits::default()
        };
        // 40 bytes, of which 30 may go: two must.
        assert_eq!(plan(&[H, H, H], 40, bytes, 0), 2);
        let age = Limits {
            retain: Some(Duration::from_secs(1)),
            ..Limits::default()
        };
        let newer = Held { end_ms: 5_000, ..H };
        assert_eq!(plan(&[H, H, newer], 30, age, 5_500), 2);
        let space = Limits {
            need_free: 15,
            ..Limits::default()
        };
        assert_eq!(plan(&[H, H, H], 30, space, 0), 2);
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
