//! The one HTTP error type: each variant maps to a status code and a message
//! the user can act on. Internal failures are logged where they happen and
//! answered with a bare 500, so no store path or OS error leaks out.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cid::Cid;
use thiserror::Error;

/// Why the gateway could not answer a request.
#[derive(Debug, Error)]
pub enum GatewayError {
    /// The CID in the URL does not parse.
    #[error("invalid CID {input:?}: {source}. A CID looks like bafy… (CIDv1) or Qm… (CIDv0)")]
    InvalidCid {
        /// What the URL held.
        input: String,
        /// Why it is not a CID.
        source: cid::Error,
    },
    /// A malformed request: bad path, query parameter or header.
    #[error("{0}")]
    BadRequest(String),
    /// `Cache-Control: only-if-cached` and the block is not held locally.
    #[error("block {cid} is not cached here")]
    NotCached {
        /// The block asked for.
        cid: Cid,
    },
    /// A block of the requested DAG is not in the store.
    #[error("block {cid} is not in this node's store")]
    BlockNotFound {
        /// The missing block.
        cid: Cid,
    },
    /// The content path does not exist in the DAG.
    #[error("{path} not found: {source}")]
    PathNotFound {
        /// The part of the content path that exists, plus the missing segment.
        path: String,
        /// What was missing (boxed to keep the error small).
        source: Box<crate::unixfs::export::ExportError>,
    },
    /// A `Range` outside the file.
    #[error("range not satisfiable: the file has {size} bytes")]
    RangeNotSatisfiable {
        /// The file's size.
        size: u64,
    },
    /// Content the gateway cannot render (not UnixFS, or a format it lacks).
    #[error("{0}")]
    NotImplemented(String),
    /// A block in the store does not decode as what its CID says.
    #[error("block {cid} is corrupt or not valid UnixFS")]
    Malformed {
        /// The bad block.
        cid: Cid,
    },
    /// A stream with no session to play: unknown, or never published.
    #[error("stream {name} has no session yet; publish to it first")]
    NoSession {
        /// The stream's public name.
        name: String,
    },
    /// An IPNS name could not be resolved.
    #[error("cannot resolve /ipns/{name}: {reason}")]
    NameNotFound {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// No provider is known for a CID.
    #[error("no provider known for {cid}")]
    NoProviders {
        /// The CID.
        cid: cid::Cid,
    },
    /// The libp2p node is turned off.
    #[error("the p2p node is off; start serve without --no-p2p")]
    P2pOff,
    /// Nothing is served at this URL.
    #[error("no such page; content is served under /ipfs/{{cid}}")]
    NoRoute,
    /// A missing block was not fetched from peers in time.
    #[error("{0}; try again later")]
    FetchTimeout(crate::store::fetch::FetchError),
    /// A missing block could not be fetched from peers.
    #[error("{0}")]
    FetchFailed(crate::store::fetch::FetchError),
    /// The response was not ready within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// Too many requests are being served at once.
    #[error("too many requests in flight; retry shortly")]
    Overloaded,
    /// A blocking playlist reload or preload hint waited its limit (three
    /// target durations) in vain.
    #[error("{what} did not appear within {secs} s; reload the playlist")]
    HeldTooLong {
        /// What was waited for.
        what: String,
        /// The limit.
        secs: u64,
    },
    /// A part that will never exist (its segment closed before it).
    #[error("part {index} of segment {msn} of stream {name} does not exist; reload the playlist")]
    NoPart {
        /// The stream.
        name: String,
        /// The segment's media sequence number.
        msn: u64,
        /// The part's index.
        index: u32,
    },
    /// A failure inside the gateway (already logged).
    #[error("internal error")]
    Internal,
}

impl GatewayError {
    /// Logs an internal failure with its context and returns the opaque
    /// error the client sees.
    pub fn internal(what: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "{what} failed");
        Self::Internal
    }

    /// The status code this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidCid { .. } | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotCached { .. } => StatusCode::PRECONDITION_FAILED,
            Self::BlockNotFound { .. }
            | Self::PathNotFound { .. }
            | Self::NoSession { .. }
            | Self::NoRoute
            | Self::NameNotFound { .. }
            | Self::NoProviders { .. }
            | Self::NoPart { .. } => StatusCode::NOT_FOUND,
            Self::HeldTooLong { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::P2pOff => StatusCode::SERVICE_UNAVAILABLE,
            Self::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Malformed { .. } | Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::FetchTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::FetchFailed(_) => StatusCode::BAD_GATEWAY,
            Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        // The spec asks for 412 without payload.
        let body = match self {
            Self::NotCached { .. } => String::new(),
            ref e => format!("{e}\n"),
        };
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        // Errors may change (a block may arrive later): never cache them long.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            Self::RangeNotSatisfiable { size } => {
                let v = format!("bytes */{size}");
                h.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&v).expect("ASCII"),
                );
            }
            Self::Overloaded => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}
