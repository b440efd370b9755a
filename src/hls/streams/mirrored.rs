//! A mirror's low-latency copy of a followed stream: the parts and closed
//! segments its origin announced, once the mirror holds them, rendered by
//! the origin's own LL-HLS code into the same kind of [`LlView`], so
//! `http::live` serves blocking reloads and preload hints from it as on
//! the origin.
//!
//! ```text
//! mirror: announced part fetched + pinned --> Streams::mirror_part --> Parts
//!         announced segment fetched + pinned --> Streams::mirror_segment --> Session
//!     --> render_view (as the origin) --> LlView watch --> http::live
//! mirror retention lets a segment go --> Streams::mirror_forget: the copy
//!     drops it (and all before it)
//! ```
//!
//! The copy numbers segments as the origin does (it starts at the media
//! sequence number of the first announcement it sees) and keeps only its
//! live window. An announcement that does not follow on (a new session, a
//! segment missed) starts the copy over there. The IPNS record still
//! drives the site, the archive and the plain live playlist.

use super::lowlatency::{render_view, uri_cid, RECENT_PARTS};
use super::publish::media_uri;
use super::{LlView, Streams};
use crate::hls::playlist::ll::{PartEntry, Parts};
use crate::hls::playlist::{PlaylistConfig, SegmentEntry, Session};
use crate::ipns::announce::Media;
use crate::media::SegmentFormat;
use bytes::Bytes;
use cid::Cid;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::watch;

/// A followed stream's low-latency copy.
pub(super) struct MirrorLl {
    session_id: String,
    session: Session,
    parts: Parts,
    recent: VecDeque<(u64, u32, Bytes)>,
    /// Whether the copy let go of a segment (see [`MirrorLl::backfill`]).
    forgotten: bool,
    /// One view per mirrored stream, kept across sessions, so that held
    /// requests see the next session rather than a closed channel.
    pub(super) view: Arc<watch::Sender<Arc<LlView>>>,
}

impl MirrorLl {
    fn new(media: &Media, window: usize, view: Arc<watch::Sender<Arc<LlView>>>) -> Option<Self> {
        let config = PlaylistConfig {
            format: SegmentFormat::Fmp4,
            target_duration_secs: media.target_duration_secs.max(1),
            live_window: window.max(1),
            ..PlaylistConfig::default()
        };
        Some(Self {
            session_id: media.session.clone(),
            session: Session::starting_at(config, media.msn).ok()?,
            parts: Parts::new(media.part_target_ms),
            recent: VecDeque::with_capacity(RECENT_PARTS),
            forgotten: false,
            view,
        })
    }

    /// Fills the copy's window from the front with the segments of the
    /// origin's plain live playlist (`live_text`, from its site: the
    /// mirror holds them) that come before the copy's first, when they run
    /// on into it and are of its session (`site_session`, the site's): a
    /// mirror that joins, or misses the first announcements while its
    /// subscription forms, serves the same window as the origin, not one
    /// that starts at whatever it heard of first. Never once the copy let
    /// go of a segment (its window slid, or retention let media go): what
    /// went stays gone.
    pub(super) fn backfill(&mut self, live_text: Option<&str>, site_session: Option<&str>) -> bool {
        if self.forgotten
            || self.session.is_ended()
            || site_session != Some(self.session_id.as_str())
        {
            return false;
        }
        let Some((first, entries)) = live_text.and_then(crate::hls::playlist::read_live) else {
            return false;
        };
        let copy_first = self.session.trimmed();
        let before: Vec<SegmentEntry> = entries
            .into_iter()
            .zip(first..)
            .take_while(|(_, msn)| *msn < copy_first)
            .map(|(e, _)| e)
            .collect();
        if before.is_empty() || first + before.len() as u64 != copy_first {
            return false;
        }
        let Ok(mut session) = Session::starting_at(self.session.config().clone(), first) else {
            return false;
        };
        for e in before
            .into_iter()
            .chain(self.session.segments().iter().cloned())
        {
            if session.push(e).is_err() {
                return false;
            }
        }
        let beyond = session.media_sequence() - session.trimmed();
        session.forget_front(beyond as usize);
        self.session = session;
        true
    }

    /// Whether `media` can go on from where the copy is; else the copy
    /// starts over at it.
    fn follows(&self, media: &Media) -> bool {
        media.session == self.session_id
            && media.part_target_ms == self.parts.part_target_ms()
            && media.msn == self.session.next_msn()
            && !self.session.is_ended()
    }

