//! Low-latency HLS (RFC 8216bis) over a [`Session`]: the parts of the
//! newest segments and the live playlist that lists them, pure.
//!
//! Flow: the publisher records each part as it is stored with
//! [`Parts::push`] (under the media sequence number its segment will
//! have), and each closed segment with [`Session::push`] as for plain HLS;
//! [`Parts::render`] then writes the live playlist with
//! `EXT-X-SERVER-CONTROL`, `EXT-X-PART-INF`, the `EXT-X-PART`s of the last
//! [`KEPT_SEGMENTS`] closed segments and of the open one, and an
//! `EXT-X-PRELOAD-HINT` for the next part; with `skip`, the delta playlist
//! of an `_HLS_skip=YES` request, whose oldest segments are one
//! `EXT-X-SKIP`. [`Parts::position`] is what blocking reloads wait on.
//!
//! Rules kept (RFC 8216bis 4.4.3.7, 4.4.4.9, 4.4.5.2, 6.2.5.1):
//!
//! * `PART-HOLD-BACK` is three part targets (Apple's rule; the RFC's
//!   minimum is two), `CAN-SKIP-UNTIL` six target durations.
//! * Parts are listed only for segments near the end (no more than three
//!   target durations back, as the RFC asks of servers), before their
//!   segment's `EXTINF`; the open segment's parts follow the last segment.
//! * A delta playlist skips the oldest segments that end more than
//!   `CAN-SKIP-UNTIL` before the playlist's end, and says how many.
//! * `EXT-X-VERSION` is 9, which `EXT-X-SKIP` needs.

use std::collections::VecDeque;
use std::fmt::Write as _;

use super::{iso8601_millis, Session};

/// Closed segments whose parts stay listed: with 2 s segments, 6 s back,
/// within the three target durations the RFC allows.
pub const KEPT_SEGMENTS: usize = 3;
/// Most parts kept per segment: a segment the segmenter stretched to its
/// bound with a short part target still fits; beyond, parts are not
/// listed (players fetch the segment).
const MAX_PARTS: usize = 512;

/// One part as the playlist names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartEntry {
    /// Where players fetch it, `/ipfs/<cid>?filename=...`.
    pub uri: String,
    /// Its duration in milliseconds.
    pub duration_ms: u64,
    /// Whether it opens with a keyframe (`INDEPENDENT=YES`).
    pub independent: bool,
}

/// The parts of one segment, open or closed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    msn: u64,
    discontinuity: bool,
    init_uri: Option<String>,
    program_date_time_ms: u64,
    parts: Vec<PartEntry>,
}

/// Where a live playlist stands, for blocking reloads: the media sequence
/// number of the segment being filled and how many of its parts are
/// listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The next segment's media sequence number (one past the last listed).
    pub next_msn: u64,
    /// Parts of that segment listed so far.
    pub parts: u32,
}

impl Position {
    /// Whether a playlist at this position satisfies a blocking reload of
    /// `_HLS_msn=msn` (and `_HLS_part=part`): it lists segment `msn`, or
    /// part `part` of it.
    pub fn reached(&self, msn: u64, part: Option<u32>) -> bool {
        msn < self.next_msn || (msn == self.next_msn && part.is_some_and(|p| p < self.parts))
    }
}

/// The parts of a session's newest segments; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    part_target_ms: u64,
    /// Oldest first; the last may be the open segment.
    groups: VecDeque<Group>,
}

impl Parts {
    /// No parts yet; `part_target_ms` is the `PART-TARGET`.
    pub fn new(part_target_ms: u64) -> Self {
        Self {
            part_target_ms: part_target_ms.max(1),
            groups: VecDeque::with_capacity(KEPT_SEGMENTS + 1),
        }
    }

    /// The part target in milliseconds.
    pub fn part_target_ms(&self) -> u64 {
        self.part_target_ms
    }

    /// Records part `index` of the segment that will have media sequence
    /// number `msn`. Part 0 opens the segment (dropping parts recorded for
    /// an `msn` never closed, as after a refused publish); a part that does
    /// not follow the last is refused (false), and the segment is then
    /// listed without parts.
    pub fn push(
        &mut self,
        msn: u64,
        index: u32,
        discontinuity: bool,
        init_uri: Option<String>,
        program_date_time_ms: u64,
        part: PartEntry,
    ) -> bool {
        if index == 0 {
            self.groups.retain(|g| g.msn < msn);
            self.groups.push_back(Group {
                msn,
                discontinuity,
                init_uri,
                program_date_time_ms,
                parts: vec![part],
            });
            while self.groups.len() > KEPT_SEGMENTS + 1 {
                self.groups.pop_front();
            }
            return true;
        }
        match self.groups.back_mut() {
            Some(g)
                if g.msn == msn && g.parts.len() == index as usize && g.parts.len() < MAX_PARTS =>
            {
                g.parts.push(part);
                true
            }
            _ => {
                self.groups.retain(|g| g.msn != msn);
                false
            }
        }
    }

