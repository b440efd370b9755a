//! `GET`/`HEAD /ipfs/{cid}[/{path}]`: the path gateway and trustless gateway
//! (ipfs/specs `http-gateways/path-gateway.md`, `trustless-gateway.md`) for
//! what this node's store holds.
//!
//! Flow: parse the content path and query, pick the response format
//! (`?format=` over `Accept`), honour `Cache-Control: only-if-cached`,
//! resolve the path with the exporter, then answer with a raw block, a CAR
//! stream (`dag-scope`, `entity-bytes`), file bytes (`Range`, sniffed
//! `Content-Type`), `index.html` or a generated directory listing. Bodies are
//! streamed: a task reads one block per blocking call into a small bounded
//! channel, so memory stays flat whatever the file's size and a slow client
//! holds no thread.

use super::html;
use super::sniff;
use super::{AppState, GatewayError};
use crate::store::{car, Blockstore, IDENTITY, RAW};
use crate::unixfs::export::walk::{DagScope, DagWalk, EntityBytes};
use crate::unixfs::export::{self, ExportError, FileRange, NodeKind, Resolved, Stat};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::Router;
use bytes::Bytes;
use cid::Cid;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tower_http::cors::{Any, CorsLayer};
use tracing::Instrument;

/// `Cache-Control` of everything under `/ipfs/`: content never changes.
const IMMUTABLE: &str = "public, max-age=29030400, immutable";
const RAW_TYPE: &str = "application/vnd.ipld.raw";
const CAR_TYPE: &str = "application/vnd.ipld.car";
/// Chunks buffered between the block reader and the connection.
const BODY_CHANNEL: usize = 4;
/// Blocks of a file fetched at once when the body reaches one this node
/// lacks: the missing one and those after it that are missing too, this
/// many in all, so a file held only by peers costs a round trip per this
/// many blocks, not per block (16 kubo chunks are 4 MiB).
const READ_AHEAD: usize = 16;

mod hot;
pub(super) use hot::hot_block;

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
            e @ (ExportError::NotAFile { .. } | ExportError::NotAList { .. }) => {
                GatewayError::internal("export", e)
            }
            ExportError::Store(e) => GatewayError::internal("block store", e),
        }
    }
}

/// The response format asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// UnixFS content: file bytes or a directory listing.
    Deserialized,
    /// The block itself.
    Raw,
    /// A CARv1; `dups` repeats blocks the walk meets again.
    Car { dups: bool },
}

impl Format {
    fn query_value(self) -> Option<&'static str> {
        match self {
            Self::Deserialized => None,
            Self::Raw => Some("raw"),
            Self::Car { .. } => Some("car"),
        }
    }
}

/// One media range of an `Accept` header.
struct MediaRange {
    /// Preference weight (`q`).
    q: f32,
    /// Lower-case `type/subtype`.
    mime: String,
    /// Other parameters, names lower-cased.
    params: Vec<(String, String)>,
}

/// The media ranges of `Accept`, most preferred first.
fn media_ranges(headers: &HeaderMap) -> Vec<MediaRange> {
    let mut out = Vec::new();
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let mime = parts.next().unwrap_or_default().to_ascii_lowercase();
            let mut q = 1.0;
            let mut params = Vec::new();
            for p in parts {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"'));
                if k == "q" {
                    q = v.parse().unwrap_or(0.0);
                } else {
                    params.push((k, v.to_owned()));
                }
            }
            if !mime.is_empty() && q > 0.0 {
                out.push(MediaRange { q, mime, params });
            }
        }
    }
    // Stable: equal weights keep the client's order.
    out.sort_by(|a, b| b.q.total_cmp(&a.q));
    out
}

