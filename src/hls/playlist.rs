//! HLS media playlists for one publishing session (RFC 8216), pure: segment
//! entries in, playlist text out.
//!
//! Flow: [`Session::push`] records each finished segment as a
//! [`SegmentEntry`] (its URI, duration, discontinuity, program date-time,
//! init segment and size); [`Session::live`] renders the live playlist, a
//! sliding window over the newest segments, and [`Session::archive`] the
//! archive playlist, an `EVENT` playlist of every segment that becomes a VOD
//! once [`Session::end`] adds `#EXT-X-ENDLIST` (or, once retention removed
//! its oldest segments with [`Session::trim_front`], a window that starts
//! later). A session serializes to JSON
//! (serde) so the stream manager can persist it and restore archives after a
//! restart; restoring checks it like pushing does.
//!
//! Rules kept (RFC 8216):
//!
//! * `#EXT-X-TARGETDURATION` must be at least every rounded `#EXTINF` and
//!   must not change (section 6.2.1). It is the configured
//!   [`PlaylistConfig::target_duration_secs`], which the caller may set
//!   with [`Session::set_target_duration_secs`] until the first segment
//!   (to the segmenter's, see
//!   [`crate::media::segmenter::Segmenter::target_duration_secs`]), or
//!   the largest rounded duration of any segment of the session if one ever
//!   exceeds it. Over the whole session, not the window, so it never
//!   decreases between reloads.
//! * The live window holds at least [`PlaylistConfig::live_window`]
//!   segments, and never drops a segment while the rest would last less
//!   than three target durations (section 6.2.2). It only slides forward.
//! * `#EXT-X-MEDIA-SEQUENCE` is the window's first segment number and
//!   `#EXT-X-DISCONTINUITY-SEQUENCE` the number of discontinuities that
//!   slid out of the window (section 6.2.2).
//! * `#EXT-X-MAP` (fMP4) opens the playlist and follows every
//!   discontinuity and every change of init segment; `#EXT-X-PROGRAM-DATE-TIME`
//!   opens the playlist and follows every discontinuity, as players
//!   re-anchor the wall clock there.
//! * `#EXT-X-INDEPENDENT-SEGMENTS` appears while every segment of the
//!   session starts with a keyframe.
//! * A segment cut but not stored (a full disk) keeps its place and time
//!   as `#EXT-X-GAP` (RFC 8216bis 4.4.4.7), so the timeline after it stays
//!   continuous and players skip the hole instead of stalling on it.
//! * `#EXT-X-VERSION` is 7 for fMP4 (`EXT-X-MAP` needs 6 or more) and 3 for
//!   MPEG-TS (decimal `EXTINF` needs 3).
//!
//! Rendered by hand rather than with `m3u8-rs`'s writer, which formats
//! durations from `f32` and dates as `+00:00` offsets with variable
//! precision; here `EXTINF` is exactly the millisecond duration with three
//! decimals and dates are ISO 8601 UTC with milliseconds and `Z`. The tests
//! parse the output back with `m3u8-rs` and play it with ffmpeg.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::media::segmenter::SegmentReady;
use crate::media::SegmentFormat;

/// The last millisecond that renders as an ISO 8601 date (year 9999).
const MAX_DATE_MS: u64 = 253_402_300_800_000 - 1;

/// The `#EXT-X-VERSION` a playlist of segments in `format` needs: 7 for
/// `EXT-X-MAP` in fMP4, 3 for plain MPEG-TS.
fn hls_version(format: SegmentFormat) -> u8 {
    match format {
        SegmentFormat::Fmp4 => 7,
        SegmentFormat::Ts => 3,
    }
}

/// One segment of a session, as the playlists name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentEntry {
    /// Where players fetch it, e.g. `/ipfs/<cid>`.
    pub uri: String,
    /// Its duration in milliseconds, from media timestamps.
    pub duration_ms: u64,
    /// Whether a discontinuity precedes it.
    pub discontinuity: bool,
    /// Wall-clock time of its start, in milliseconds since the Unix epoch.
    pub program_date_time_ms: u64,
    /// The init segment its run needs (fMP4); `None` for MPEG-TS.
    pub init_uri: Option<String>,
    /// Its size in bytes.
    pub bytes: u64,
    /// Whether it starts with a keyframe.
    pub independent: bool,
    /// A segment that was cut but could not be stored (the disk was
    /// full): `#EXT-X-GAP`, so players skip its time instead of loading it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gap: bool,
}

