//! Names on the gateway, and Delegated Routing V1 for browsers and Helia.
//!
//! ```text
//! GET /ipns/{name}[/{path}]          resolve (local table, else pubsub + fetch), then
//!                                    serve /ipfs/{cid}[/{path}] with the record's TTL
//! GET /ipns/{name}?format=ipns-record  the signed record itself
//! GET /routing/v1/ipns/{name}        the record (application/vnd.ipfs.ipns-record)
//! PUT /routing/v1/ipns/{name}        take a record: verified, kept and passed on if newer
//! GET /routing/v1/providers/{cid}    this node when it holds the block (its Bitswap
//!                                    peer and its HTTP gateway), and the providers
//!                                    both DHTs know (what peers announced to this
//!                                    node, and what its DHT peers answer)
//! ```

use super::{AppState, GatewayError};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on, MethodFilter};
use axum::{Json, Router};
use cid::Cid;
use futures::StreamExt;
use serde_json::json;

/// The media type of a signed IPNS record.
pub const IPNS_RECORD: &str = "application/vnd.ipfs.ipns-record";

/// The routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/ipns/{*path}",
            on(MethodFilter::GET.or(MethodFilter::HEAD), ipns),
        )
        .route("/routing/v1/ipns/{name}", get(routing_get).put(routing_put))
        .route("/routing/v1/providers/{cid}", get(providers))
}

fn parse_name(s: &str) -> Result<crate::ipns::Name, GatewayError> {
    s.parse().map_err(|e: crate::ipns::NameError| {
        GatewayError::BadRequest(format!("{s:?} is not an IPNS name: {e}"))
    })
}

fn naming(state: &AppState) -> Result<&crate::p2p::naming::Naming, GatewayError> {
    state.naming().ok_or(GatewayError::P2pOff)
}

async fn resolve(
    state: &AppState,
    name: &crate::ipns::Name,
) -> Result<crate::ipns::record::Record, GatewayError> {
    let naming = naming(state)?;
    naming
        .resolve(name, naming.resolve_timeout())
        .await
        .map_err(|e| GatewayError::NameNotFound {
            name: name.to_string(),
            reason: e.to_string(),
        })
}

fn record_response(record: &crate::ipns::record::Record) -> Response {
    let ttl = record.ttl().as_secs();
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(IPNS_RECORD)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_str(&format!("public, max-age={ttl}"))
                    .unwrap_or(HeaderValue::from_static("no-cache")),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ),
        ],
        record.to_bytes(),
    )
        .into_response()
}

fn wants_record(uri: &Uri, headers: &HeaderMap) -> bool {
    let query = uri.query().unwrap_or_default();
    query.split('&').any(|kv| kv == "format=ipns-record")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.split(',').any(|t| t.trim().starts_with(IPNS_RECORD)))
}

/// `GET`/`HEAD /ipns/{name}[/{path}]`.
async fn ipns(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let rest = uri.path().strip_prefix("/ipns/").unwrap_or_default();
    let (name_str, sub) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let name = parse_name(name_str)?;
    let record = resolve(&state, &name).await?;
    if wants_record(&uri, &headers) {
        return Ok(record_response(&record));
    }
    let value = record.value();
    let target = value
        .strip_prefix("/ipfs/")
        .ok_or_else(|| GatewayError::NameNotFound {
            name: name.to_string(),
            reason: format!("it points to {value:?}, not an /ipfs/ path"),
        })?;
    let ipfs_path = format!("/ipfs/{}{}", target.trim_end_matches('/'), sub);
    let with_query = match uri.query() {
        Some(q) => format!("{ipfs_path}?{q}"),
        None => ipfs_path.clone(),
    };
    let inner_uri: Uri = with_query
        .parse()
        .map_err(|_| GatewayError::BadRequest("bad path".into()))?;
    // Our own name points only at our own sites: they run their player.
    let own = naming(&state)?.is_own(&name);
    let mut resp = super::gateway::content(state, method, inner_uri, headers, own).await?;
    let h = resp.headers_mut();
    // The name moves: caches may keep the answer only for the record's TTL.
    let ttl = record.ttl().as_secs();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&format!("public, max-age={ttl}")).expect("ASCII"),
    );
    if let Ok(v) = HeaderValue::from_str(uri.path()) {
        h.insert("x-ipfs-path", v);
    }
    // A redirect to the directory's slash stays under the name.
    if let Some(loc) = h.get(header::LOCATION).and_then(|l| l.to_str().ok()) {
        let prefix = format!("/ipfs/{}", target.trim_end_matches('/'));
        if let Some(after) = loc.strip_prefix(&prefix) {
            if let Ok(v) = HeaderValue::from_str(&format!("/ipns/{name_str}{after}")) {
                h.insert(header::LOCATION, v);
            }
        }
    }
    Ok(resp)
}

