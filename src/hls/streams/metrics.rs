//! What the publishing stage counts for `GET /metrics`, per stream.
//!
//! ```text
//! publish task: each frame --> ingest frames{stream, track}, ingest bytes{stream}
//!               each segment stored and in the playlists --> segments, duration, ready lag
//! scrape: the streams map --> publishing{stream} (1 while a publisher sends)
//!                              hls_storage_failing{stream} (1 while storing fails)
//!                              hls_segments_dropped{stream} (segments kept as gaps)
//! ```
//!
//! The only label is the stream's name (and a frame's track): streams are
//! the configured ones, those with sessions on disk and the followed ones,
//! so the set is the operator's. A publish task takes its counters once,
//! at its start, so a frame costs two relaxed atomic adds.

use super::Streams;
use crate::media::{Frame, TrackKind};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabel {
    stream: String,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
struct Track(TrackKind);

impl EncodeLabelValue for Track {
    fn encode(&self, e: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(
            e,
            match self.0 {
                TrackKind::Video => "video",
                TrackKind::Audio => "audio",
            },
        )
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrameLabels {
    stream: String,
    track: Track,
}

type Histograms = Family<StreamLabel, Histogram, fn() -> Histogram>;

/// The publishing stage's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    frames: Family<FrameLabels, Counter>,
    bytes: Family<StreamLabel, Counter>,
    segments: Family<StreamLabel, Counter>,
    parts: Family<StreamLabel, Counter>,
    duration: Histograms,
    lag: Histograms,
}

/// One publish's counters, taken once at its start.
#[derive(Debug, Clone)]
pub(super) struct StreamCounters {
    video: Counter,
    audio: Counter,
    bytes: Counter,
    segments: Counter,
    parts: Counter,
    duration: Histogram,
    lag: Histogram,
}

impl StreamCounters {
    /// Counts one ingested frame.
    pub(super) fn frame(&self, f: &Frame) {
        match f.track {
            TrackKind::Video => self.video.inc(),
            TrackKind::Audio => self.audio.inc(),
        };
        self.bytes.inc_by(f.data.len() as u64);
    }

    /// Counts one LL-HLS part in the live playlist.
    pub(super) fn part(&self) {
        self.parts.inc();
    }

    /// Counts one segment in the playlists, `lag_ms` after its last media
    /// instant (its wall-clock start plus its duration).
    pub(super) fn segment(&self, duration_ms: u64, lag_ms: u64) {
        self.segments.inc();
        self.duration.observe(duration_ms as f64 / 1000.0);
        self.lag.observe(lag_ms as f64 / 1000.0);
    }
}

fn durations() -> Histogram {
    // Segments aim at a target of seconds; a cut is late by up to a GOP.
    Histogram::new([0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0])
}

fn lags() -> Histogram {
    // From a muxed segment stored in milliseconds to a slow disk's seconds;
    // the wait for the next keyframe is part of it.
    Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0])
}

impl Metrics {
    /// Registers the ingest (`ingest_`) and segment (`hls_`) metrics in
    /// `registry`, and `stream_publishing`, read from `streams` when
    /// scraped.
    pub fn new(registry: &mut Registry, streams: &Streams) -> Self {
        let m = Self {
            frames: Family::default(),
            bytes: Family::default(),
            segments: Family::default(),
            parts: Family::default(),
            duration: Family::new_with_constructor(durations),
            lag: Family::new_with_constructor(lags),
        };
        let ingest = registry.sub_registry_with_prefix("ingest");
        ingest.register(
            "frames",
            "Frames received from publishers, by stream and track",
            m.frames.clone(),
        );
        ingest.register_with_unit(
            "media",
            "Bytes of media (frame payloads) received from publishers, by stream",
            Unit::Bytes,
            m.bytes.clone(),
        );
        let hls = registry.sub_registry_with_prefix("hls");
        hls.register(
            "segments",
            "Segments cut and stored, by stream",
            m.segments.clone(),
        );
        hls.register(
            "parts",
            "Partial segments (LL-HLS parts) cut, by stream",
            m.parts.clone(),
        );
        hls.register_with_unit(
            "segment_duration",
            "Durations of the segments cut, by stream",
            Unit::Seconds,
            m.duration.clone(),
        );
        hls.register_with_unit(
            "segment_ready_lag",
            "Time from a segment's last media instant to its listing in the live playlist",
            Unit::Seconds,
            m.lag.clone(),
        );
        registry.register_collector(Box::new(Publishing(streams.clone())));
        m
    }

    /// The counters of stream `name` (created at zero, so a stream shows
    /// before its first frame).
    pub(super) fn stream(&self, name: &str) -> StreamCounters {
        let s = StreamLabel {
            stream: name.to_owned(),
        };
        let frames = |kind| {
            self.frames
                .get_or_create(&FrameLabels {
                    stream: name.to_owned(),
                    track: Track(kind),
                })
                .clone()
        };
        StreamCounters {
            video: frames(TrackKind::Video),
            audio: frames(TrackKind::Audio),
            bytes: self.bytes.get_or_create(&s).clone(),
            segments: self.segments.get_or_create(&s).clone(),
            parts: self.parts.get_or_create(&s).clone(),
            duration: self.duration.get_or_create(&s).clone(),
            lag: self.lag.get_or_create(&s).clone(),
        }
    }
}

