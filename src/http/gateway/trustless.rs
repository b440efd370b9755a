//! The trustless gateway's answers: `?format=raw`, the block at the end of
//! the path as it is; `?format=car`, the blocks proving the path and then
//! the DAG at its end (`dag-scope`, `entity-bytes`), streamed as a CARv1
//! whose bytes are the same for the same request, so its ETag is strong.

use super::body::{stream, Step};
use super::negotiate::{CAR_TYPE, RAW_TYPE};
use super::{disposition, not_modified, not_modified_response, value, ContentPath, Params};
use super::{AppState, GatewayError};
use crate::store::{car, BlockRead, IDENTITY};
use crate::unixfs::export::walk::{DagScope, DagWalk, EntityBytes};
use crate::unixfs::export::{self, ExportError, Resolved};
use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// `?format=raw`: the block at the end of the path, verbatim.
pub(super) async fn raw_block(
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
pub(super) async fn car(
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

/// A CAR: the header, then one section per block of the walk.
struct CarBody {
    header: Option<Vec<u8>>,
    walk: DagWalk,
}

impl Step for CarBody {
    fn step(&mut self, store: &dyn BlockRead) -> Result<Option<Bytes>, ExportError> {
        if let Some(h) = self.header.take() {
            return Ok(Some(h.into()));
        }
        Ok(self
            .walk
            .next_block(store)?
            .map(|b| car::section(&b.cid, &b.data).into()))
    }
}
