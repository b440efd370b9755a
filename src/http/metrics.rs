//! What the HTTP stage counts for `GET /metrics`, and the route that
//! encodes the node's registry.
//!
//! ```text
//! request --> Front (the hot path and the router alike) --> requests{route, status}
//! bytes written on a connection (conn::Conn; sendfile included) --> sent_bytes, sendfile_bytes
//! GET /metrics --> the Registry node.rs built, as Prometheus text (OpenMetrics)
//! ```
//!
//! Labels stay bounded: a request is counted by its route's class (a fixed
//! set) and status code, never by its path or its client's address.

use super::AppState;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;

/// The class of a route: what the request was for, from its path alone.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RouteClass {
    /// `/ipfs/...`: blocks, files, CARs, segments.
    Ipfs,
    /// `/ipns/...`.
    Ipns,
    /// `/routing/v1/...` (delegated routing).
    Routing,
    /// `/live/...`: playlists.
    Live,
    /// `/api/...`.
    Api,
    /// `/metrics`.
    Metrics,
    /// Pages and their assets: `/`, `/watch/...`, `/assets/...`.
    Ui,
    /// Anything else (404s).
    Other,
}

impl EncodeLabelValue for RouteClass {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

impl RouteClass {
    /// Every class, in the order of [`RouteClass::index`].
    const ALL: [Self; 8] = [
        Self::Ipfs,
        Self::Ipns,
        Self::Routing,
        Self::Live,
        Self::Api,
        Self::Metrics,
        Self::Ui,
        Self::Other,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ipfs => "ipfs",
            Self::Ipns => "ipns",
            Self::Routing => "routing",
            Self::Live => "live",
            Self::Api => "api",
            Self::Metrics => "metrics",
            Self::Ui => "ui",
            Self::Other => "other",
        }
    }

    /// The class of a request for `path`.
    pub fn of(path: &str) -> Self {
        let first = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        match first {
            "ipfs" => Self::Ipfs,
            "ipns" => Self::Ipns,
            "routing" => Self::Routing,
            "live" => Self::Live,
            "api" => Self::Api,
            "metrics" => Self::Metrics,
            "" | "watch" | "assets" | "favicon.ico" => Self::Ui,
            _ => Self::Other,
        }
    }
}

/// The labels of a request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: RouteClass,
    status: u16,
}

/// The status codes a request counter is kept at hand for, per route
/// class: what the gateway answers nearly always. Others are looked up in
/// the family (a lock and a hash) each time.
const COMMON_STATUSES: [u16; 12] = [200, 206, 301, 304, 400, 404, 408, 416, 429, 500, 503, 504];

/// Request counters resolved once, at their first use, so that counting a
/// request is one relaxed add (no series appears before its first request).
type Resolved = [[std::sync::OnceLock<Counter>; COMMON_STATUSES.len()]; RouteClass::ALL.len()];

/// The HTTP stage's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    resolved: Arc<Resolved>,
    /// Bytes written to clients: heads and bodies.
    pub(super) sent: Counter,
    /// Of those, bytes the kernel sent from block files (sendfile).
    pub(super) sendfile: Counter,
    registry: Arc<std::sync::OnceLock<Arc<Registry>>>,
}

impl Metrics {
    /// Registers the HTTP metrics in `registry` (under `http_`).
    pub fn new(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("http");
        let requests = Family::default();
        r.register(
            "requests",
            "HTTP requests answered, by route class and status code",
            requests.clone(),
        );
        let sent = Counter::default();
        r.register_with_unit(
            "sent",
            "Bytes written to HTTP clients (heads and bodies, sendfile included)",
            Unit::Bytes,
            sent.clone(),
        );
        let sendfile = Counter::default();
        r.register_with_unit(
            "sendfile",
            "Bytes of blocks the kernel sent to HTTP clients from their files (sendfile)",
            Unit::Bytes,
            sendfile.clone(),
        );
        Self {
            requests,
            resolved: Arc::default(),
            sent,
            sendfile,
            registry: Arc::default(),
        }
    }

    /// Serves `registry` (complete: every stage registered) at `/metrics`.
    pub fn serve_registry(&self, registry: Registry) {
        let _ = self.registry.set(Arc::new(registry));
    }

    /// Counts one answered request.
    pub(super) fn request(&self, route: RouteClass, status: StatusCode) {
        let status = status.as_u16();
        let labels = || RequestLabels { route, status };
        match COMMON_STATUSES.iter().position(|s| *s == status) {
            Some(i) => {
                self.resolved[route.index()][i]
                    .get_or_init(|| self.requests.get_or_create(&labels()).clone())
                    .inc();
            }
            None => {
                self.requests.get_or_create(&labels()).inc();
            }
        }
    }
}

