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
//!
//! A closed low-latency segment is not one block but a UnixFS file whose
//! leaves are its parts' raw blocks (see `hls::streams::lowlatency`). Such
//! a "flat" file (a root with no bytes of its own over raw leaves only) is
//! remembered by its root once the router has served it ([`FlatFiles`]),
//! and answered here too when every leaf is at hand: the body is the
//! leaves' mappings in order, so it goes out with sendfile like a one-block
//! segment, without a read task, a channel or heap buffers.

use super::body::Step;
use super::deserialized::file_headers;
use super::{ipfs_headers, value, AppState, EXPOSED};
use crate::http::sniff;
use crate::store::{BlockRead, DAG_PB, IDENTITY, RAW};
use crate::unixfs::export::ExportError;
use crate::unixfs::pb::{DataType, PbNode, UnixfsData};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request};
use axum::response::Response;
use bytes::Bytes;
use cid::Cid;
use std::collections::VecDeque;
use std::sync::{Arc, LazyLock, Mutex};

/// Flat files remembered: the newest segments of a few live streams.
pub(in crate::http) const FLAT_KEPT: usize = 64;
/// Most leaves of a flat file taken: a 12 s segment of 200 ms parts has
/// 60; one root node holds at most 1024 links as we and kubo build them.
const FLAT_MAX_LEAVES: usize = 1024;

/// A UnixFS file whose root holds no bytes of its own and links only raw
/// leaves: its bytes are the leaves' bytes, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::http) struct FlatFile {
    /// The leaves with their sizes, in order.
    pub leaves: Vec<(Cid, u64)>,
    /// The file's size: the sum of the leaves'.
    pub size: u64,
}

impl FlatFile {
    /// The flat layout of the dag-pb block `root`, if it has one.
    pub fn of(root: &[u8]) -> Option<Self> {
        let node = PbNode::decode(root).ok()?;
        let data = UnixfsData::decode(node.data.as_deref()?).ok()?;
        if data.kind != DataType::File
            || data.data.as_ref().is_some_and(|d| !d.is_empty())
            || node.links.is_empty()
            || node.links.len() > FLAT_MAX_LEAVES
            || node.links.len() != data.blocksizes.len()
        {
            return None;
        }
        let mut leaves = Vec::with_capacity(node.links.len());
        for (link, &len) in node.links.iter().zip(&data.blocksizes) {
            let cid = Cid::try_from(link.hash.as_slice()).ok()?;
            if cid.codec() != RAW || cid.hash().code() == IDENTITY {
                return None;
            }
            leaves.push((cid, len));
        }
        let size = data
            .blocksizes
            .iter()
            .try_fold(0u64, |a, &b| a.checked_add(b))?;
        (data.filesize.unwrap_or(size) == size).then_some(Self { leaves, size })
    }
}

/// The flat files served lately, by root, most recent first; bounded by
/// [`FLAT_KEPT`].
#[derive(Default)]
pub(in crate::http) struct FlatFiles(Mutex<VecDeque<(Cid, Arc<FlatFile>)>>);

impl FlatFiles {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Cid, Arc<FlatFile>)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The layout of `root`, when remembered.
    pub fn get(&self, root: &Cid) -> Option<Arc<FlatFile>> {
        self.lock()
            .iter()
            .find(|(c, _)| c == root)
            .map(|(_, f)| f.clone())
    }

    /// Remembers the layout of `root` as the most recent.
    pub fn remember(&self, root: Cid, file: Arc<FlatFile>) {
        let mut kept = self.lock();
        kept.retain(|(c, _)| *c != root);
        kept.push_front((root, file));
        kept.truncate(FLAT_KEPT);
    }
}

/// A flat file's body, a leaf per step, each as it goes out (mapped, sent
/// from its file): `http::gateway::body`'s stream with no copy.
pub(super) struct FlatBody {
    file: Arc<FlatFile>,
    next: usize,
}

impl FlatBody {
    pub fn new(file: Arc<FlatFile>) -> Self {
        Self { file, next: 0 }
    }
}

impl Step for FlatBody {
    fn step(&mut self, store: &dyn BlockRead) -> Result<Option<Bytes>, ExportError> {
        let Some(&(cid, len)) = self.file.leaves.get(self.next) else {
            return Ok(None);
        };
        let bytes = store
            .get_for_send(&cid)
            .map_err(ExportError::Store)?
            .ok_or(ExportError::BlockNotFound { cid })?;
        if bytes.len() as u64 != len {
            return Err(ExportError::Malformed {
                cid,
                reason: format!("{} bytes where its parent says {len}", bytes.len()),
            });
        }
        self.next += 1;
        Ok(Some(bytes))
    }

    fn upcoming(&self) -> Vec<Cid> {
        let rest = self.file.leaves.iter().skip(self.next);
        rest.take(super::body::READ_AHEAD)
            .map(|(c, _)| *c)
            .collect()
    }
}

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

/// The answer to `req` if it asks for a raw block at hand, or a flat file
/// remembered whose leaves are all at hand, and nothing more; `None` sends
/// it through the router.
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
    if cid.hash().code() == IDENTITY {
        return None;
    }
    // The body's buffers (a raw block's one, or a flat file's leaves).
    let mut chunks = match cid.codec() {
        RAW => vec![state.at_hand(&cid)?],
        DAG_PB => {
            let flat = state.flat_files.get(&cid)?;
            let mut chunks = Vec::with_capacity(flat.leaves.len());
            for (leaf, len) in &flat.leaves {
                let data = state.at_hand(leaf)?;
                if data.len() as u64 != *len {
                    return None;
                }
                chunks.push(data);
            }
            chunks
        }
        _ => return None,
    };
    let size: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    let content_type = match filename.and_then(sniff::by_name) {
        Some(t) => value(&t),
        // The sniffer reads the first 512 bytes; a leaf is larger than
        // that unless the file is (then it is one leaf).
        None => HeaderValue::from_static(sniff::sniff(&chunks[0])),
    };
    let cid_string = cid.to_string();
    let mut h = HeaderMap::with_capacity(16);
    let etag = format!("\"{cid_string}\"");
    file_headers(&mut h, content_type, size, &etag, filename, false);
    // A stream's site is a directory, never a file by its CID.
    ipfs_headers(&mut h, uri.path(), &cid_string, false);
    for (n, v) in CORS.iter() {
        h.insert(n.clone(), v.clone());
    }
    let body = if head || size == 0 {
        Body::empty()
    } else if chunks.len() == 1 {
        Body::from(chunks.swap_remove(0))
    } else {
        Body::from_stream(futures::stream::iter(
            chunks.into_iter().map(Ok::<_, std::convert::Infallible>),
        ))
    };
    let mut resp = Response::new(body);
    *resp.headers_mut() = h;
    Some(resp)
}
