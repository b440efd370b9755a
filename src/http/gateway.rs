//! `GET`/`HEAD /ipfs/{cid}[/{path}]`: the path gateway and trustless gateway
//! (ipfs/specs `http-gateways/path-gateway.md`, `trustless-gateway.md`) for
//! what this node's store holds.
//!
//! Flow: parse the content path and query, pick the response format
//! (`?format=` over `Accept`), honour `Cache-Control: only-if-cached`,
//! resolve the path with the exporter, then answer with a raw block, a CAR
//! stream (`dag-scope`, `entity-bytes`), file bytes (`Range`, sniffed
//! `Content-Type`), `index.html` or a generated directory listing; every
//! answer but this node's own stream sites is sandboxed ([`SANDBOX`]).
//! Bodies are streamed: a task reads one block per blocking call into a
//! small bounded channel, so memory stays flat whatever the file's size and
//! a slow client holds no thread.
//!
//! This file parses the request and routes it; `negotiate` picks the format,
//! `trustless` answers raw blocks and CARs, `deserialized` file bytes,
//! symlinks and directories, `body` streams a body block by block, and `hot`
//! answers a live segment before the router.

use super::{AppState, GatewayError};
use crate::store::IDENTITY;
use crate::unixfs::export::{self, ExportError, Resolved};
use axum::extract::{Query, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::Router;
use cid::Cid;
use serde::Deserialize;
use tower_http::cors::{Any, CorsLayer};

/// `Cache-Control` of everything under `/ipfs/`: content never changes.
const IMMUTABLE: &str = "public, max-age=29030400, immutable";

/// The `Content-Security-Policy` of everything the gateway serves but
/// this node's own stream sites. Content comes from the store, which peers
/// fill, and is served on the same origin as the UI and the API; whoever
/// controls the bytes also controls their type (`?filename=x.html`). A
/// sandboxed document runs no script and has an opaque origin of its own,
/// so a page from a peer cannot act as this node's UI. Subresources (a
/// segment, a playlist, an image) ignore the header, so players that fetch
/// them, the node's own included, are unaffected. Only an own stream's site
/// (`/ipns/<own name>/`, or `/ipfs/<root>/` while `root` is an own
/// stream's latest site) runs its player; a mirrored site is the origin's
/// content and is sandboxed like any other.
const SANDBOX: &str = "sandbox";

mod body;
mod deserialized;
mod hot;
mod negotiate;
mod trustless;

pub(super) use body::CHUNK_MAX;
pub(super) use hot::hot_block;
pub(super) use hot::FlatFiles;

use deserialized::deserialized;

/// The gateway's parsers of what a client sends, for the fuzz targets
/// (`crate::fuzzing`): each as the router runs it on a request.
pub(crate) mod parsers {
    use super::*;

    /// A `Range` header value for a file of `size` bytes: `None` when the
    /// whole file is sent, `Some(Err(()))` for 416, else the half-open range.
    pub(crate) fn byte_range(value: &[u8], size: u64) -> Option<Result<(u64, u64), ()>> {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_bytes(value).ok()?);
        deserialized::byte_range(&headers, size)
            .map_err(drop)
            .transpose()
    }

    /// A request target as `/ipfs/...` answers it (a playlist's segment URI,
    /// `/ipfs/<cid>?filename=000001.m4s`): the content path, the query
    /// parameters the router reads, and the hot path's plain file name.
    /// `None` where the router would refuse it.
    pub(crate) fn request_target(target: &str) -> Option<Option<String>> {
        let uri: Uri = target.parse().ok()?;
        let path = ContentPath::parse(uri.path()).ok()?;
        let params = Query::<Params>::try_from_uri(&uri).ok()?.0;
        let plain = hot::plain_filename(uri.query());
        if let Some(Some(name)) = plain {
            // The hot path only answers plain names, which it puts in a header.
            assert!(HeaderValue::from_str(name).is_ok(), "{name:?}");
            assert_eq!(params.filename.as_deref(), Some(name));
        }
        let _ = path.prefix(path.segments.len());
        Some(params.filename)
    }
}
use negotiate::{negotiate, Format};
use trustless::{car, raw_block};

static X_IPFS_PATH: HeaderName = HeaderName::from_static("x-ipfs-path");
static X_IPFS_ROOTS: HeaderName = HeaderName::from_static("x-ipfs-roots");