    /// Whether the copy is the one to serve, given the origin's plain live
    /// playlist (`live_text`, from its site): only while it lists that
    /// playlist's newest segment. It does not when announcements stopped
    /// reaching the mirror (the plain playlist is fresher), when it joined
    /// after that segment, or when the mirror's retention let go of media
    /// newer than the plain window (the copy forgot it, and all before).
    pub(super) fn serves(&self, live_text: Option<&str>) -> bool {
        let newest = live_text.and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.starts_with('#') && !l.trim().is_empty())
                .and_then(|l| uri_cid(l.trim()))
        });
        let Some(newest) = newest else {
            return true;
        };
        self.session
            .segments()
            .iter()
            .any(|s| uri_cid(&s.uri) == Some(newest))
    }

    pub(super) fn render(&self, stream: &str) {
        self.view.send_replace(Arc::new(render_view(
            stream,
            &self.session,
            &self.parts,
            &self.recent,
        )));
    }
}

fn init_uri(media: &Media) -> Option<String> {
    media.init.map(|c| media_uri(&c, "init.mp4"))
}

impl Streams {
    /// The copy of a mirrored stream to put `media` in, made or started
    /// over as needed; `None` for a stream not mirrored from `ipns`, or an
    /// announcement older than the copy.
    fn with_copy<R>(
        &self,
        stream: &str,
        ipns: &str,
        media: &Media,
        f: impl FnOnce(&mut MirrorLl) -> R,
    ) -> Option<R> {
        let window = self.inner.live.window;
        let mut map = self.lock();
        let s = map.get_mut(stream)?;
        if s.mirror_of.as_deref() != Some(ipns) {
            return None;
        }
        let stale = s
            .mirror_ll
            .as_ref()
            .is_some_and(|ll| ll.session_id == media.session && media.msn < ll.session.next_msn());
        if stale {
            return None;
        }
        if !s.mirror_ll.as_ref().is_some_and(|ll| ll.follows(media)) {
            let view = match s.mirror_ll.take() {
                Some(old) => old.view,
                None => Arc::new(watch::channel(Arc::new(LlView::empty())).0),
            };
            let mut ll = MirrorLl::new(media, window, view)?;
            let session = s.sessions.last().map(|i| i.id.as_str());
            ll.backfill(s.live_text.as_deref(), session);
            s.mirror_ll = Some(ll);
        }
        let ll = s.mirror_ll.as_mut().expect("set above");
        if ll.session.segments().is_empty() {
            // The origin fixes it with its first segment.
            ll.session
                .set_target_duration_secs(media.target_duration_secs.max(1));
        }
        let r = f(ll);
        s.ll = ll.serves(s.live_text.as_deref()).then(|| ll.view.clone());
        ll.render(stream);
        Some(r)
    }

    /// Lists an announced part the mirror holds (`bytes`), as the origin
    /// listed it. False when it is not taken (not this stream's, old, or
    /// not the next part of its segment).
    pub fn mirror_part(&self, stream: &str, ipns: &str, media: &Media, bytes: Bytes) -> bool {
        let Some(index) = media.part else {
            return false;
        };
        self.with_copy(stream, ipns, media, |ll| {
            let entry = PartEntry {
                uri: media_uri(&media.cid, &format!("{:06}.{index}.m4s", media.msn)),
                duration_ms: media.duration_ms,
                independent: media.independent,
            };
            let listed = ll.parts.push(
                media.msn,
                index,
                media.discontinuity,
                init_uri(media),
                media.program_date_time_ms,
                entry,
            );
            if listed {
                if ll.recent.len() == RECENT_PARTS {
                    ll.recent.pop_front();
                }
                ll.recent.push_back((media.msn, index, bytes));
            }
            listed
        })
        .unwrap_or(false)
    }

    /// Lists an announced segment the mirror holds and pinned (`size`
    /// bytes). False when it is not taken.
    pub fn mirror_segment(&self, stream: &str, ipns: &str, media: &Media, size: u64) -> bool {
        if media.part.is_some() {
            return false;
        }
        let Some(init) = init_uri(media) else {
            return false;
        };
        self.with_copy(stream, ipns, media, |ll| {
            let entry = SegmentEntry {
                uri: media_uri(&media.cid, &format!("{:06}.m4s", media.msn)),
                duration_ms: media.duration_ms,
                discontinuity: media.discontinuity,
                program_date_time_ms: media.program_date_time_ms,
                init_uri: Some(init),
                bytes: size,
                independent: media.independent,
                gap: false,
            };
            let pushed = ll.session.push(entry).is_ok();
            // Only the live window is served: what is before it goes now.
            let before = ll.session.media_sequence() - ll.session.trimmed();
            if before > 0 {
                ll.forgotten = true;
                ll.session.forget_front(before as usize);
            }
            pushed
        })
        .unwrap_or(false)
    }

