//! Live routes: the playlists of each stream and the stream list API.
//!
//! `GET /live/{name}.m3u8` is the sliding live window, `GET
//! /live/{name}/archive.m3u8` the whole current (or last) session; both
//! name segments as `/ipfs/<cid>`, so any path gateway serves the media.
//! `GET /api/v1/streams` lists streams and sessions (never a stream key).
//!
//! A stream with parts gets the LL-HLS live playlist instead, with
//! blocking reload (RFC 8216bis 6.2.5.2): `_HLS_msn=M[&_HLS_part=P]` is
//! held until segment M (or its part P) is listed, at most three target
//! durations (then 503); `_HLS_part` alone, or an M past the next-but-one
//! segment, is 400; `_HLS_skip=YES` gives the delta playlist. A preload
//! hint, `GET /live/{name}/parts/{msn}.{index}.m4s`, is held the same way
//! until that part is stored and then answered with its bytes (no
//! redirect to its `/ipfs/` URL: the second request costs a round trip at
//! the live edge, 7 ms median on loopback, more across a network). Held requests are waiters on the stream's `watch` view, at most
//! [`MAX_HELD`] at once; a publisher that stops releases them.

use super::{AppState, GatewayError};
use crate::hls::streams::{LlView, MAX_HELD};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

/// The media type of HLS playlists.
const M3U8: &str = "application/vnd.apple.mpegurl";

/// The live routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/live/{file}", get(live_playlist))
        .route("/live/{name}/archive.m3u8", get(archive_playlist))
        .route("/live/{name}/parts/{part}", get(part_hint))
        .route("/api/v1/streams", get(list))
}

fn playlist(text: String, cache: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, M3U8),
            (header::CACHE_CONTROL, cache),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        text,
    )
        .into_response()
}

/// The LL-HLS delivery directives of a playlist request.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Directives {
    #[serde(rename = "_HLS_msn")]
    msn: Option<u64>,
    #[serde(rename = "_HLS_part")]
    part: Option<u32>,
    #[serde(rename = "_HLS_skip")]
    skip: Option<String>,
}

async fn live_playlist(
    State(state): State<AppState>,
    Path(file): Path<String>,
    Query(d): Query<Directives>,
) -> Result<Response, GatewayError> {
    let name = file.strip_suffix(".m3u8").ok_or(GatewayError::NoRoute)?;
    let streams = state.streams().ok_or(GatewayError::NoRoute)?;
    if d.part.is_some() && d.msn.is_none() {
        return Err(GatewayError::BadRequest(
            "_HLS_part needs _HLS_msn (RFC 8216bis 6.2.5.2)".into(),
        ));
    }
    if let Some(rx) = streams.ll_view(name) {
        if !rx.borrow().text.is_empty() {
            return ll_playlist(streams, rx, d).await;
        }
    }
    let text = streams
        .live_playlist(name)
        .ok_or_else(|| GatewayError::NoSession {
            name: name.to_owned(),
        })?;
    // A live playlist changes with every segment: never cache it.
    Ok(playlist(text, "no-cache, no-store"))
}

/// Waits until `reached` holds for the view (or the session ends), at most
/// three target durations.
async fn wait_view(
    streams: &crate::hls::streams::Streams,
    mut rx: tokio::sync::watch::Receiver<std::sync::Arc<LlView>>,
    what: impl Fn() -> String,
    reached: impl Fn(&LlView) -> bool,
) -> Result<std::sync::Arc<LlView>, GatewayError> {
    let view = rx.borrow_and_update().clone();
    if view.ended || reached(&view) {
        return Ok(view);
    }
    let secs = view.target_duration_secs * 3;
    let Some(_slot) = streams.hold() else {
        tracing::debug!("{MAX_HELD} requests held already");
        return Err(GatewayError::Overloaded);
    };
    let waited = tokio::time::timeout(
        std::time::Duration::from_secs(secs),
        rx.wait_for(|v| v.ended || reached(v)),
    )
    .await;
    match waited {
        Ok(Ok(v)) => Ok(v.clone()),
        // The session's pipeline is gone: its last view is final.
        Ok(Err(_)) => Ok(view),
        Err(_) => Err(GatewayError::HeldTooLong { what: what(), secs }),
    }
}