/// Picks the format: `?format=` wins over `Accept`; the bool says whether
/// `Accept` chose it (then `Content-Location` names the `?format=` URL).
fn negotiate(params: &Params, headers: &HeaderMap) -> Result<(Format, bool), GatewayError> {
    // The most preferred range we can tell apart; other IPLD types (dag-json
    // and the like) are not offered, so they are skipped.
    let accepted = media_ranges(headers).into_iter().find(|r| {
        r.mime == RAW_TYPE || r.mime == CAR_TYPE || !r.mime.starts_with("application/vnd.ipld.")
    });
    let accepted_mime = accepted.as_ref().map(|r| r.mime.as_str());
    let (mime, from_accept) = match params.format.as_deref() {
        Some("raw") => (Some(RAW_TYPE), false),
        Some("car") => (Some(CAR_TYPE), false),
        Some(other) => {
            return Err(GatewayError::BadRequest(format!(
                "format={other} is not supported; use format=raw or format=car, \
                 or leave it out for the content itself"
            )))
        }
        None => (accepted_mime, true),
    };
    let format = match mime {
        Some(RAW_TYPE) => Format::Raw,
        Some(CAR_TYPE) => {
            // Query parameters win over those of the Accept header.
            let param = |query: &Option<String>, name: &str| {
                query.clone().or_else(|| {
                    accepted
                        .as_ref()
                        .filter(|r| r.mime == CAR_TYPE)
                        .and_then(|r| r.params.iter().find(|(k, _)| k == name))
                        .map(|(_, v)| v.clone())
                })
            };
            if let Some(v) = param(&params.car_version, "version").filter(|v| v != "1") {
                return Err(GatewayError::BadRequest(format!(
                    "CAR version {v} is not supported; only version=1"
                )));
            }
            let order = param(&params.car_order, "order");
            if let Some(o) = order.filter(|o| o != "dfs" && o != "unk") {
                return Err(GatewayError::BadRequest(format!(
                    "CAR order {o} is not supported; use order=dfs"
                )));
            }
            let dups = match param(&params.car_dups, "dups").as_deref() {
                None | Some("n") => false,
                Some("y") => true,
                Some(d) => {
                    return Err(GatewayError::BadRequest(format!(
                        "CAR dups={d} is not valid; use dups=y or dups=n"
                    )))
                }
            };
            Format::Car { dups }
        }
        _ => return Ok((Format::Deserialized, false)),
    };
    Ok((format, from_accept))
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

/// `GET`/`HEAD /ipfs/{cid}[/{path}]` (also what `/ipns` serves once the
/// name is resolved).
pub(super) async fn ipfs(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let path = ContentPath::parse(uri.path())?;
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
    ipfs_headers(h, &path.raw, &roots.join(","));
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

/// `?format=raw`: the block at the end of the path, verbatim.
async fn raw_block(
    state: &AppState,
    resolved: &Resolved,
    params: &Params,
    headers: &HeaderMap,
) -> Result<Response, GatewayError> {
    let cid = resolved.cid;
    let etag = format!("\"{cid}.raw\"");
    if not_modified(headers, &etag) {
        return Ok(not_modified_response(&etag));
    }
    // As it is on disk: sent from its file when the store maps it.
    let data = state.block_for_send(cid).await?;
    let name = params
        .filename
        .clone()
        .unwrap_or_else(|| format!("{cid}.bin"));
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(RAW_TYPE)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::CONTENT_DISPOSITION,
                disposition("attachment", &name),
            ),
            (header::ETAG, value(&etag)),
        ],
        data,
    )
        .into_response())
}