impl SegmentEntry {
    /// The entry for a segment from the segmenter, once muxed and stored.
    pub fn new(segment: &SegmentReady, uri: String, init_uri: Option<String>, bytes: u64) -> Self {
        Self {
            uri,
            duration_ms: segment.duration_ms,
            discontinuity: segment.discontinuity,
            program_date_time_ms: segment.program_date_time_ms,
            init_uri,
            bytes,
            independent: segment.independent,
            gap: false,
        }
    }

    /// The entry marking `segment`'s time as a gap: it was cut but not
    /// stored. `uri` is still required (RFC 8216bis 4.4.4.7); players do
    /// not load it.
    pub fn gap(segment: &SegmentReady, uri: String, init_uri: Option<String>) -> Self {
        Self {
            uri,
            duration_ms: segment.duration_ms,
            discontinuity: segment.discontinuity,
            program_date_time_ms: segment.program_date_time_ms,
            init_uri,
            bytes: 0,
            independent: true,
            gap: true,
        }
    }
}

/// How a session's playlists are made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaylistConfig {
    /// The segments' container.
    pub format: SegmentFormat,
    /// The `#EXT-X-TARGETDURATION` in seconds: the segmenter's bound on
    /// segment durations, so that it never has to change.
    pub target_duration_secs: u64,
    /// The fewest segments the live playlist shows (more while they last
    /// less than three target durations).
    pub live_window: usize,
    /// The most segments a session records; end it and start another to go
    /// on. Bounds memory and the archive playlist's size.
    pub max_segments: usize,
}

impl Default for PlaylistConfig {
    fn default() -> Self {
        Self {
            format: SegmentFormat::Fmp4,
            target_duration_secs: 6,
            live_window: 6,
            // 55 hours of 2 s segments.
            max_segments: 100_000,
        }
    }
}

/// Why a segment or a session was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlaylistError {
    /// A configuration value is out of range.
    #[error("playlist config: {0}")]
    BadConfig(&'static str),
    /// The session has ended.
    #[error("the session has ended; start a new session for new segments")]
    Ended,
    /// The session holds its maximum number of segments.
    #[error("the session is full at {max} segments; end it and start a new one")]
    Full {
        /// The configured maximum.
        max: usize,
    },
    /// An fMP4 segment without an init segment.
    #[error("fMP4 segment {uri} has no init segment URI; EXT-X-MAP needs one")]
    MissingInit {
        /// The segment's URI.
        uri: String,
    },
    /// An MPEG-TS segment with an init segment.
    #[error("MPEG-TS segment {uri} has an init segment URI; TS segments take none")]
    UnexpectedInit {
        /// The segment's URI.
        uri: String,
    },
    /// A URI that cannot be written into a playlist.
    #[error(
        "URI {uri:?} cannot go in a playlist: it must be non-empty, not start with '#', \
         and have no control characters or double quotes"
    )]
    BadUri {
        /// The URI.
        uri: String,
    },
    /// A program date-time past what ISO 8601 dates can show.
    #[error("program date-time {ms} ms after the epoch is past the year 9999; check the clock")]
    DateOutOfRange {
        /// The value.
        ms: u64,
    },
    /// A restored session whose window is not within its segments.
    #[error("restored session's live window starts at segment {start} of {len}")]
    BadWindow {
        /// The stored window start.
        start: usize,
        /// The number of segments.
        len: usize,
    },
}

/// The playlists of one publishing session; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SessionRepr")]
pub struct Session {
    config: PlaylistConfig,
    segments: Vec<SegmentEntry>,
    ended: bool,
    /// Index of the live window's first segment; only grows (but for
    /// what [`Session::trim_front`] removes).
    live_start: usize,
    /// Segments retention removed from the head, and the discontinuities
    /// among them: the archive's media and discontinuity sequences.
    #[serde(default, skip_serializing_if = "is_zero")]
    trimmed: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    trimmed_discontinuities: u64,
    /// Largest rounded duration of any segment, in seconds.
    #[serde(skip)]
    max_rounded_secs: u64,
    #[serde(skip)]
    all_independent: bool,
}

