//! The hot path: a live segment that every viewer asks for.
//!
//! While a stream is live, nearly every request is `GET /ipfs/{cid}?filename=N.m4s`
//! for one of the few newest segments: a raw block that the store holds as
//! a recently sent mapping ([`AppState::at_hand`]). The answer depends on
//! nothing but the block and the file name, so [`hot_block`] builds it
//! before the request enters the router: no route matching, no middleware
//! futures, no header extraction, no content-path resolution, which is most
//! of the CPU such a request costs besides sending the bytes (sent from the
//! block's file, see `http::conn`).
//!
//! It takes only requests whose every header is one the gateway ignores or
//! treats the same for all (`Origin`: anyone may read), with no query but
//! `filename` of plain characters; anything else (ranges, revalidation,
//! content negotiation, `only-if-cached`, paths below the CID, blocks not at
//! hand) goes through the router as before. Its responses are the router's,
//! byte for byte but the date: the headers come from the same functions as
//! the router's (`file_headers`, `ipfs_headers`), the CORS ones are the
//! layer's, precomputed, and a test compares the two; they are not counted
//! against `max_concurrent_requests`, since they wait for nothing, and
//! they are not traced.

use super::deserialized::file_headers;
use super::{ipfs_headers, value, AppState, EXPOSED};
use crate::http::sniff;
use crate::store::{IDENTITY, RAW};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request};
use axum::response::Response;
use cid::Cid;
use std::sync::LazyLock;

/// What the CORS layer of the `/ipfs` routes adds to a `GET` or `HEAD`.
static CORS: LazyLock<[(HeaderName, HeaderValue); 3]> = LazyLock::new(|| {
    let exposed: Vec<String> = EXPOSED.iter().map(|n| n.as_str().to_owned()).collect();
    [
        (
            header::VARY,
            HeaderValue::from_static(
                "origin, access-control-request-method, access-control-request-headers",
            ),
        ),
        (
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        ),
        (
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            value(&exposed.join(",")),
        ),
    ]
});

/// Whether the gateway's answer is the same with or without this request
/// header.
fn ignored(name: &HeaderName, value: &HeaderValue) -> bool {
    match *name {
        header::HOST
        | header::USER_AGENT
        | header::ACCEPT_ENCODING
        | header::ACCEPT_LANGUAGE
        | header::CONNECTION
        | header::REFERER
        | header::ORIGIN
        | header::PRAGMA
        | header::DNT => true,
        // What a browser's media request or XHR sends; a specific type is
        // content negotiation.
        header::ACCEPT => value.as_bytes() == b"*/*",
        // Only `only-if-cached` changes the answer.
        header::CACHE_CONTROL => !value.as_bytes().windows(14).any(|w| w == b"only-if-cached"),
        _ => {
            let n = name.as_str();
            n.starts_with("sec-fetch-") || n.starts_with("sec-ch-")
        }
    }
}

/// The `filename` of a query that holds nothing else, if it is plain.
pub(super) fn plain_filename(query: Option<&str>) -> Option<Option<&str>> {
    let Some(q) = query else {
        return Some(None);
    };
    let name = q.strip_prefix("filename=")?;
    let plain = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    plain.then_some(Some(name))
}

/// The answer to `req` if it asks for a raw block at hand and nothing more;
/// `None` sends it through the router.
pub fn hot_block<B>(state: &AppState, req: &Request<B>) -> Option<Response> {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => return None,
    };
    let uri = req.uri();
    let cid_str = uri.path().strip_prefix("/ipfs/")?;
    if cid_str.is_empty() || cid_str.contains('/') {
        return None;
    }
    let filename = plain_filename(uri.query())?;
    if !req.headers().iter().all(|(n, v)| ignored(n, v)) {
        return None;
    }
    let cid = Cid::try_from(cid_str).ok()?;
    if cid.codec() != RAW || cid.hash().code() == IDENTITY {
        return None;
    }
    let data = state.at_hand(&cid)?;
    let content_type = match filename.and_then(sniff::by_name) {
        Some(t) => value(&t),
        None => HeaderValue::from_static(sniff::sniff(&data)),
    };
    let cid_string = cid.to_string();
    let mut h = HeaderMap::with_capacity(16);
    let etag = format!("\"{cid_string}\"");
    file_headers(
        &mut h,
        content_type,
        data.len() as u64,
        &etag,
        filename,
        false,
    );
    // A raw block is never a stream's site.
    ipfs_headers(&mut h, uri.path(), &cid_string, false);
    for (n, v) in CORS.iter() {
        h.insert(n.clone(), v.clone());
    }
    let body = if head || data.is_empty() {
        Body::empty()
    } else {
        Body::from(data)
    };
    let mut resp = Response::new(body);
    *resp.headers_mut() = h;
    Some(resp)
}
