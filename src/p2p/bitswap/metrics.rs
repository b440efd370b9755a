//! Bitswap's counters for `GET /metrics`, read at scrape time.
//!
//! The service already keeps its [`super::Stats`] in atomics (for
//! `/api/v1/bitswap`); a [`Collector`] encodes a snapshot of them on each
//! scrape, so Prometheus costs the exchange nothing between scrapes.

use super::SharedStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;
use std::sync::Arc;

/// Encodes the exchange's counters.
#[derive(Debug)]
pub(super) struct StatsCollector(pub(super) Arc<SharedStats>);

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.0.snapshot();
        let counters: [(&str, &str, Option<Unit>, u64); 9] = [
            ("blocks_sent", "Blocks sent to peers", None, s.blocks_sent),
            (
                "sent",
                "Bytes of blocks sent to peers",
                Some(Unit::Bytes),
                s.bytes_sent,
            ),
            (
                "blocks_received",
                "Wanted blocks received from peers and stored",
                None,
                s.blocks_received,
            ),
            (
                "received",
                "Bytes of wanted blocks received from peers",
                Some(Unit::Bytes),
                s.bytes_received,
            ),
            (
                "duplicate_blocks",
                "Blocks received again after another peer's copy",
                None,
                s.duplicate_blocks,
            ),
            (
                "rejected_blocks",
                "Blocks dropped: unasked for, or not matching their hash",
                None,
                s.rejected_blocks,
            ),
            (
                "dropped_wants",
                "Peers' wants dropped for being over a limit",
                None,
                s.dropped_wants,
            ),
            (
                "messages_received",
                "Bitswap messages received",
                None,
                s.messages_received,
            ),
            (
                "messages_sent",
                "Bitswap messages sent",
                None,
                s.messages_sent,
            ),
        ];
        for (name, help, unit, value) in counters {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(
                name,
                help,
                unit.as_ref(),
                metric.metric_type(),
            )?)?;
        }
        let gauges = [
            ("wants", "Our wants not yet satisfied", s.wants_pending),
            (
                "peer_wants",
                "Peers' wants remembered for blocks this node lacks",
                s.peer_wants_pending,
            ),
            ("peers", "Peers exchanging blocks with this node", s.peers),
        ];
        for (name, help, value) in gauges {
            let metric = ConstGauge::new(value as i64);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        Ok(())
    }
}