    /// The parts recorded for segment `msn`, if all of them are.
    pub fn of(&self, msn: u64) -> Option<&[PartEntry]> {
        self.groups
            .iter()
            .find(|g| g.msn == msn)
            .map(|g| g.parts.as_slice())
    }

    /// Where `session`'s live playlist stands.
    pub fn position(&self, session: &Session) -> Position {
        let next_msn = session.next_msn();
        let parts = self
            .groups
            .back()
            .filter(|g| g.msn == next_msn)
            .map_or(0, |g| g.parts.len() as u32);
        Position { next_msn, parts }
    }

    /// The low-latency live playlist of `session`; `hint` gives the URI of
    /// a part not yet made (segment msn, part index), for
    /// `EXT-X-PRELOAD-HINT`. With `skip`, the delta playlist.
    pub fn render(
        &self,
        session: &Session,
        hint: &dyn Fn(u64, u32) -> String,
        skip: bool,
    ) -> String {
        let td = session.target_duration_secs();
        let segments = &session.segments()[session.live_start..];
        let mut out = String::with_capacity(512 + segments.len() * 128);
        let _ = writeln!(out, "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{td}");
        if session.all_independent {
            out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        }
        let skip_until_ms = td * 6000;
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={}.0,PART-HOLD-BACK={}",
            td * 6,
            secs(self.part_target_ms * 3)
        );
        let _ = writeln!(
            out,
            "#EXT-X-PART-INF:PART-TARGET={}",
            secs(self.part_target_ms)
        );
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", session.media_sequence());
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            session.discontinuity_sequence()
        );
        let mut skipped = 0;
        if skip {
            let mut rest: u64 = segments.iter().map(|s| s.duration_ms).sum();
            for s in segments {
                rest -= s.duration_ms;
                if rest < skip_until_ms {
                    break;
                }
                skipped += 1;
            }
            let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }
        let first_msn = session.media_sequence() + skipped as u64;
        let end_ms: u64 = segments.iter().map(|s| s.duration_ms).sum();
        let mut at_ms = segments[..skipped]
            .iter()
            .map(|s| s.duration_ms)
            .sum::<u64>();
        let mut init: Option<&str> = None;
        for (i, seg) in segments[skipped..].iter().enumerate() {
            let msn = first_msn + i as u64;
            tags(
                &mut out,
                i == 0,
                seg.discontinuity,
                seg.init_uri.as_deref(),
                &mut init,
                seg.program_date_time_ms,
            );
            // Parts within three target durations of the end.
            if end_ms - at_ms <= td * 3000 {
                if let Some(parts) = self.of(msn) {
                    write_parts(&mut out, parts);
                }
            }
            at_ms += seg.duration_ms;
            if seg.gap {
                // A segment that could not be stored (RFC 8216bis 4.4.4.7).
                out.push_str("#EXT-X-GAP\n");
            }
            let _ = writeln!(
                out,
                "#EXTINF:{}.{:03},\n{}",
                seg.duration_ms / 1000,
                seg.duration_ms % 1000,
                seg.uri
            );
        }
        if session.is_ended() {
            out.push_str("#EXT-X-ENDLIST\n");
            return out;
        }
        let pos = self.position(session);
        if let Some(open) = self.groups.back().filter(|g| g.msn == pos.next_msn) {
            tags(
                &mut out,
                segments.len() == skipped,
                open.discontinuity,
                open.init_uri.as_deref(),
                &mut init,
                open.program_date_time_ms,
            );
            write_parts(&mut out, &open.parts);
        }
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
            hint(pos.next_msn, pos.parts)
        );
        out
    }
}

/// The tags before a segment (or the open segment's first part).
fn tags<'a>(
    out: &mut String,
    first: bool,
    discontinuity: bool,
    init_uri: Option<&'a str>,
    init: &mut Option<&'a str>,
    program_date_time_ms: u64,
) {
    if discontinuity {
        out.push_str("#EXT-X-DISCONTINUITY\n");
    }
    if let Some(uri) = init_uri {
        if first || discontinuity || *init != Some(uri) {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{uri}\"");
        }
        *init = Some(uri);
    }
    if first || discontinuity {
        let _ = writeln!(
            out,
            "#EXT-X-PROGRAM-DATE-TIME:{}",
            iso8601_millis(program_date_time_ms)
        );
    }
}

fn write_parts(out: &mut String, parts: &[PartEntry]) {
    for p in parts {
        let _ = write!(
            out,
            "#EXT-X-PART:DURATION={},URI=\"{}\"",
            secs(p.duration_ms),
            p.uri
        );
        if p.independent {
            out.push_str(",INDEPENDENT=YES");
        }
        out.push('\n');
    }
}

/// Milliseconds as decimal seconds with three places.
fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

#[cfg(test)]
mod tests;