async fn ll_playlist(
    streams: &crate::hls::streams::Streams,
    rx: tokio::sync::watch::Receiver<std::sync::Arc<LlView>>,
    d: Directives,
) -> Result<Response, GatewayError> {
    let mut view = rx.borrow().clone();
    if let Some(msn) = d.msn {
        if msn > view.position.next_msn + 1 {
            return Err(GatewayError::BadRequest(format!(
                "_HLS_msn={msn} is past the next-but-one segment ({}); reload without it",
                view.position.next_msn + 1
            )));
        }
        let part = d.part;
        let what = || match part {
            Some(p) => format!("part {p} of segment {msn}"),
            None => format!("segment {msn}"),
        };
        view = wait_view(streams, rx, what, |v| v.position.reached(msn, part)).await?;
    }
    let text = if d.skip.as_deref() == Some("YES") {
        view.delta.clone()
    } else {
        view.text.clone()
    };
    Ok(playlist(text.to_string(), "no-cache, no-store"))
}

/// A preload hint: the part's bytes once it is stored.
async fn part_hint(
    State(state): State<AppState>,
    Path((name, part)): Path<(String, String)>,
) -> Result<Response, GatewayError> {
    let bad = || GatewayError::BadRequest(format!("{part:?} is not MSN.INDEX.m4s"));
    let (msn, index) = part
        .strip_suffix(".m4s")
        .and_then(|p| p.split_once('.'))
        .ok_or_else(bad)?;
    let msn: u64 = msn.parse().map_err(|_| bad())?;
    let index: u32 = index.parse().map_err(|_| bad())?;
    let streams = state.streams().ok_or(GatewayError::NoRoute)?;
    let rx = streams
        .ll_view(&name)
        .ok_or_else(|| GatewayError::NoSession { name: name.clone() })?;
    // Listed (so stored), or its segment closed without it: either way
    // waiting is over.
    let held = |v: &LlView| v.position.reached(msn, Some(index));
    if msn > rx.borrow().position.next_msn + 1 {
        return Err(GatewayError::NoPart { name, msn, index });
    }
    let view = wait_view(
        streams,
        rx,
        || format!("part {index} of segment {msn}"),
        held,
    )
    .await?;
    let Some((_, _, bytes)) = view
        .recent
        .iter()
        .find(|(m, i, _)| (*m, *i) == (msn, index))
    else {
        return Err(GatewayError::NoPart { name, msn, index });
    };
    Ok((
        [
            (header::CONTENT_TYPE, "video/mp4"),
            (header::CACHE_CONTROL, "public, max-age=60"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        bytes.clone(),
    )
        .into_response())
}

async fn archive_playlist(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, GatewayError> {
    let streams = state.streams().ok_or(GatewayError::NoRoute)?;
    let (text, ended) = streams
        .archive_playlist(&name)
        .ok_or_else(|| GatewayError::NoSession {
            name: name.to_owned(),
        })?;
    // An ended session's archive still changes when the next one starts.
    let cache = if ended {
        "no-cache"
    } else {
        "no-cache, no-store"
    };
    Ok(playlist(text, cache))
}

async fn list(State(state): State<AppState>) -> Response {
    let streams = state.streams().map(|s| s.list()).unwrap_or_default();
    // Each stream's IPNS name: ours for our streams, the origin's for
    // mirrored ones; none when the p2p node is off.
    let streams: Vec<serde_json::Value> = streams
        .into_iter()
        .map(|s| {
            let ipns = match (&s.mirror_of, state.naming()) {
                (Some(origin), _) => Some(origin.clone()),
                (None, Some(n)) => n.name_of(&s.name).ok().map(|n| n.to_string()),
                (None, None) => None,
            };
            let mut v = serde_json::to_value(&s).unwrap_or_default();
            v["ipns"] = ipns.into();
            v
        })
        .collect();
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Json(serde_json::json!({ "streams": streams })),
    )
        .into_response()
}
