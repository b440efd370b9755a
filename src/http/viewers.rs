//! Viewer reports: every player (`player.js`) posts, about every 10 s, how
//! far behind the wall clock it plays (from `EXT-X-PROGRAM-DATE-TIME`), its
//! stalls and errors, and the bytes it loaded by source, to
//! `POST /api/v1/viewers`; the dashboard shows their aggregate.
//!
//! ```text
//! player --JSON (<= 1 KiB)--> [rate limit per address] --> Viewers (latest report per player)
//!                                                              --> Summary (dashboard, every tick)
//! ```
//!
//! Everything a client can grow is bounded: the body size, reports per
//! address (a token bucket), the addresses remembered and the players
//! kept ([`crate::config::DashboardConfig::max_viewers`]); a player that
//! stops reporting is forgotten after [`QUIET`]. Reports are what players
//! say of themselves, so they are shown as such: clamped, never trusted
//! for anything but the picture.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The largest report body taken.
pub const MAX_REPORT_BYTES: usize = 1024;
/// A player not heard from for this long no longer counts as watching.
pub const QUIET: Duration = Duration::from_secs(30);
/// Reports an address may send in a burst.
const BURST: f64 = 50.0;
/// Reports per second an address earns back: enough for 100 players
/// behind one address (a community network's NAT), each every 10 s.
const REFILL_PER_S: f64 = 10.0;
/// Addresses remembered for rate limiting.
const MAX_ADDRESSES: usize = 4096;
/// Players listed one by one on the dashboard (the rest only counted).
const LISTED: usize = 20;

/// What a player reports (its totals since it started).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// A random id the player picked for itself (letters, digits, `-`,
    /// `_`; at most 40).
    pub id: String,
    /// The stream it plays, when it knows.
    #[serde(default)]
    pub stream: Option<String>,
    /// How far behind the wall clock it plays, milliseconds.
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// Times playback stalled.
    #[serde(default)]
    pub stalls: u64,
    /// Milliseconds spent stalled.
    #[serde(default)]
    pub stall_ms: u64,
    /// Errors (fatal or recovered).
    #[serde(default)]
    pub errors: u64,
    /// Bytes loaded from this node's gateway (the page's own origin).
    #[serde(default)]
    pub bytes_local: u64,
    /// Bytes loaded from elsewhere (another gateway).
    #[serde(default)]
    pub bytes_remote: u64,
}

/// Why a report was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The report does not make sense (bad id, or too big).
    #[error("a viewer report needs an id of 1 to 40 letters, digits, '-' or '_'")]
    Invalid,
    /// Too many reports from this address, or too many players.
    #[error("too many viewer reports; report every 10 s")]
    TooMany,
}

/// One player as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Viewer {
    /// The first characters of its id.
    pub id: String,
    /// The stream it plays.
    pub stream: Option<String>,
    /// Its latest latency, milliseconds.
    pub latency_ms: Option<f64>,
    /// Its stalls so far.
    pub stalls: u64,
    /// Its errors so far.
    pub errors: u64,
    /// Seconds since its last report.
    pub age_s: u64,
}

/// The aggregate the dashboard shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Players that reported within [`QUIET`].
    pub count: usize,
    /// Median latency among them, milliseconds.
    pub latency_ms_median: Option<f64>,
    /// The highest latency among them.
    pub latency_ms_max: Option<f64>,
    /// Stalls they reported, summed.
    pub stalls: u64,
    /// Time they spent stalled, summed, milliseconds.
    pub stall_ms: u64,
    /// Errors they reported, summed.
    pub errors: u64,
    /// Bytes they loaded from this node.
    pub bytes_local: u64,
    /// Bytes they loaded from elsewhere.
    pub bytes_remote: u64,
    /// Reports refused (invalid or over a limit) since start.
    pub refused: u64,
    /// The most recently heard players, at most 20.
    pub viewers: Vec<Viewer>,
}

struct Kept {
    report: Report,
    heard: Instant,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What every player reported, summed since start: a report adds what
/// grew since the same player's last one, so these only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Reports taken.
    pub reports: u64,
    /// Reports refused (invalid or over a limit).
    pub refused: u64,
    /// Stalls.
    pub stalls: u64,
    /// Milliseconds stalled.
    pub stall_ms: u64,
    /// Errors.
    pub errors: u64,
    /// Bytes loaded from this node.
    pub bytes_local: u64,
    /// Bytes loaded from elsewhere.
    pub bytes_remote: u64,
}