/// What a session stores; restored through [`Session::push`] so a restored
/// session is checked like a live one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionRepr {
    config: PlaylistConfig,
    segments: Vec<SegmentEntry>,
    ended: bool,
    live_start: usize,
    #[serde(default)]
    trimmed: u64,
    #[serde(default)]
    trimmed_discontinuities: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TryFrom<SessionRepr> for Session {
    type Error = PlaylistError;

    fn try_from(repr: SessionRepr) -> Result<Self, Self::Error> {
        let mut session = Session::new(repr.config)?;
        let len = repr.segments.len();
        if len > session.config.max_segments {
            return Err(PlaylistError::Full {
                max: session.config.max_segments,
            });
        }
        session.segments.reserve(len);
        for entry in repr.segments {
            session.push(entry)?;
        }
        // A window that once slid further (if the target duration grew)
        // stays where it was: it must never move back.
        if repr.live_start > len.saturating_sub(1) {
            return Err(PlaylistError::BadWindow {
                start: repr.live_start,
                len,
            });
        }
        session.live_start = session.live_start.max(repr.live_start);
        session.ended = repr.ended;
        session.trimmed = repr.trimmed;
        session.trimmed_discontinuities = repr.trimmed_discontinuities;
        Ok(session)
    }
}

impl Session {
    /// An empty session.
    pub fn new(config: PlaylistConfig) -> Result<Self, PlaylistError> {
        if config.target_duration_secs == 0 {
            return Err(PlaylistError::BadConfig(
                "target_duration_secs must be at least 1",
            ));
        }
        if config.live_window == 0 {
            return Err(PlaylistError::BadConfig("live_window must be at least 1"));
        }
        if config.max_segments == 0 {
            return Err(PlaylistError::BadConfig("max_segments must be at least 1"));
        }
        Ok(Self {
            config,
            segments: Vec::new(),
            ended: false,
            live_start: 0,
            trimmed: 0,
            trimmed_discontinuities: 0,
            max_rounded_secs: 0,
            all_independent: true,
        })
    }

    /// Records the next segment; returns its media sequence number.
    pub fn push(&mut self, entry: SegmentEntry) -> Result<u64, PlaylistError> {
        if self.ended {
            return Err(PlaylistError::Ended);
        }
        if self.segments.len() >= self.config.max_segments {
            return Err(PlaylistError::Full {
                max: self.config.max_segments,
            });
        }
        check_uri(&entry.uri)?;
        match (self.config.format, &entry.init_uri) {
            (SegmentFormat::Fmp4, None) => {
                return Err(PlaylistError::MissingInit { uri: entry.uri });
            }
            (SegmentFormat::Ts, Some(_)) => {
                return Err(PlaylistError::UnexpectedInit { uri: entry.uri });
            }
            (SegmentFormat::Fmp4, Some(init)) => check_uri(init)?,
            (SegmentFormat::Ts, None) => {}
        }
        if entry.program_date_time_ms > MAX_DATE_MS {
            return Err(PlaylistError::DateOutOfRange {
                ms: entry.program_date_time_ms,
            });
        }
        self.max_rounded_secs = self.max_rounded_secs.max(rounded_secs(entry.duration_ms));
        self.all_independent &= entry.independent;
        self.segments.push(entry);
        self.slide_window();
        Ok(self.segments.len() as u64 - 1)
    }

    /// Ends the session (unpublish): the playlists get `#EXT-X-ENDLIST`.
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// Whether the session has ended.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The configuration.
    pub fn config(&self) -> &PlaylistConfig {
        &self.config
    }

    /// Every segment of the session, oldest first.
    pub fn segments(&self) -> &[SegmentEntry] {
        &self.segments
    }

