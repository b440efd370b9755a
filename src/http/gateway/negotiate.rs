//! Content negotiation: which response format a request asks for.
//!
//! `?format=raw|car` wins over `Accept`; of the `Accept` media ranges, the
//! most preferred one this gateway tells apart decides (the raw block, a
//! CAR, or anything else for the content itself), and CAR parameters
//! (`version`, `order`, `dups`) come from the query or else from that range.

use super::{GatewayError, Params};
use axum::http::header::{self, HeaderMap};

pub(super) const RAW_TYPE: &str = "application/vnd.ipld.raw";
pub(super) const CAR_TYPE: &str = "application/vnd.ipld.car";

/// The response format asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// UnixFS content: file bytes or a directory listing.
    Deserialized,
    /// The block itself.
    Raw,
    /// A CARv1; `dups` repeats blocks the walk meets again.
    Car { dups: bool },
}

impl Format {
    pub(super) fn query_value(self) -> Option<&'static str> {
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
pub(super) fn negotiate(
    params: &Params,
    headers: &HeaderMap,
) -> Result<(Format, bool), GatewayError> {
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