/// `?format=car`: the blocks proving the path, then the DAG at its end as
/// `dag-scope` and `entity-bytes` choose, streamed as a CARv1.
async fn car(
    state: &AppState,
    path: &ContentPath,
    resolved: &Resolved,
    params: &Params,
    dups: bool,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, GatewayError> {
    let bad = |e: export::walk::ParseError| GatewayError::BadRequest(e.to_string());
    let scope: DagScope = match params.dag_scope.as_deref() {
        Some(s) => s.parse().map_err(bad)?,
        None => DagScope::All,
    };
    let bytes: Option<EntityBytes> = params
        .entity_bytes
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(bad)?;
    let end = resolved.cid;
    // The status is sent before the first block: make sure the walk can at
    // least start, so a missing root is a 404 and not an empty 200.
    if end.hash().code() != IDENTITY
        && !state
            .read(move |s| s.has(&end))
            .await?
            .map_err(|e| GatewayError::internal("block store", e))?
    {
        return Err(GatewayError::BlockNotFound { cid: end });
    }
    let fingerprint = {
        let mut h = Sha256::new();
        for seg in &path.segments {
            h.update(seg.as_bytes());
            h.update([0]);
        }
        h.update(scope.as_str());
        h.update(bytes.map(|b| b.to_string()).unwrap_or_default());
        h.update([u8::from(dups)]);
        data_encoding::HEXLOWER.encode(&h.finalize()[..8])
    };
    // The walk is deterministic, so the same request always gets the same
    // bytes: a strong tag.
    let etag = format!("\"{}.car.{fingerprint}\"", path.cid);
    if not_modified(headers, &etag) {
        return Ok(not_modified_response(&etag));
    }
    let content_type = format!(
        "{CAR_TYPE}; version=1; order=dfs; dups={}",
        if dups { "y" } else { "n" }
    );
    let name = params
        .filename
        .clone()
        .unwrap_or_else(|| format!("{}.car", path.cid));
    let body = if head {
        Body::empty()
    } else {
        let walk = DagWalk::new(resolved, scope, bytes, dups);
        stream(
            state.clone(),
            CarBody {
                header: Some(car::header(&[path.cid])),
                walk,
            },
        )
    };
    Ok((
        [
            (header::CONTENT_TYPE, value(&content_type)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::CONTENT_DISPOSITION,
                disposition("attachment", &name),
            ),
            (header::ACCEPT_RANGES, HeaderValue::from_static("none")),
            (header::ETAG, value(&etag)),
        ],
        body,
    )
        .into_response())
}

/// UnixFS content: a file's bytes, a directory's `index.html` or listing.
async fn deserialized(
    state: &AppState,
    path: &ContentPath,
    uri: &Uri,
    resolved: &Resolved,
    params: &Params,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, GatewayError> {
    let cid = resolved.cid;
    let name = path.segments.last().map(String::as_str);
    if cid.codec() == RAW && cid.hash().code() != IDENTITY {
        // A raw block is its own content (every live segment is one): when
        // its bytes are wanted, get them once, as they go out (mapped, sent
        // from the file). A HEAD or a revalidation only needs its size.
        if !head && !not_modified(headers, &format!("\"{cid}\"")) {
            let data = state.block_for_send(cid).await?;
            let size = data.len() as u64;
            let st = Stat {
                cid,
                kind: NodeKind::Raw,
                size: Some(size),
                block_size: size,
            };
            return file(state, path, st, Some(data), name, params, headers, head).await;
        }
    }
    let st = state
        .read(move |s| export::stat(s, &cid))
        .await?
        .map_err(|e| path.error(e))?;
    match st.kind {
        NodeKind::File | NodeKind::Raw => {
            file(state, path, st, None, name, params, headers, head).await
        }
        NodeKind::Symlink => {
            let target = state
                .read(move |s| export::symlink_target(s, &cid))
                .await?
                .map_err(|e| path.error(e))?;
            let etag = format!("\"{cid}\"");
            if not_modified(headers, &etag) {
                return Ok(not_modified_response(&etag));
            }
            Ok((
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("inode/symlink"),
                    ),
                    (header::ETAG, value(&etag)),
                ],
                target,
            )
                .into_response())
        }
        NodeKind::Directory | NodeKind::HamtDirectory => {
            if !path.trailing_slash {
                // Relative links in the directory only work below a '/'.
                let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
                return Ok((
                    StatusCode::MOVED_PERMANENTLY,
                    [(header::LOCATION, value(&format!("{}/{query}", path.raw)))],
                )
                    .into_response());
            }
            let index = state
                .read(move |s| {
                    let r = export::resolve(s, &cid, &["index.html"])?;
                    export::stat(s, &r.cid)
                })
                .await?;
            match index {
                Ok(st) if st.is_file() => {
                    let name = Some("index.html");
                    file(state, path, st, None, name, params, headers, head).await
                }
                Ok(_) | Err(ExportError::PathNotFound { .. }) => {
                    listing(state, path, cid, headers).await
                }
                Err(e) => Err(path.error(e)),
            }
        }
    }
}