impl Totals {
    fn add(&mut self, now: &Report, before: Option<&Report>) {
        let grew = |n: u64, b: Option<u64>| n.saturating_sub(b.unwrap_or(0));
        self.reports += 1;
        self.stalls += grew(now.stalls, before.map(|b| b.stalls));
        self.stall_ms += grew(now.stall_ms, before.map(|b| b.stall_ms));
        self.errors += grew(now.errors, before.map(|b| b.errors));
        self.bytes_local += grew(now.bytes_local, before.map(|b| b.bytes_local));
        self.bytes_remote += grew(now.bytes_remote, before.map(|b| b.bytes_remote));
    }
}

struct State {
    viewers: HashMap<String, Kept>,
    addresses: HashMap<IpAddr, Bucket>,
    refused: u64,
    totals: Totals,
}

/// The players' latest reports, bounded.
pub struct Viewers {
    max: usize,
    state: Mutex<State>,
}

impl std::fmt::Debug for Viewers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viewers")
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

fn valid_id(id: &str) -> bool {
    (1..=40).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Viewers {
    /// Keeps the reports of at most `max` players.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            state: Mutex::new(State {
                viewers: HashMap::new(),
                addresses: HashMap::new(),
                refused: 0,
                totals: Totals::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `report` from `from` at `now`.
    pub fn report(&self, from: IpAddr, mut report: Report, now: Instant) -> Result<(), Refused> {
        let mut s = self.lock();
        let r = Self::admit(&mut s, self.max, from, &mut report, now);
        match r {
            Ok(()) => {
                let before = s.viewers.get(&report.id).map(|k| &k.report);
                let mut totals = s.totals;
                totals.add(&report, before);
                s.totals = totals;
                s.viewers
                    .insert(report.id.clone(), Kept { report, heard: now });
            }
            Err(_) => s.refused += 1,
        }
        r
    }

    fn admit(
        s: &mut State,
        max: usize,
        from: IpAddr,
        report: &mut Report,
        now: Instant,
    ) -> Result<(), Refused> {
        if !valid_id(&report.id) {
            return Err(Refused::Invalid);
        }
        if report
            .stream
            .as_deref()
            .is_some_and(|n| !crate::name::StreamName::is_valid(n))
        {
            report.stream = None;
        }
        // A clock far off gives latencies of days: shown as unknown.
        report.latency_ms = report
            .latency_ms
            .filter(|l| l.is_finite() && (-60_000.0..=3_600_000.0).contains(l));
        if s.addresses.len() >= MAX_ADDRESSES && !s.addresses.contains_key(&from) {
            // Forget buckets that are full again: they hold nothing.
            let full = Duration::from_secs_f64(BURST / REFILL_PER_S);
            s.addresses.retain(|_, b| now.duration_since(b.at) < full);
            if s.addresses.len() >= MAX_ADDRESSES {
                return Err(Refused::TooMany);
            }
        }
        let b = s.addresses.entry(from).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        let earned = now.duration_since(b.at).as_secs_f64() * REFILL_PER_S;
        b.tokens = (b.tokens + earned).min(BURST);
        b.at = now;
        if b.tokens < 1.0 {
            return Err(Refused::TooMany);
        }
        b.tokens -= 1.0;
        if !s.viewers.contains_key(&report.id) && s.viewers.len() >= max {
            s.viewers.retain(|_, k| now.duration_since(k.heard) < QUIET);
            if s.viewers.len() >= max {
                return Err(Refused::TooMany);
            }
        }
        Ok(())
    }

    /// The totals since start.
    pub fn totals(&self) -> Totals {
        let s = self.lock();
        Totals {
            refused: s.refused,
            ..s.totals
        }
    }

    /// The players heard within [`QUIET`] of `now`, and the median of
    /// their latencies in milliseconds.
    fn watching(&self, now: Instant) -> (usize, Option<f64>) {
        let s = self.lock();
        let heard = s
            .viewers
            .values()
            .filter(|k| now.duration_since(k.heard) < QUIET);
        let mut latencies: Vec<f64> = heard.clone().filter_map(|k| k.report.latency_ms).collect();
        latencies.sort_by(f64::total_cmp);
        (heard.count(), latencies.get(latencies.len() / 2).copied())
    }

    /// The aggregate of the players heard within [`QUIET`] of `now`;
    /// forgets the others.
    pub fn summary(&self, now: Instant) -> Summary {
        let mut s = self.lock();
        s.viewers.retain(|_, k| now.duration_since(k.heard) < QUIET);
        let mut out = Summary {
            count: s.viewers.len(),
            refused: s.refused,
            ..Summary::default()
        };
        let mut latencies = Vec::new();
        for k in s.viewers.values() {
            let r = &k.report;
            out.stalls += r.stalls;
            out.stall_ms += r.stall_ms;
            out.errors += r.errors;
            out.bytes_local += r.bytes_local;
            out.bytes_remote += r.bytes_remote;
            latencies.extend(r.latency_ms);
        }
        latencies.sort_by(f64::total_cmp);
        out.latency_ms_median = latencies.get(latencies.len() / 2).copied();
        out.latency_ms_max = latencies.last().copied();
        let mut recent: Vec<&Kept> = s.viewers.values().collect();
        recent.sort_by_key(|k| std::cmp::Reverse(k.heard));
        out.viewers = recent
            .into_iter()
            .take(LISTED)
            .map(|k| Viewer {
                id: k.report.id.chars().take(8).collect(),
                stream: k.report.stream.clone(),
                latency_ms: k.report.latency_ms,
                stalls: k.report.stalls,
                errors: k.report.errors,
                age_s: now.duration_since(k.heard).as_secs(),
            })
            .collect();
        out
    }
}

/// The viewer figures as Prometheus metrics, read at each scrape:
/// `meshcast_viewers` (players reporting now),
/// `meshcast_viewer_latency_median_seconds`, and the counters
/// `meshcast_viewer_reports_total`, `meshcast_viewer_reports_refused_total`,
/// `meshcast_viewer_stalls_total`, `meshcast_viewer_stall_seconds_total`,
/// `meshcast_viewer_errors_total` and `meshcast_viewer_loaded_bytes_total`
/// (label `source`: `local` or `remote`). No label carries a player or an
/// address.
#[derive(Debug, Clone)]
pub struct Metrics(pub std::sync::Arc<Viewers>);

impl Metrics {
    /// Adds the viewer metrics to `registry`.
    pub fn register(self, registry: &mut prometheus_client::registry::Registry) {
        registry.register_collector(Box::new(self));
    }
}

impl prometheus_client::collector::Collector for Metrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::registry::Unit;
        let (count, median) = self.0.watching(Instant::now());
        let t = self.0.totals();
        let gauge = ConstGauge::new(count as i64);
        gauge.encode(encoder.encode_descriptor(
            "meshcast_viewers",
            "Players that reported within the last 30 s",
            None,
            gauge.metric_type(),
        )?)?;
        if let Some(ms) = median {
            let gauge = ConstGauge::new(ms / 1000.0);
            gauge.encode(encoder.encode_descriptor(
                "meshcast_viewer_latency_median",
                "Median of how far behind the wall clock reporting players play",
                Some(&Unit::Seconds),
                gauge.metric_type(),
            )?)?;
        }
        for (name, help, value) in [
            ("meshcast_viewer_reports", "Viewer reports taken", t.reports),
            (
                "meshcast_viewer_reports_refused",
                "Viewer reports refused (invalid, or over a limit)",
                t.refused,
            ),
            (
                "meshcast_viewer_stalls",
                "Playback stalls players reported",
                t.stalls,
            ),
            (
                "meshcast_viewer_errors",
                "Playback errors players reported",
                t.errors,
            ),
        ] {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let c = ConstCounter::new(t.stall_ms as f64 / 1000.0);
        c.encode(encoder.encode_descriptor(
            "meshcast_viewer_stall",
            "Time players reported stalled",
            Some(&Unit::Seconds),
            c.metric_type(),
        )?)?;
        let loaded: Family<
            [(&'static str, &'static str); 1],
            prometheus_client::metrics::counter::Counter,
        > = Family::default();
        loaded
            .get_or_create(&[("source", "local")])
            .inc_by(t.bytes_local);
        loaded
            .get_or_create(&[("source", "remote")])
            .inc_by(t.bytes_remote);
        loaded.encode(encoder.encode_descriptor(
            "meshcast_viewer_loaded",
            "Media bytes players reported loading, by source (this node or another gateway)",
            Some(&Unit::Bytes),
            loaded.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, latency: f64, stalls: u64) -> Report {
        Report {
            id: id.into(),
            stream: Some("live".into()),
            latency_ms: Some(latency),
            stalls,
            bytes_local: 1000,
            ..Report::default()
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn reports_are_aggregated_and_quiet_players_forgotten() {
        let v = Viewers::new(10);
        let t = Instant::now();
        v.report(A, report("aaaa", 3000.0, 1), t).unwrap();
        v.report(A, report("bbbb", 5000.0, 0), t).unwrap();
        v.report(A, report("cccc", 4000.0, 2), t + Duration::from_secs(20))
            .unwrap();
        // A player's new report replaces its last.
        v.report(A, report("aaaa", 2000.0, 3), t + Duration::from_secs(10))
            .unwrap();
        let s = v.summary(t + Duration::from_secs(20));
        assert_eq!(s.count, 3);
        assert_eq!((s.stalls, s.bytes_local), (5, 3000));
        assert_eq!(s.latency_ms_median, Some(4000.0));
        assert_eq!(s.latency_ms_max, Some(5000.0));
        assert_eq!(s.viewers[0].id, "cccc");
        let s = v.summary(t + Duration::from_secs(35));
        assert_eq!(s.count, 2, "bbbb went quiet");
        let s = v.summary(t + Duration::from_secs(60));
        assert_eq!(s.count, 0);
    }

    #[test]
    fn limits_hold() {
        let v = Viewers::new(2);
        let t = Instant::now();
        assert_eq!(v.report(A, report("", 1.0, 0), t), Err(Refused::Invalid));
        assert_eq!(v.report(A, report("a b", 1.0, 0), t), Err(Refused::Invalid));
        v.report(A, report("one", 1.0, 0), t).unwrap();
        v.report(A, report("two", 1.0, 0), t).unwrap();
        assert_eq!(
            v.report(A, report("three", 1.0, 0), t),
            Err(Refused::TooMany),
            "at most two players kept"
        );
        // Once a kept player went quiet, a new one takes its place.
        v.report(A, report("two", 1.0, 0), t + QUIET).unwrap();
        v.report(A, report("three", 1.0, 0), t + QUIET).unwrap();
        // One address cannot report without end.
        let b = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));
        let taken = (0..100)
            .filter(|_| v.report(b, report("two", 1.0, 0), t + QUIET).is_ok())
            .count();
        assert_eq!(taken, BURST as usize);
        assert!(v.summary(t + QUIET).refused > 0);
    }

    #[test]
    fn totals_only_grow_and_metrics_encode() {
        let v = std::sync::Arc::new(Viewers::new(10));
        let t = Instant::now();
        v.report(A, report("p", 1500.0, 2), t).unwrap();
        v.report(A, report("p", 2500.0, 3), t).unwrap();
        // A player that restarted counts from zero again: nothing taken back.
        v.report(A, report("p", 2500.0, 1), t).unwrap();
        v.report(A, report("q", 2500.0, 1), t).unwrap();
        let totals = v.totals();
        assert_eq!((totals.reports, totals.stalls), (4, 4));
        let mut registry = prometheus_client::registry::Registry::default();
        Metrics(v).register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "meshcast_viewers 2",
            "meshcast_viewer_latency_median_seconds 2.5",
            "meshcast_viewer_stalls_total 4",
            "meshcast_viewer_reports_total 4",
            "meshcast_viewer_loaded_bytes_total{source=\"local\"} 2000",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn nonsense_is_clamped() {
        let v = Viewers::new(10);
        let t = Instant::now();
        let mut r = report("x", f64::INFINITY, 0);
        r.stream = Some("<script>".into());
        v.report(A, r, t).unwrap();
        let s = v.summary(t);
        assert_eq!(s.latency_ms_median, None);
        assert_eq!(s.viewers[0].stream, None);
    }
}