    /// Sets the `#EXT-X-TARGETDURATION` before the first segment; once a
    /// playlist was rendered with segments it must not change, so later
    /// calls change nothing and return false.
    pub fn set_target_duration_secs(&mut self, secs: u64) -> bool {
        if !self.segments.is_empty() || secs == 0 {
            return false;
        }
        self.config.target_duration_secs = secs;
        true
    }

    /// The `#EXT-X-TARGETDURATION` in seconds (see the module docs).
    pub fn target_duration_secs(&self) -> u64 {
        self.config.target_duration_secs.max(self.max_rounded_secs)
    }

    /// The live playlist's `#EXT-X-MEDIA-SEQUENCE`.
    pub fn media_sequence(&self) -> u64 {
        self.trimmed + self.live_start as u64
    }

    /// The live playlist's `#EXT-X-DISCONTINUITY-SEQUENCE`: discontinuities
    /// before the window.
    pub fn discontinuity_sequence(&self) -> u64 {
        self.trimmed_discontinuities
            + self.segments[..self.live_start]
                .iter()
                .filter(|s| s.discontinuity)
                .count() as u64
    }

    /// Segments removed from the head by [`Session::trim_front`].
    pub fn trimmed(&self) -> u64 {
        self.trimmed
    }

    /// Removes up to `n` of the oldest segments (retention lets them go),
    /// never one of the live window; returns them. The archive then starts
    /// later: it is no longer an `EVENT` playlist (those only grow) but a
    /// window whose media and discontinuity sequences count what went.
    pub fn trim_front(&mut self, n: usize) -> Vec<SegmentEntry> {
        let n = n.min(self.live_start);
        let gone: Vec<SegmentEntry> = self.segments.drain(..n).collect();
        self.live_start -= n;
        self.trimmed += n as u64;
        self.trimmed_discontinuities += gone.iter().filter(|s| s.discontinuity).count() as u64;
        gone
    }

    /// The media sequence number the next segment gets.
    pub fn next_msn(&self) -> u64 {
        self.trimmed + self.segments.len() as u64
    }

    /// An empty session whose first segment will have media sequence
    /// number `msn`: a mirror's copy of a session it joined late.
    pub fn starting_at(config: PlaylistConfig, msn: u64) -> Result<Self, PlaylistError> {
        let mut s = Self::new(config)?;
        s.trimmed = msn;
        Ok(s)
    }

    /// Removes the `n` oldest segments, of the live window too, and
    /// returns them: a mirror's copy lets go of what the mirror's
    /// retention let go (an origin's archive uses
    /// [`Session::trim_front`], which keeps the window).
    pub fn forget_front(&mut self, n: usize) -> Vec<SegmentEntry> {
        let n = n.min(self.segments.len());
        let gone: Vec<SegmentEntry> = self.segments.drain(..n).collect();
        self.live_start = self.live_start.saturating_sub(n);
        self.trimmed += n as u64;
        self.trimmed_discontinuities += gone.iter().filter(|s| s.discontinuity).count() as u64;
        gone
    }