/// The generated HTML index of a directory without `index.html`.
async fn listing(
    state: &AppState,
    path: &ContentPath,
    cid: Cid,
    headers: &HeaderMap,
) -> Result<Response, GatewayError> {
    // The HTML depends on this code's version as well as on the CID.
    let etag = format!("\"DirIndex-{}_CID-{cid}\"", html::LISTING_VERSION);
    if not_modified(headers, &etag) {
        return Ok(not_modified_response(&etag));
    }
    let entries = state
        .read(move |s| export::list(s, &cid))
        .await?
        .map_err(|e| path.error(e))?;
    let page = html::listing(&path.raw, &cid, &entries, !path.segments.is_empty());
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::ETAG, value(&etag)),
        ],
        page,
    )
        .into_response())
}

/// A single byte range from a `Range` header, as `[start, end)`.
///
/// Headers that do not parse, other units and multiple ranges are ignored
/// (the whole file is sent), as RFC 9110 allows.
fn byte_range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, GatewayError> {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let unsatisfiable = GatewayError::RangeNotSatisfiable { size };
    let range = if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        (size.saturating_sub(n), size)
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return Ok(None);
        };
        let end = if b.is_empty() {
            size
        } else {
            match b.parse::<u64>() {
                Ok(e) if e >= start => e.saturating_add(1).min(size),
                _ => return Ok(None),
            }
        };
        (start, end)
    };
    if range.0 >= range.1 {
        return Err(unsatisfiable);
    }
    Ok(Some(range))
}

/// File bytes, whole or one range, with a type from the name or content.
/// `block` is the file's one raw block, when the caller has it already.
#[allow(clippy::too_many_arguments)]
async fn file(
    state: &AppState,
    path: &ContentPath,
    st: Stat,
    block: Option<Bytes>,
    name: Option<&str>,
    params: &Params,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, GatewayError> {
    let cid = st.cid;
    let size = st.size.unwrap_or(0);
    let etag = format!("\"{cid}\"");
    if not_modified(headers, &etag) {
        return Ok(not_modified_response(&etag));
    }
    let range = byte_range(headers, size)?;
    let by_name = params.filename.as_deref().or(name).and_then(sniff::by_name);
    let content_type = match (by_name, &block) {
        (Some(t), _) => t,
        (None, Some(data)) => sniff::sniff(data).to_owned(),
        (None, None) => {
            let sniffed = state
                .read(move |s| -> Result<&'static str, ExportError> {
                    let mut head = Vec::new();
                    for chunk in FileRange::new(cid, 0, sniff::SNIFF_LEN as u64).iter(s) {
                        head.extend_from_slice(&chunk?);
                    }
                    Ok(sniff::sniff(&head))
                })
                .await?;
            sniffed.map_err(|e| path.error(e))?.to_owned()
        }
    };
    let (start, end) = range.unwrap_or((0, size));
    let body = if head || start == end {
        Body::empty()
    } else if st.kind == NodeKind::Raw {
        // One raw block (a live segment, a small file): one read, sent as
        // one buffer, with no producer task or channel. Bounded: blocks are
        // at most a chunk (1 MiB) or a CAR section (4 MiB).
        let data = match block {
            Some(data) => data,
            None => state.block_for_send(cid).await?,
        };
        let (from, to) = (start as usize, (end as usize).min(data.len()));
        Body::from(data.slice(from.min(to)..to))
    } else {
        stream(state.clone(), FileRange::new(cid, start, end - start))
    };
    let mut resp = body.into_response();
    file_headers(
        resp.headers_mut(),
        value(&content_type),
        end - start,
        &etag,
        params.filename.as_deref(),
        params.download.as_deref() == Some("true"),
    );
    if range.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        resp.headers_mut().insert(
            header::CONTENT_RANGE,
            value(&format!("bytes {start}-{}/{size}", end - 1)),
        );
    }
    Ok(resp)
}

