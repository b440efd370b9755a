//! The mesh numbers as Prometheus metrics, labelled by link kind only (never
//! a peer's key or address: those would grow without bound).
//!
//! The daemons report per-link byte counts that restart when a link does, so
//! the counters here add each link's growth since the previous poll (a count
//! that went down is a restarted link, whose whole count is new), and so
//! only ever grow.

use super::{Link, LinkKind, Snapshot};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::AtomicU64;

impl EncodeLabelValue for LinkKind {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// The one label: which kind of mesh.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KindLabel {
    kind: LinkKind,
}

/// The metric families, shared with the registry they are registered in.
#[derive(Debug, Clone, Default)]
pub(super) struct Metrics {
    daemon_up: Family<KindLabel, Gauge>,
    links: Family<KindLabel, Gauge>,
    peers: Family<KindLabel, Gauge>,
    received: Family<KindLabel, Counter>,
    sent: Family<KindLabel, Counter>,
    lost: Family<KindLabel, Counter>,
    loss: Family<KindLabel, Gauge<f64, AtomicU64>>,
    latency: Family<KindLabel, Gauge<f64, AtomicU64>>,
}

impl Metrics {
    /// Registers the families in `registry` as `mesh_*` (under the
    /// registry's prefix: `meshcast_mesh_*` in the node's).
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "mesh_daemon_up",
            "Whether the mesh daemon's admin interface answers (1) or not (0)",
            self.daemon_up.clone(),
        );
        registry.register(
            "mesh_links",
            "Mesh links (peerings) of the daemon that are up",
            self.links.clone(),
        );
        registry.register(
            "mesh_peers",
            "Connected libp2p peers reached through a mesh link",
            self.peers.clone(),
        );
        registry.register_with_unit(
            "mesh_received",
            "Bytes received over the daemon's mesh links",
            Unit::Bytes,
            self.received.clone(),
        );
        registry.register_with_unit(
            "mesh_sent",
            "Bytes sent over the daemon's mesh links",
            Unit::Bytes,
            self.sent.clone(),
        );
        registry.register(
            "mesh_lost_packets",
            "Packets lost on the daemon's mesh links (cjdns counts them)",
            self.lost.clone(),
        );
        registry.register(
            "mesh_link_loss_ratio",
            "The highest packet loss of one mesh link, as a ratio",
            self.loss.clone(),
        );
        registry.register_with_unit(
            "mesh_link_latency",
            "The highest latency of one mesh link (Yggdrasil 0.5 measures it)",
            Unit::Seconds,
            self.latency.clone(),
        );
    }
}

/// What one link's counters said at the previous poll.
#[derive(Debug, Clone, Copy)]
struct Seen {
    bytes_in: u64,
    bytes_out: u64,
    lost: u64,
    at: std::time::Instant,
}

/// Turns each poll's per-link counts into counter growth and, where the
/// daemon gives no rate (Yggdrasil 0.4), a rate from the previous poll.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    seen: HashMap<(LinkKind, String), Seen>,
}

/// Growth of a count that may have restarted.
fn growth(now: u64, before: u64) -> u64 {
    if now >= before {
        now - before
    } else {
        now
    }
}

impl Tracker {
    /// Notes the links of `kind` read at `at` (the daemon's whole list):
    /// fills missing rates, adds the growth to `metrics`, forgets links gone.
    pub(super) fn observe(
        &mut self,
        kind: LinkKind,
        links: &mut [Link],
        at: std::time::Instant,
        metrics: &Metrics,
    ) {
        let label = KindLabel { kind };
        let (mut received, mut sent, mut lost) = (0, 0, 0);
        let mut current = HashMap::with_capacity(links.len());
        for link in links.iter_mut() {
            let id = (kind, link.id());
            let link_lost = link.packets.and_then(|p| p.lost).unwrap_or(0);
            match self.seen.get(&id) {
                Some(before) => {
                    received += growth(link.bytes_in, before.bytes_in);
                    sent += growth(link.bytes_out, before.bytes_out);
                    lost += growth(link_lost, before.lost);
                    let secs = at.saturating_duration_since(before.at).as_secs_f64();
                    if secs > 0.0 {
                        let rate = |now, then| (growth(now, then) as f64 / secs) as u64;
                        link.rate_in = link.rate_in.or(Some(rate(link.bytes_in, before.bytes_in)));
                        link.rate_out = link
                            .rate_out
                            .or(Some(rate(link.bytes_out, before.bytes_out)));
                    }
                }
                // A link first seen: all it counted so far is new to us.
                None => {
                    received += link.bytes_in;
                    sent += link.bytes_out;
                    lost += link_lost;
                }
            }
            current.insert(
                id,
                Seen {
                    bytes_in: link.bytes_in,
                    bytes_out: link.bytes_out,
                    lost: link_lost,
                    at,
                },
            );
        }
        self.seen.retain(|(k, _), _| *k != kind);
        self.seen.extend(current);
        metrics.received.get_or_create(&label).inc_by(received);
        metrics.sent.get_or_create(&label).inc_by(sent);
        metrics.lost.get_or_create(&label).inc_by(lost);
    }