/// `GET /routing/v1/ipns/{name}`.
async fn routing_get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, GatewayError> {
    let name = parse_name(&name)?;
    Ok(record_response(&resolve(&state, &name).await?))
}

/// `PUT /routing/v1/ipns/{name}`.
async fn routing_put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let name = parse_name(&name)?;
    naming(&state)?
        .put(&name, &body)
        .await
        .map_err(|e| GatewayError::BadRequest(format!("record refused: {e}")))?;
    Ok(StatusCode::OK.into_response())
}

/// How long a providers request waits for the DHT lookups.
const PROVIDERS_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// `GET /routing/v1/providers/{cid}`: this node when it holds the block
/// (as a Bitswap peer, and as a trustless gateway at the address the client
/// reached it by), then every provider the DHTs know, within
/// [`PROVIDERS_WAIT`] (delegated routing lets a browser or Helia find
/// providers without a DHT of its own; a browser, which cannot dial TCP or
/// QUIC, fetches from the gateway and verifies each block). The IPIP-484
/// `filter-protocols` parameter picks the transports the client can use.
/// A client that accepts `application/x-ndjson` (Helia does) gets each
/// provider as it is found, this node first; others get one JSON document
/// once the wait is over.
async fn providers(
    State(state): State<AppState>,
    Path(cid): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let cid = Cid::try_from(cid.as_str()).map_err(|source| GatewayError::InvalidCid {
        input: cid.chars().take(100).collect(),
        source,
    })?;
    let wanted = ProtocolFilter::from_query(uri.query());
    let internal = |e| GatewayError::internal("p2p node", e);
    let mut list = Vec::new();
    let p2p = state.p2p().cloned();
    if state.has_local(cid).await? {
        if let Some(p2p) = p2p.as_ref().filter(|_| wanted.allows(BITSWAP)) {
            let info = p2p.info().await.map_err(internal)?;
            let addrs: Vec<String> = info
                .addrs
                .iter()
                .map(|a| {
                    a.rsplit_once("/p2p/")
                        .map_or(a.as_str(), |(a, _)| a)
                        .to_owned()
                })
                .collect();
            list.push(provider_json(&info.peer_id, addrs, BITSWAP));
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if let (Some(p2p), Some(addr)) = (p2p.as_ref(), host.and_then(gateway_multiaddr)) {
            if wanted.allows(GATEWAY_HTTP) {
                // The peer ID says which node the gateway is; the client
                // checks every block against its CID, so it trusts neither.
                list.push(provider_json(
                    &p2p.peer_id().to_string(),
                    vec![addr],
                    GATEWAY_HTTP,
                ));
            }
        }
    }
    let mut found = None;
    if let Some(p2p) = p2p.as_ref().filter(|_| wanted.allows(BITSWAP)) {
        // Provider records are keyed by the multihash (as kubo announces them).
        let rx = p2p
            .providers(cid.hash().to_bytes())
            .await
            .map_err(internal)?;
        found = Some((p2p.peer_id(), rx));
    } else if p2p.is_none() && list.is_empty() {
        return Err(GatewayError::P2pOff);
    }
    let deadline = tokio::time::Instant::now() + PROVIDERS_WAIT;
    let common = [
        (header::CACHE_CONTROL, "public, max-age=15"),
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        // The gateway's address in the answer is the one asked by.
        (header::VARY, "Host, Accept"),
    ];
    if accepts_ndjson(&headers) {
        // Streamed, so a client fetches from this node at once rather than
        // after the DHT lookups; a 200 with no line says nobody is known.
        let dht = futures::stream::unfold(found, move |found| async move {
            let (me, mut rx) = found?;
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(p)) if p.peer_id == me => continue,
                    Ok(Some(p)) => {
                        let addrs = p.addrs.iter().map(ToString::to_string).collect();
                        let line = provider_json(&p.peer_id.to_string(), addrs, BITSWAP);
                        return Some((line, Some((me, rx))));
                    }
                    _ => return None,
                }
            }
        });
        let lines = futures::stream::iter(list).chain(dht).map(|v| {
            let mut line = serde_json::to_vec(&v).expect("JSON values serialize");
            line.push(b'\n');
            Ok::<_, std::convert::Infallible>(Bytes::from(line))
        });
        let mut resp = (common, axum::body::Body::from_stream(lines)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        return Ok(resp);
    }
    if let Some((me, mut rx)) = found {
        while let Ok(Some(p)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            if p.peer_id != me {
                let addrs = p.addrs.iter().map(ToString::to_string).collect();
                list.push(provider_json(&p.peer_id.to_string(), addrs, BITSWAP));
            }
        }
    }
    if list.is_empty() {
        return Err(GatewayError::NoProviders { cid });
    }
    Ok((common, Json(json!({ "Providers": list }))).into_response())
}