/// The headers of a file's bytes (`len` of them): type, length, ranges,
/// ETag and the disposition a `filename` or `download` asks for.
fn file_headers(
    h: &mut HeaderMap,
    content_type: HeaderValue,
    len: u64,
    etag: &str,
    filename: Option<&str>,
    download: bool,
) {
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, value(etag));
    let kind = if download { "attachment" } else { "inline" };
    match filename {
        Some(name) => {
            h.insert(header::CONTENT_DISPOSITION, disposition(kind, name));
        }
        None if download => {
            h.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment"),
            );
        }
        None => {}
    }
}

/// What every `/ipfs` answer carries: immutable caching (unless the
/// answer set its own), the path asked for and the CIDs it went through.
fn ipfs_headers(h: &mut HeaderMap, path: &str, roots: &str) {
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    }
    h.insert(X_IPFS_PATH.clone(), value(path));
    h.insert(X_IPFS_ROOTS.clone(), value(roots));
}

/// A body produced one block read at a time.
trait Step: Send + 'static {
    fn step(&mut self, store: &dyn Blockstore) -> Result<Option<Bytes>, ExportError>;

    /// Blocks the next steps will want, to fetch along with a missing one.
    fn upcoming(&self) -> Vec<Cid> {
        Vec::new()
    }
}

impl Step for FileRange {
    fn step(&mut self, store: &dyn Blockstore) -> Result<Option<Bytes>, ExportError> {
        self.next_chunk(store)
    }

    fn upcoming(&self) -> Vec<Cid> {
        FileRange::upcoming(self, READ_AHEAD).collect()
    }
}

/// A CAR: the header, then one section per block of the walk.
struct CarBody {
    header: Option<Vec<u8>>,
    walk: DagWalk,
}

impl Step for CarBody {
    fn step(&mut self, store: &dyn Blockstore) -> Result<Option<Bytes>, ExportError> {
        if let Some(h) = self.header.take() {
            return Ok(Some(h.into()));
        }
        Ok(self
            .walk
            .next_block(store)?
            .map(|b| car::section(&b.cid, &b.data).into()))
    }
}

/// Streams `body`: a task runs one step per blocking call and feeds a
/// bounded channel. When the client goes away the channel closes and the
/// task stops. A block missing mid-stream is fetched from peers when the
/// state fetches, and the step runs again (the exporter's readers stay put
/// on a missing block); when it cannot be had, or a block is bad, the body
/// ends with an error, so the client sees a cut connection rather than a
/// short file that looks complete.
fn stream(state: AppState, body: impl Step) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(BODY_CHANNEL);
    let producer = async move {
        let mut body = Some(body);
        while let Some(mut b) = body.take() {
            let fetches = state.fetches();
            let stepped = state
                .read_once(move |s| {
                    let r = b.step(s);
                    // What else is missing ahead, to fetch with it.
                    let ahead: Vec<Cid> = match r {
                        Err(ExportError::BlockNotFound { cid }) if fetches => b
                            .upcoming()
                            .into_iter()
                            .filter(|c| *c != cid && !matches!(s.has(c), Ok(true)))
                            .collect(),
                        _ => Vec::new(),
                    };
                    (b, r, ahead)
                })
                .await;
            let sent = match stepped {
                Ok((b, Ok(Some(bytes)), _)) => {
                    body = Some(b);
                    tx.send(Ok(bytes)).await
                }
                Ok((b, Err(ExportError::BlockNotFound { cid }), ahead)) if fetches => {
                    let all = std::iter::once(cid).chain(ahead).map(|c| state.fetch(c));
                    match futures::future::try_join_all(all).await.map(|_| ()) {
                        Ok(()) => {
                            body = Some(b);
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "response body cut short");
                            tx.send(Err(std::io::Error::other("content unavailable")))
                                .await
                        }
                    }
                }
                Ok((_, Ok(None), _)) => return,
                Ok((_, Err(e), _)) => {
                    tracing::warn!(error = %e, "response body cut short");
                    tx.send(Err(std::io::Error::other("content unavailable")))
                        .await
                }
                // Already logged by `read`.
                Err(_) => tx.send(Err(std::io::Error::other("internal error"))).await,
            };
            if sent.is_err() {
                return;
            }
        }
    };
    tokio::spawn(producer.in_current_span());
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

#[cfg(test)]
mod tests;