    /// The live playlist: the window of newest segments.
    pub fn live(&self) -> String {
        let mut out = self.header();
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence());
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            self.discontinuity_sequence()
        );
        self.body(&mut out, &self.segments[self.live_start..]);
        out
    }

    /// The archive playlist: every segment, an `EVENT` playlist until the
    /// session ends.
    pub fn archive(&self) -> String {
        let mut out = self.header();
        if self.trimmed == 0 {
            out.push_str("#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-MEDIA-SEQUENCE:0\n");
        } else {
            let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.trimmed);
            let _ = writeln!(
                out,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.trimmed_discontinuities
            );
        }
        self.body(&mut out, &self.segments);
        out
    }

    fn header(&self) -> String {
        let mut out = String::with_capacity(256);
        let _ = writeln!(out, "#EXTM3U");
        let _ = writeln!(out, "#EXT-X-VERSION:{}", hls_version(self.config.format));
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration_secs());
        if self.all_independent {
            out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        }
        out
    }

    fn body(&self, out: &mut String, segments: &[SegmentEntry]) {
        out.reserve(segments.len() * 96);
        let mut init: Option<&str> = None;
        for (i, seg) in segments.iter().enumerate() {
            let first = i == 0;
            if seg.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if let Some(uri) = seg.init_uri.as_deref() {
                if first || seg.discontinuity || init != Some(uri) {
                    let _ = writeln!(out, "#EXT-X-MAP:URI=\"{uri}\"");
                }
                init = Some(uri);
            }
            if first || seg.discontinuity {
                let _ = writeln!(
                    out,
                    "#EXT-X-PROGRAM-DATE-TIME:{}",
                    iso8601_millis(seg.program_date_time_ms)
                );
            }
            if seg.gap {
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
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
    }

    /// Moves the live window's start as far forward as the rules allow.
    fn slide_window(&mut self) {
        let len = self.segments.len();
        let mut start = len
            .saturating_sub(self.config.live_window)
            .max(self.live_start);
        let min_ms = self.target_duration_secs().saturating_mul(3000);
        let mut window_ms: u64 = self.segments[start..].iter().map(|s| s.duration_ms).sum();
        // RFC 8216 6.2.2: a segment stays while the rest lasts less than
        // three target durations.
        while start > self.live_start && window_ms < min_ms {
            start -= 1;
            window_ms += self.segments[start].duration_ms;
        }
        self.live_start = start;
    }
}

/// A duration rounded to the nearest second, halves up, as players compare
/// it with the target duration.
fn rounded_secs(ms: u64) -> u64 {
    ms.saturating_add(500) / 1000
}

fn check_uri(uri: &str) -> Result<(), PlaylistError> {
    let bad =
        uri.is_empty() || uri.starts_with('#') || uri.chars().any(|c| c.is_control() || c == '"');
    if bad {
        return Err(PlaylistError::BadUri {
            uri: uri.to_owned(),
        });
    }
    Ok(())
}

/// `2024-05-06T07:08:09.123Z`.
fn iso8601_millis(ms: u64) -> String {
    // `push` keeps dates within humantime's range (before the year 10000).
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.min(MAX_DATE_MS)))
        .to_string()
}

pub mod ll;

/// Reads back a live playlist that [`Session::live`] rendered (a mirror
/// has its origin's, from the site): its first media sequence number and
/// its segments. `bytes` is unknown there (0), and a segment counts as
/// independent only when the playlist says all are. `None` for text that
/// is not such a playlist.
pub fn read_live(text: &str) -> Option<(u64, Vec<SegmentEntry>)> {
    let mut first = None;
    let mut all_independent = false;
    let mut init: Option<String> = None;
    let (mut discontinuity, mut gap) = (false, false);
    let mut duration_ms = None;
    let mut next_pdt: Option<u64> = None;
    let mut segments = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(n) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            first = Some(n.parse().ok()?);
        } else if line == "#EXT-X-INDEPENDENT-SEGMENTS" {
            all_independent = true;
        } else if line == "#EXT-X-DISCONTINUITY" {
            discontinuity = true;
        } else if line == "#EXT-X-GAP" {
            gap = true;
        } else if let Some(map) = line.strip_prefix("#EXT-X-MAP:URI=") {
            init = Some(map.trim_matches('"').to_owned());
        } else if let Some(date) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            let at = humantime::parse_rfc3339(date).ok()?;
            let ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
            next_pdt = Some(u64::try_from(ms).ok()?);
        } else if let Some(d) = line.strip_prefix("#EXTINF:") {
            let secs: f64 = d.split(',').next()?.parse().ok()?;
            if !(0.0..=86_400.0).contains(&secs) {
                return None;
            }
            duration_ms = Some((secs * 1000.0).round() as u64);
        } else if !line.starts_with('#') {
            let duration_ms = duration_ms.take()?;
            let program_date_time_ms = next_pdt?;
            next_pdt = Some(program_date_time_ms + duration_ms);
            segments.push(SegmentEntry {
                uri: line.to_owned(),
                duration_ms,
                discontinuity: std::mem::take(&mut discontinuity),
                program_date_time_ms,
                init_uri: init.clone(),
                bytes: 0,
                independent: all_independent,
                gap: std::mem::take(&mut gap),
            });
        }
    }
    Some((first?, segments))
}

#[cfg(test)]
mod tests;
