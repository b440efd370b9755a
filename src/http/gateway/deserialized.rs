//! UnixFS content: a file's bytes (whole or one `Range`, typed by name or
//! by sniffing its first bytes), a symlink's target, or a directory's
//! `index.html`, else a generated listing; a directory asked for without the
//! trailing slash is redirected to it.

use super::body::stream;
use super::hot::{FlatBody, FlatFile};
use super::{disposition, AppState, GatewayError};
use super::{not_modified, not_modified_response, value, ContentPath, Params};
use crate::http::{html, sniff};
use crate::store::{DAG_PB, IDENTITY, RAW};
use crate::unixfs::export::{self, ExportError, FileRange, NodeKind, Resolved, Stat};
use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cid::Cid;
use std::sync::Arc;

/// UnixFS content: a file's bytes, a directory's `index.html` or listing.
pub(super) async fn deserialized(
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
/// (the whole file is sent), as RFC 9110 allows. Positions are any run of
/// digits (RFC 9110 section 14.1.1 sets no limit): one too large for a
/// `u64` is still a position past the end, so it is read as `u64::MAX`. A
/// last position past the end is clamped to the last byte, and a suffix
/// longer than the file selects all of it (206 either way: `bytes=0-` and
/// twenty digits are a satisfiable range); a first position at or past the
/// end is unsatisfiable (416 with `Content-Range: bytes */LEN`).
pub(super) fn byte_range(
    headers: &HeaderMap,
    size: u64,
) -> Result<Option<(u64, u64)>, GatewayError> {
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
        let Some(n) = position(b) else {
            return Ok(None);
        };
        (size.saturating_sub(n), size)
    } else {
        let Some(start) = position(a) else {
            return Ok(None);
        };
        let end = if b.is_empty() {
            size
        } else {
            match position(b) {
                Some(e) if e >= start => e.saturating_add(1).min(size),
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

/// A byte position: one or more ASCII digits (no sign, unlike
/// `u64::from_str`), saturating at `u64::MAX`.
fn position(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse().unwrap_or(u64::MAX))
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
    } else if cid.codec() == DAG_PB && (start, end) == (0, size) {
        match flat_file(state, cid, size).await? {
            // Leaf by leaf, each sent from its file, and remembered for the
            // hot path.
            Some(flat) => stream(state.clone(), FlatBody::new(flat)),
            None => stream(state.clone(), FileRange::new(cid, start, end - start)),
        }
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

/// The flat layout of the file `cid` of `size` bytes (a root over raw
/// leaves only, as a closed LL-HLS segment is), remembered or read from its
/// root; `None` for any other file.
async fn flat_file(
    state: &AppState,
    cid: Cid,
    size: u64,
) -> Result<Option<Arc<FlatFile>>, GatewayError> {
    if let Some(flat) = state.flat_files.get(&cid) {
        return Ok(Some(flat));
    }
    let root = state
        .read(move |s| s.get(&cid))
        .await?
        .map_err(|e| GatewayError::internal("block store", e))?;
    let Some(flat) = root.as_deref().and_then(FlatFile::of) else {
        return Ok(None);
    };
    if flat.size != size {
        return Ok(None);
    }
    let flat = Arc::new(flat);
    state.flat_files.remember(cid, flat.clone());
    Ok(Some(flat))
}

/// The headers of a file's bytes (`len` of them): type, length, ranges,
/// ETag and the disposition a `filename` or `download` asks for.
pub(super) fn file_headers(
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
