//! Names on the gateway, and Delegated Routing V1 for browsers and Helia.
//!
//! ```text
//! GET /ipns/{name}[/{path}]          resolve (local table, else pubsub + fetch), then
//!                                    serve /ipfs/{cid}[/{path}] with the record's TTL
//! GET /ipns/{name}?format=ipns-record  the signed record itself
//! GET /routing/v1/ipns/{name}        the record (application/vnd.ipfs.ipns-record)
//! PUT /routing/v1/ipns/{name}        take a record: verified, kept and passed on if newer
//! GET /routing/v1/providers/{cid}    this node when it holds the block, and the
//!                                    providers both DHTs know (what peers announced
//!                                    to this node, and what its DHT peers answer)
//! ```

use super::{AppState, GatewayError};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on, MethodFilter};
use axum::{Json, Router};
use cid::Cid;
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

/// `GET /routing/v1/providers/{cid}`: this node when it holds the block,
/// then every provider the DHTs know, within [`PROVIDERS_WAIT`]
/// (delegated routing lets a browser or Helia find providers without a
/// DHT of its own).
async fn providers(
    State(state): State<AppState>,
    Path(cid): Path<String>,
) -> Result<Response, GatewayError> {
    let cid = Cid::try_from(cid.as_str()).map_err(|source| GatewayError::InvalidCid {
        input: cid.chars().take(100).collect(),
        source,
    })?;
    let p2p = state.p2p().ok_or(GatewayError::P2pOff)?.clone();
    let internal = |e| GatewayError::internal("p2p node", e);
    let mut list = Vec::new();
    let me = p2p.peer_id();
    if state.has_local(cid).await? {
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
        list.push(provider_json(&info.peer_id, addrs));
    }
    // Provider records are keyed by the multihash (as kubo announces them).
    let mut found = p2p
        .providers(cid.hash().to_bytes())
        .await
        .map_err(internal)?;
    let deadline = tokio::time::Instant::now() + PROVIDERS_WAIT;
    while let Ok(Some(p)) = tokio::time::timeout_at(deadline, found.recv()).await {
        if p.peer_id != me {
            let addrs = p.addrs.iter().map(ToString::to_string).collect();
            list.push(provider_json(&p.peer_id.to_string(), addrs));
        }
    }
    if list.is_empty() {
        return Err(GatewayError::NoProviders { cid });
    }
    Ok((
        [
            (header::CACHE_CONTROL, "public, max-age=15"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        Json(json!({ "Providers": list })),
    )
        .into_response())
}

/// One provider in the Delegated Routing V1 `peer` schema.
fn provider_json(id: &str, addrs: Vec<String>) -> serde_json::Value {
    json!({
        "Schema": "peer",
        "ID": id,
        "Addrs": addrs,
        "Protocols": ["transport-bitswap"],
    })
}