    /// Drops from a mirrored stream's copy the segments in `gone` (what
    /// the mirror's retention let go), and every segment before the last
    /// of them: the copy never names media the mirror no longer keeps.
    pub fn mirror_forget(&self, stream: &str, gone: &HashSet<Cid>) {
        let mut map = self.lock();
        let Some(s) = map.get_mut(stream) else {
            return;
        };
        let Some(ll) = s.mirror_ll.as_mut() else {
            return;
        };
        let last = ll
            .session
            .segments()
            .iter()
            .rposition(|s| uri_cid(&s.uri).is_some_and(|c| gone.contains(&c)));
        if let Some(i) = last {
            ll.forgotten = true;
            ll.session.forget_front(i + 1);
            ll.render(stream);
            s.ll = ll.serves(s.live_text.as_deref()).then(|| ll.view.clone());
        }
    }

    /// Ends a mirrored stream's copy when its session ended at the origin
    /// (held requests are answered at once).
    pub(super) fn mirror_ll_end(&self, s: &mut super::StreamState, stream: &str, session: &str) {
        if let Some(ll) = s.mirror_ll.as_mut() {
            if ll.session_id == session && !ll.session.is_ended() {
                ll.session.end();
                ll.render(stream);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LiveConfig;
    use crate::store::Repo;

    const IPNS: &str = "k51origin";

    fn cid(i: u64) -> Cid {
        let block = crate::store::Block::new(
            cid::Version::V1,
            crate::store::RAW,
            Bytes::from(i.to_be_bytes().to_vec()),
        );
        block.cid
    }

    fn media(msn: u64, part: Option<u32>) -> Media {
        Media {
            session: "s1".into(),
            msn,
            part,
            cid: cid(msn * 100 + part.map_or(99, u64::from)),
            duration_ms: if part.is_some() { 500 } else { 2000 },
            independent: part.is_none_or(|p| p == 0),
            discontinuity: false,
            program_date_time_ms: 1_764_000_000_000 + msn * 2000,
            init: Some(cid(7)),
            target_duration_secs: 2,
            part_target_ms: 500,
        }
    }

    fn mirrored(live_text: &str) -> super::super::Mirrored {
        super::super::Mirrored {
            ipns: IPNS.into(),
            site: cid(1),
            live: true,
            live_text: live_text.into(),
            archive_text: "#EXTM3U\n".into(),
            session: super::super::SessionInfo {
                id: "s1".into(),
                started: String::new(),
                duration_s: 0.0,
                gap_s: 0.0,
                gaps: 0,
                ended: false,
                archive_cid: None,
                bytes: 0,
                media_end_ms: 0,
            },
        }
    }

    fn streams() -> (tempfile::TempDir, Streams) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::open(dir.path()).unwrap();
        let streams = Streams::open(repo, LiveConfig::default(), &[]).unwrap();
        assert!(streams.set_mirrored("cam", mirrored("#EXTM3U\n")));
        (dir, streams)
    }

    #[tokio::test]
    async fn the_copy_is_served_while_it_lists_the_plain_playlists_newest() {
        let (_d, s) = streams();
        feed(&s, 10, 3);
        let plain = |c: Cid| {
            format!("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:9\n#EXTINF:2.000,\n/ipfs/{c}?filename=a.m4s\n")
        };
        // The origin's site names a segment the copy never got.
        assert!(s.set_mirrored("cam", mirrored(&plain(cid(1399)))));
        assert!(s.ll_view("cam").is_none());
        // The copy catches up.
        feed(&s, 13, 1);
        assert!(s.ll_view("cam").is_some());
        assert!(s.set_mirrored("cam", mirrored(&plain(cid(1199)))));
        assert!(s.ll_view("cam").is_some());
        // Retention let the newest go: the plain playlist is served.
        s.mirror_forget("cam", &HashSet::from([cid(1399)]));
        assert!(s.ll_view("cam").is_none());
    }

    /// Segments `from..from + n`, four parts each, all announced.
    fn feed(s: &Streams, from: u64, n: u64) {
        for msn in from..from + n {
            for p in 0..4 {
                assert!(s.mirror_part("cam", IPNS, &media(msn, Some(p)), Bytes::new()));
            }
            assert!(s.mirror_segment("cam", IPNS, &media(msn, None), 4000));
        }
    }

    #[tokio::test]
    async fn the_copy_lists_parts_and_segments_as_the_origin_numbers_them() {
        let (_d, s) = streams();
        feed(&s, 10, 3);
        assert!(s.mirror_part("cam", IPNS, &media(13, Some(0)), Bytes::from_static(b"p")));
        let view = s.ll_view("cam").unwrap().borrow().clone();
        assert_eq!((view.position.next_msn, view.position.parts), (13, 1));
        assert!(
            view.text.contains("#EXT-X-MEDIA-SEQUENCE:10\n"),
            "{}",
            view.text
        );
        assert!(
            view.text.contains("#EXT-X-PART:DURATION=0.5"),
            "{}",
            view.text
        );
        assert!(
            view.text
                .contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"/live/cam/parts/13.1.m4s\""),
            "{}",
            view.text
        );
        assert!(view
            .text
            .contains(&format!("/ipfs/{}?filename=000012.m4s", cid(1299))));
        assert_eq!(view.recent.back().map(|r| (r.0, r.1)), Some((13, 0)));
        // Another stream's name or an old part change nothing.
        assert!(!s.mirror_part("cam", "k51other", &media(13, Some(1)), Bytes::new()));
        assert!(!s.mirror_part("cam", IPNS, &media(12, Some(1)), Bytes::new()));
        assert!(!s.mirror_segment("cam", IPNS, &media(12, None), 1));
        assert_eq!(s.ll_view("cam").unwrap().borrow().position.parts, 1);
    }

    /// The origin's plain live playlist listing segments `from..to` as
    /// [`feed`] would have them.
    fn plain_window(from: u64, to: u64) -> String {
        let mut text = format!(
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{from}\n\
             #EXT-X-MAP:URI=\"/ipfs/{}?filename=init.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:{}\n",
            cid(7),
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_millis(1_764_000_000_000 + from * 2000)
            )
        );
        for msn in from..to {
            text += &format!(
                "#EXTINF:2.000,\n/ipfs/{}?filename={msn:06}.m4s\n",
                cid(msn * 100 + 99)
            );
        }
        text
    }

