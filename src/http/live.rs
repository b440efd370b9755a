//! Live routes: the playlists of each stream and the stream list API.
//!
//! `GET /live/{name}.m3u8` is the sliding live window, `GET
//! /live/{name}/archive.m3u8` the whole current (or last) session; both
//! name segments as `/ipfs/<cid>`, so any path gateway serves the media.
//! `GET /api/v1/streams` lists streams and sessions (never a stream key).

use super::{AppState, GatewayError};
use axum::extract::{Path, State};
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

async fn live_playlist(
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> Result<Response, GatewayError> {
    let name = file.strip_suffix(".m3u8").ok_or(GatewayError::NoRoute)?;
    let streams = state.streams().ok_or(GatewayError::NoRoute)?;
    let text = streams
        .live_playlist(name)
        .ok_or_else(|| GatewayError::NoSession {
            name: name.to_owned(),
        })?;
    // A live playlist changes with every segment: never cache it.
    Ok(playlist(text, "no-cache, no-store"))
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