/// Response headers a page from another origin may read.
const EXPOSED: [HeaderName; 7] = [
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::ETAG,
    HeaderName::from_static("x-ipfs-path"),
    HeaderName::from_static("x-ipfs-roots"),
    HeaderName::from_static("x-chunked-output"),
    HeaderName::from_static("x-stream-output"),
];

/// The `/ipfs` routes with their CORS policy: anyone may read.
pub(super) fn routes() -> Router<AppState> {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::RANGE,
            header::USER_AGENT,
            HeaderName::from_static("x-requested-with"),
        ])
        .expose_headers(EXPOSED);
    Router::new()
        .route(
            "/ipfs/{*path}",
            on(MethodFilter::GET.or(MethodFilter::HEAD), ipfs),
        )
        .layer(cors)
}

/// The query parameters the gateway reads; others are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Params {
    format: Option<String>,
    dag_scope: Option<String>,
    entity_bytes: Option<String>,
    car_version: Option<String>,
    car_order: Option<String>,
    car_dups: Option<String>,
    filename: Option<String>,
    download: Option<String>,
}

/// A parsed `/ipfs/{cid}/{path}`.
#[derive(Debug)]
struct ContentPath {
    /// The request path as sent (percent-encoded).
    raw: String,
    cid: Cid,
    /// Decoded segments after the CID.
    segments: Vec<String>,
    trailing_slash: bool,
}

impl ContentPath {
    fn parse(uri_path: &str) -> Result<Self, GatewayError> {
        let rest = uri_path.strip_prefix("/ipfs/").unwrap_or_default();
        let mut parts = rest.split('/');
        let cid_str = parts.next().unwrap_or_default();
        if cid_str.is_empty() {
            return Err(GatewayError::BadRequest(
                "the path has no CID; use /ipfs/{cid}".into(),
            ));
        }
        let cid = Cid::try_from(cid_str).map_err(|source| GatewayError::InvalidCid {
            input: cid_str.chars().take(100).collect(),
            source,
        })?;
        let mut segments = Vec::new();
        for part in parts {
            let seg = percent_encoding::percent_decode_str(part)
                .decode_utf8()
                .map_err(|_| {
                    GatewayError::BadRequest(format!("path segment {part:?} is not UTF-8"))
                })?;
            match &*seg {
                // Repeated slashes name nothing.
                "" => {}
                "." | ".." => {
                    return Err(GatewayError::BadRequest(format!(
                        "path segment {seg:?} is not allowed in a content path"
                    )))
                }
                s if s.contains('/') => {
                    return Err(GatewayError::BadRequest(format!(
                        "path segment {s:?} contains an encoded '/'"
                    )))
                }
                s => segments.push(s.to_owned()),
            }
        }
        Ok(Self {
            raw: uri_path.to_owned(),
            cid,
            segments,
            trailing_slash: uri_path.ends_with('/'),
        })
    }

    /// `/ipfs/{cid}/` and the first `n` segments, for messages.
    fn prefix(&self, n: usize) -> String {
        let mut s = format!("/ipfs/{}", self.cid);
        for seg in &self.segments[..n.min(self.segments.len())] {
            s.push('/');
            s.push_str(seg);
        }
        s
    }

    /// The gateway error for an exporter failure on this path.
    fn error(&self, e: ExportError) -> GatewayError {
        match e {
            ExportError::BlockNotFound { cid } => GatewayError::BlockNotFound { cid },
            ExportError::PathNotFound { segment, .. }
            | ExportError::NotADirectory { segment, .. } => GatewayError::PathNotFound {
                path: self.prefix(segment + 1),
                source: Box::new(e),
            },
            ExportError::NotUnixfs { cid, codec } => GatewayError::NotImplemented(format!(
                "{cid} has codec 0x{codec:x}, which this gateway does not render; \
                 request it with ?format=raw or ?format=car"
            )),
            ExportError::Malformed { cid, reason } => {
                tracing::warn!(%cid, %reason, "malformed block");
                GatewayError::Malformed { cid }
            }
            ExportError::TooDeep { cid, max } => {
                tracing::warn!(%cid, max, "DAG too deep");
                GatewayError::Malformed { cid }
            }
            e @ (ExportError::NotAFile { .. } | ExportError::NotAList { .. }) => {
                GatewayError::internal("export", e)
            }
            ExportError::Store(e) => GatewayError::internal("block store", e),
        }
    }
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison).
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    headers.get_all(header::IF_NONE_MATCH).iter().any(|v| {
        v.to_str()
            .map(|v| {
                v.split(',')
                    .any(|t| t.trim() == "*" || bare(t) == bare(etag))
            })
            .unwrap_or(false)
    })
}