/// `GET /metrics`: the registry as OpenMetrics 1.0.0 text to a client that
/// asks for it (Prometheus does), else in the Prometheus text format 0.0.4
/// that older tools read (`promtool check metrics`, curl).
pub(super) async fn metrics(State(state): State<AppState>, req: Request) -> Response {
    let Some(registry) = state.metrics.as_ref().and_then(|m| m.registry.get()) else {
        return super::GatewayError::NoRoute.into_response();
    };
    let mut text = String::with_capacity(16 << 10);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        return super::GatewayError::internal("encoding metrics", e).into_response();
    }
    let openmetrics = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        let ct = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        ([(header::CONTENT_TYPE, ct)], text).into_response()
    } else {
        let ct = "text/plain; version=0.0.4; charset=utf-8";
        ([(header::CONTENT_TYPE, ct)], to_text_format(&text)).into_response()
    }
}

/// OpenMetrics text as the Prometheus text format 0.0.4. prometheus-client
/// encodes OpenMetrics only; the two differ, for what it emits, in three
/// things: a counter's family is named without `_total` in OpenMetrics but
/// with it (as its sample is) in 0.0.4, and 0.0.4 has no `# UNIT` and no
/// `# EOF` lines.
fn to_text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let family = ["# HELP ", "# TYPE "].into_iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let name = rest.split(' ').next()?;
            counters
                .contains(name)
                .then(|| (p, name, &rest[name.len()..]))
        });
        match family {
            Some((prefix, name, rest)) => {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total");
                out.push_str(rest);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fall_in_few_classes() {
        assert_eq!(RouteClass::of("/ipfs/bafy/x.m4s"), RouteClass::Ipfs);
        assert_eq!(RouteClass::of("/ipns/k51"), RouteClass::Ipns);
        assert_eq!(RouteClass::of("/live/talks.m3u8"), RouteClass::Live);
        assert_eq!(RouteClass::of("/api/v1/streams"), RouteClass::Api);
        assert_eq!(RouteClass::of("/routing/v1/ipns/k"), RouteClass::Routing);
        assert_eq!(RouteClass::of("/metrics"), RouteClass::Metrics);
        assert_eq!(RouteClass::of("/"), RouteClass::Ui);
        assert_eq!(RouteClass::of("/watch/talks"), RouteClass::Ui);
        assert_eq!(RouteClass::of("/wp-admin/x.php"), RouteClass::Other);
    }

    #[test]
    fn the_text_format_names_counter_families_by_their_samples() {
        let om = "# HELP x_sent_bytes Bytes.\n# TYPE x_sent_bytes counter\n# UNIT x_sent_bytes bytes\nx_sent_bytes_total 3\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n# EOF\n";
        assert_eq!(
            to_text_format(om),
            "# HELP x_sent_bytes_total Bytes.\n# TYPE x_sent_bytes_total counter\nx_sent_bytes_total 3\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n"
        );
    }

    #[test]
    fn common_and_rare_statuses_count_in_one_family_across_clones() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        let other = m.clone();
        for _ in 0..3 {
            m.request(RouteClass::Live, StatusCode::OK);
            other.request(RouteClass::Live, StatusCode::OK);
        }
        m.request(RouteClass::Api, StatusCode::IM_A_TEAPOT);
        other.request(RouteClass::Api, StatusCode::IM_A_TEAPOT);
        let count = |route, status| {
            m.requests
                .get_or_create(&RequestLabels { route, status })
                .get()
        };
        assert_eq!(count(RouteClass::Live, 200), 6);
        assert_eq!(count(RouteClass::Api, 418), 2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        // Only series that were counted appear.
        assert_eq!(text.matches("http_requests_total{").count(), 2, "{text}");
        assert!(RouteClass::ALL
            .iter()
            .enumerate()
            .all(|(i, r)| r.index() == i));
    }

    #[test]
    fn names_follow_the_conventions() {
        let mut registry = Registry::with_prefix("meshcast");
        let m = Metrics::new(&mut registry);
        m.request(RouteClass::Ipfs, StatusCode::OK);
        m.sent.inc_by(10);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("meshcast_http_requests_total{route=\"ipfs\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(text.contains("meshcast_http_sent_bytes_total 10"), "{text}");
        assert!(
            text.contains("# TYPE meshcast_http_sendfile_bytes counter"),
            "{text}"
        );
    }
}