    /// Forgets the links of a daemon that went away (their counts start
    /// again when it is back).
    pub(super) fn forget(&mut self, kind: LinkKind) {
        self.seen.retain(|(k, _), _| *k != kind);
    }
}

/// Sets the gauges from a finished snapshot.
pub(super) fn set_gauges(metrics: &Metrics, snapshot: &Snapshot) {
    for (kind, daemon) in [
        (LinkKind::Yggdrasil, &snapshot.daemons.yggdrasil),
        (LinkKind::Cjdns, &snapshot.daemons.cjdns),
    ] {
        let label = KindLabel { kind };
        let of_kind = || snapshot.links.iter().filter(move |l| l.kind == kind);
        metrics
            .daemon_up
            .get_or_create(&label)
            .set(i64::from(daemon.state == super::DaemonState::Up));
        metrics
            .links
            .get_or_create(&label)
            .set(of_kind().filter(|l| l.is_up()).count() as i64);
        metrics
            .peers
            .get_or_create(&label)
            .set(of_kind().map(|l| l.peers.len()).sum::<usize>() as i64);
        let max = |f: fn(&Link) -> Option<f64>| of_kind().filter_map(f).fold(0.0, f64::max);
        metrics.loss.get_or_create(&label).set(max(|l| l.loss));
        metrics
            .latency
            .get_or_create(&label)
            .set(max(|l| l.latency_ms.map(|ms| ms / 1000.0)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(bytes_in: u64, bytes_out: u64) -> Link {
        Link {
            address: Some("200::1".into()),
            bytes_in,
            bytes_out,
            ..Link::new(LinkKind::Yggdrasil)
        }
    }

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn counters_only_grow_and_rates_are_filled() {
        let metrics = Metrics::default();
        let mut registry = Registry::with_prefix("meshcast");
        metrics.register(&mut registry);
        let mut tracker = Tracker::default();
        let t0 = std::time::Instant::now();
        tracker.observe(LinkKind::Yggdrasil, &mut [link(100, 10)], t0, &metrics);
        let mut later = [link(300, 20)];
        let t1 = t0 + std::time::Duration::from_secs(2);
        tracker.observe(LinkKind::Yggdrasil, &mut later, t1, &metrics);
        assert_eq!(later[0].rate_in, Some(100));
        assert_eq!(later[0].rate_out, Some(5));
        // The link restarted: its 50 bytes are new.
        let t2 = t1 + std::time::Duration::from_secs(1);
        tracker.observe(LinkKind::Yggdrasil, &mut [link(50, 0)], t2, &metrics);
        let out = text(&registry);
        assert!(
            out.contains("meshcast_mesh_received_bytes_total{kind=\"yggdrasil\"} 350"),
            "{out}"
        );
        assert!(
            out.contains("meshcast_mesh_sent_bytes_total{kind=\"yggdrasil\"} 20"),
            "{out}"
        );
    }

    #[test]
    fn gauges_follow_the_snapshot() {
        let metrics = Metrics::default();
        let mut registry = Registry::with_prefix("meshcast");
        metrics.register(&mut registry);
        let mut snapshot = Snapshot::default();
        snapshot.daemons.cjdns.state = super::super::DaemonState::Up;
        let mut l = Link::new(LinkKind::Cjdns);
        l.state = "ESTABLISHED".into();
        l.loss = Some(0.25);
        snapshot.links.push(l);
        set_gauges(&metrics, &snapshot);
        let out = text(&registry);
        for line in [
            "meshcast_mesh_daemon_up{kind=\"cjdns\"} 1",
            "meshcast_mesh_daemon_up{kind=\"yggdrasil\"} 0",
            "meshcast_mesh_links{kind=\"cjdns\"} 1",
            "meshcast_mesh_link_loss_ratio{kind=\"cjdns\"} 0.25",
        ] {
            assert!(out.contains(line), "{line} not in {out}");
        }
    }
}