fn only_if_cached(headers: &HeaderMap) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("only-if-cached"))
        })
    })
}

fn value(s: &str) -> HeaderValue {
    // Everything passed here is built from CIDs, numbers and the request
    // URI, which are ASCII; fall back rather than panic if that changes.
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// `Content-Disposition` naming `name`, with an ASCII fallback and the UTF-8
/// form (RFC 8187) when the name is not plain ASCII.
fn disposition(kind: &str, name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect();
    let mut v = format!("{kind}; filename=\"{ascii}\"");
    if ascii != name {
        let utf8 = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
        v.push_str(&format!("; filename*=UTF-8''{utf8}"));
    }
    value(&v)
}

/// `GET`/`HEAD /ipfs/{cid}[/{path}]`.
async fn ipfs(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    content(state, method, uri, headers, false).await
}

/// Answers `/ipfs/{cid}[/{path}]` (also what `/ipns` serves once the name
/// is resolved; `own_name` when it is one of this node's streams' names).
pub(super) async fn content(
    state: AppState,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    own_name: bool,
) -> Result<Response, GatewayError> {
    let path = ContentPath::parse(uri.path())?;
    let own_site = own_name || state.streams().is_some_and(|s| s.is_own_site(&path.cid));
    let params = Query::<Params>::try_from_uri(&uri)
        .map_err(|e| GatewayError::BadRequest(format!("bad query string: {e}")))?
        .0;
    if headers
        .get("service-worker")
        .is_some_and(|v| v.as_bytes() == b"script")
        && path.segments.is_empty()
        && !path.trailing_slash
    {
        return Err(GatewayError::BadRequest(
            "a service worker may only be registered under /ipfs/{cid}/ (with the slash)".into(),
        ));
    }
    let (format, from_accept) = negotiate(&params, &headers)?;
    // Only what this node holds: the root must be here, and nothing below
    // it is fetched either.
    let state = if only_if_cached(&headers) {
        if path.cid.hash().code() != IDENTITY && !state.has_local(path.cid).await? {
            return Err(GatewayError::NotCached { cid: path.cid });
        }
        state.local_only()
    } else {
        state
    };
    let resolved = if path.segments.is_empty() {
        // Nothing to read for the CID itself (the hot path: a segment).
        Resolved::root(path.cid)
    } else {
        let (root, segments) = (path.cid, path.segments.clone());
        state
            .read(move |s| export::resolve(s, &root, &segments))
            .await?
            .map_err(|e| path.error(e))?
    };
    let head = method == Method::HEAD;
    let mut resp = match format {
        Format::Raw => raw_block(&state, &resolved, &params, &headers).await?,
        Format::Car { dups } => {
            car(&state, &path, &resolved, &params, dups, &headers, head).await?
        }
        Format::Deserialized => {
            deserialized(&state, &path, &uri, &resolved, &params, &headers, head).await?
        }
    };
    let h = resp.headers_mut();
    let roots: Vec<String> = resolved.roots.iter().map(Cid::to_string).collect();
    ipfs_headers(h, &path.raw, &roots.join(","), own_site);
    if let (true, Some(f)) = (from_accept, format.query_value()) {
        // Lets caches keep this response apart from the deserialized one.
        let url = match uri.query() {
            Some(q) => format!("{}?{q}&format={f}", path.raw),
            None => format!("{}?format={f}", path.raw),
        };
        h.insert(header::CONTENT_LOCATION, value(&url));
    }
    Ok(resp)
}

/// 304 with the headers a cache needs to refresh its copy.
fn not_modified_response(etag: &str) -> Response {
    (
        StatusCode::NOT_MODIFIED,
        [
            (header::ETAG, value(etag)),
            (header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE)),
        ],
    )
        .into_response()
}

/// What every `/ipfs` answer carries: immutable caching (unless the
/// answer set its own), the path asked for and the CIDs it went through,
/// and, unless it is this node's own stream site, [`SANDBOX`].
fn ipfs_headers(h: &mut HeaderMap, path: &str, roots: &str, own_site: bool) {
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    }
    if !own_site {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(SANDBOX),
        );
    }
    h.insert(X_IPFS_PATH.clone(), value(path));
    h.insert(X_IPFS_ROOTS.clone(), value(roots));
}

#[cfg(test)]
mod tests;