    #[tokio::test]
    async fn a_copy_that_joined_late_is_filled_from_the_plain_window() {
        let (_d, s) = streams();
        // The first announcements were missed: the copy starts at 12.
        feed(&s, 12, 2);
        assert!(s.set_mirrored("cam", mirrored(&plain_window(9, 14))));
        let text = s.ll_view("cam").unwrap().borrow().text.clone();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:9\n"), "{text}");
        for msn in 9..14 {
            assert!(
                text.contains(&cid(msn * 100 + 99).to_string()),
                "{msn}: {text}"
            );
        }
        // What a copy let go is not filled in again.
        let (_d, s) = streams();
        feed(&s, 12, 2);
        s.mirror_forget("cam", &HashSet::from([cid(1299)]));
        assert!(s.set_mirrored("cam", mirrored(&plain_window(9, 14))));
        let text = s.lock()["cam"].mirror_ll.as_ref().unwrap().session.live();
        assert!(!text.contains(&cid(1199).to_string()), "{text}");
        // Nor from a window that does not run on into the copy, or
        // another session's.
        let (_d, s) = streams();
        feed(&s, 12, 2);
        assert!(s.set_mirrored("cam", mirrored(&plain_window(9, 11))));
        let mut other = mirrored(&plain_window(9, 14));
        other.session.id = "s0".into();
        assert!(s.set_mirrored("cam", other));
        let text = s.lock()["cam"].mirror_ll.as_ref().unwrap().session.live();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:12\n"), "{text}");
    }

    #[tokio::test]
    async fn the_copy_drops_what_retention_let_go_and_starts_over_on_a_gap() {
        let (_d, s) = streams();
        feed(&s, 10, 4);
        s.mirror_forget("cam", &HashSet::from([cid(1199)]));
        let text = s.ll_view("cam").unwrap().borrow().text.clone();
        for gone in [1099, 1199] {
            assert!(!text.contains(&cid(gone).to_string()), "{text}");
        }
        assert!(text.contains(&cid(1299).to_string()), "{text}");
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:12\n"), "{text}");
        // Segment 14 missed: the copy starts over at 15.
        feed(&s, 15, 1);
        let view = s.ll_view("cam").unwrap().borrow().clone();
        assert_eq!(view.position.next_msn, 16);
        assert!(!view.text.contains(&cid(1399).to_string()), "{}", view.text);
        // The session ends at the origin: held requests are let go.
        let mut map = s.lock();
        let state = map.get_mut("cam").unwrap();
        s.mirror_ll_end(state, "cam", "s1");
        drop(map);
        let view = s.ll_view("cam").unwrap().borrow().clone();
        assert!(view.ended && view.text.ends_with("#EXT-X-ENDLIST\n"));
    }
}