/// Whether the client takes the streamed form of a providers answer.
fn accepts_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let mut parts = t.split(';').map(str::trim);
            let quality_zero = |p: &str| p.replace(' ', "") == "q=0";
            parts.next() == Some("application/x-ndjson") && !parts.any(quality_zero)
        })
}

/// The transport name of Bitswap over libp2p in delegated routing.
const BITSWAP: &str = "transport-bitswap";
/// The transport name of a trustless HTTP gateway in delegated routing.
const GATEWAY_HTTP: &str = "transport-ipfs-gateway-http";

/// The `filter-protocols` of a providers request (IPIP-484): the transports
/// the client takes, or all when absent.
struct ProtocolFilter(Option<Vec<String>>);

impl ProtocolFilter {
    fn from_query(query: Option<&str>) -> Self {
        let list = query.into_iter().flat_map(|q| q.split('&')).find_map(|kv| {
            let v = kv.strip_prefix("filter-protocols=")?;
            let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
            Some(
                v.split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect::<Vec<_>>(),
            )
        });
        Self(list.filter(|l| !l.is_empty()))
    }

    fn allows(&self, protocol: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|l| l.iter().any(|p| p == protocol))
    }
}

/// The multiaddr of this gateway as a client reached it, from the request's
/// `Host` (`/ip4/IP/tcp/PORT/http`, `/ip6/...` or `/dns/NAME/...`; port 80
/// when it names none). `None` for a `Host` that is not an authority.
fn gateway_multiaddr(host: &str) -> Option<String> {
    let authority: axum::http::uri::Authority = host.parse().ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let port = authority.port_u16().unwrap_or(80);
    let name = authority.host();
    let proto = match name.trim_start_matches('[').trim_end_matches(']').parse() {
        Ok(std::net::IpAddr::V4(ip)) => format!("/ip4/{ip}"),
        Ok(std::net::IpAddr::V6(ip)) => format!("/ip6/{ip}"),
        Err(_) => {
            let dns_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !dns_name {
                return None;
            }
            format!("/dns/{name}")
        }
    };
    Some(format!("{proto}/tcp/{port}/http"))
}

/// One provider in the Delegated Routing V1 `peer` schema.
fn provider_json(id: &str, addrs: Vec<String>, protocol: &str) -> serde_json::Value {
    json!({
        "Schema": "peer",
        "ID": id,
        "Addrs": addrs,
        "Protocols": [protocol],
    })
}

#[cfg(test)]
mod tests {
    use super::{gateway_multiaddr, ProtocolFilter, BITSWAP, GATEWAY_HTTP};

    #[test]
    fn the_gateway_is_listed_at_the_address_it_was_asked_by() {
        let cases = [
            ("127.0.0.1:8080", Some("/ip4/127.0.0.1/tcp/8080/http")),
            ("[200:1234::5]:8080", Some("/ip6/200:1234::5/tcp/8080/http")),
            ("node.mesh:8080", Some("/dns/node.mesh/tcp/8080/http")),
            ("node.mesh", Some("/dns/node.mesh/tcp/80/http")),
            ("user@node.mesh:80", None),
            ("bad/host", None),
            ("", None),
        ];
        for (host, want) in cases {
            assert_eq!(gateway_multiaddr(host).as_deref(), want, "{host}");
        }
    }

    #[test]
    fn ndjson_is_streamed_to_clients_that_take_it() {
        use super::accepts_ndjson;
        use axum::http::{header::ACCEPT, HeaderMap, HeaderValue};
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(ACCEPT, HeaderValue::from_static(v));
            h
        };
        assert!(accepts_ndjson(&with(
            "application/x-ndjson, application/json;q=0.8"
        )));
        assert!(accepts_ndjson(&with("application/x-ndjson")));
        assert!(!accepts_ndjson(&with("application/json")));
        assert!(!accepts_ndjson(&with("application/x-ndjson;q=0, */*")));
        assert!(!accepts_ndjson(&HeaderMap::new()));
    }

    #[test]
    fn filter_protocols_picks_the_transports() {
        let all = ProtocolFilter::from_query(None);
        assert!(all.allows(BITSWAP) && all.allows(GATEWAY_HTTP));
        let http = ProtocolFilter::from_query(Some(
            "x=1&filter-protocols=unknown%2Ctransport-ipfs-gateway-http",
        ));
        assert!(http.allows(GATEWAY_HTTP) && !http.allows(BITSWAP));
        let both = ProtocolFilter::from_query(Some(
            "filter-protocols=transport-bitswap,transport-ipfs-gateway-http",
        ));
        assert!(both.allows(GATEWAY_HTTP) && both.allows(BITSWAP));
        assert!(ProtocolFilter::from_query(Some("filter-protocols=")).allows(BITSWAP));
    }
}