/// Encodes whether each stream has a publisher now, and how storing its
/// media goes (read from the state the API shows, so the two agree).
#[derive(Debug)]
struct Publishing(Streams);

impl Collector for Publishing {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType;
        let states: Vec<(StreamLabel, bool, bool, u64)> = self
            .0
            .lock()
            .iter()
            .map(|(name, s)| {
                let label = StreamLabel {
                    stream: name.clone(),
                };
                let own = s.mirror_of.is_none();
                (
                    label,
                    s.publishing,
                    own && s.storage.failing,
                    s.storage.segments_dropped,
                )
            })
            .collect();
        let mut family = encoder.encode_descriptor(
            "stream_publishing",
            "Whether the stream has a publisher now (1) or not (0); a mirrored stream while its origin is live",
            None,
            MetricType::Gauge,
        )?;
        for (label, publishing, _, _) in &states {
            ConstGauge::new(i64::from(*publishing)).encode(family.encode_family(label)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "hls_storage_failing",
            "Whether storing the stream's segments or playlists fails now (1: a full disk, say) or works (0)",
            None,
            MetricType::Gauge,
        )?;
        for (label, _, failing, _) in &states {
            ConstGauge::new(i64::from(*failing)).encode(family.encode_family(label)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "hls_segments_dropped",
            "Segments cut but not stored (listed as EXT-X-GAP), by stream, since the node started",
            None,
            MetricType::Counter,
        )?;
        for (label, _, _, dropped) in &states {
            ConstCounter::new(*dropped).encode(family.encode_family(label)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LiveConfig, StreamConfig};
    use crate::store::Repo;

    #[test]
    fn names_and_labels_per_stream() {
        let dir = tempfile::tempdir().unwrap();
        let config = StreamConfig {
            name: "cam".parse().unwrap(),
            key: "camkey-0123456789".into(),
            format: None,
            part_target: None,
            retain: None,
            retain_bytes: None,
        };
        let repo = Repo::open(dir.path()).unwrap();
        let streams = Streams::open(repo, LiveConfig::default(), &[config]).unwrap();
        let mut registry = Registry::with_prefix("meshcast");
        let m = Metrics::new(&mut registry, &streams);
        let c = m.stream("cam");
        let frame = |track, len| Frame {
            track,
            dts_ms: 0,
            composition_ms: 0,
            keyframe: true,
            data: vec![0; len].into(),
        };
        c.frame(&frame(TrackKind::Video, 1000));
        c.frame(&frame(TrackKind::Audio, 10));
        c.segment(2000, 120);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "meshcast_ingest_frames_total{stream=\"cam\",track=\"video\"} 1",
            "meshcast_ingest_frames_total{stream=\"cam\",track=\"audio\"} 1",
            "meshcast_ingest_media_bytes_total{stream=\"cam\"} 1010",
            "meshcast_hls_segments_total{stream=\"cam\"} 1",
            "meshcast_hls_parts_total{stream=\"cam\"} 0",
            "meshcast_hls_segment_duration_seconds_sum{stream=\"cam\"} 2.0",
            "meshcast_hls_segment_duration_seconds_bucket{le=\"2.0\",stream=\"cam\"} 1",
            "meshcast_hls_segment_ready_lag_seconds_count{stream=\"cam\"} 1",
            "meshcast_stream_publishing{stream=\"cam\"} 0",
            "meshcast_hls_storage_failing{stream=\"cam\"} 0",
            "meshcast_hls_segments_dropped_total{stream=\"cam\"} 0",
            "# TYPE meshcast_hls_segments_dropped counter",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn storage_failing_and_dropped_segments_follow_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::open(dir.path()).unwrap();
        let streams = Streams::open(repo, LiveConfig::default(), &[]).unwrap();
        let mut registry = Registry::with_prefix("meshcast");
        Metrics::new(&mut registry, &streams);
        streams.lock().entry("cam".into()).or_default();
        let publisher = streams.lock()["cam"].storage_tx.subscribe();
        let scrape = || {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            text
        };
        let full = crate::hls::streams::StreamsError::Task("No space left on device".into());
        for _ in 0..3 {
            streams.storage_failed("cam", &full, true);
        }
        streams.storage_failed("cam", &full, false);
        let text = scrape();
        assert!(
            text.contains("meshcast_hls_storage_failing{stream=\"cam\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("meshcast_hls_segments_dropped_total{stream=\"cam\"} 3\n"),
            "{text}"
        );
        assert_eq!(
            publisher.borrow().as_deref(),
            Some("background task failed: No space left on device")
        );
        streams.storage_works("cam");
        let text = scrape();
        assert!(
            text.contains("meshcast_hls_storage_failing{stream=\"cam\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("meshcast_hls_segments_dropped_total{stream=\"cam\"} 3\n"),
            "{text}"
        );
        assert_eq!(*publisher.borrow(), None);
        let api = &streams.list()[0].storage;
        assert_eq!(
            (api.failing, api.segments_dropped, api.playlists_failed),
            (false, 3, 1)
        );
    }
}
