//! The web UI, embedded in the binary: the stream list and the player.
//!
//! Flow: `GET /` is a static page whose script (`home.js`) fetches
//! `GET /api/v1/streams` and lists each stream, live or offline, with its
//! sessions and links to `/watch/{name}` (live) or
//! `/watch/{name}?session=<id>` / `?src=/ipfs/<cid>` (archives).
//! `GET /watch/{name}` is the player page; its script (`player.js`) picks the
//! playlist from the query string and plays it with the browser's own HLS
//! support or with hls.js over Media Source Extensions.
//!
//! Every asset is compiled in (see [`crate::assets`]), so the UI works on a
//! node without Internet access.
//!
//! Pages carry no data from the server but the validated stream name, which
//! is HTML-escaped anyway; the scripts write API data with `textContent`.

use super::html::escape;
use super::{AppState, GatewayError};
use crate::assets::{
    HLS_JS, HLS_JS_VERSION, HOME_JS, INDEX_HTML, PLAYER_JS, STYLE_CSS, WATCH_HTML,
};
use crate::name::{StreamName, MAX_STREAM_NAME_LEN as MAX_NAME_LEN};
use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// Scripts only from this origin (and hls.js's blob: worker); nothing
/// injected inline can run.
const CSP: &str = "default-src 'self'; script-src 'self' blob:; worker-src 'self' blob:; \
media-src 'self' blob: http: https:; connect-src 'self' http: https:; img-src 'self' data:; \
object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The UI's routes: `/`, `/watch/{name}` and `/assets/*`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/watch/{name}", get(watch))
        .route("/assets/hls.min.js", get(hls_js))
        .route("/assets/player.js", get(player_js))
        .route("/assets/home.js", get(home_js))
        .route("/assets/style.css", get(style_css))
}

pub(super) fn page(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the stream list.
async fn home() -> Response {
    page(INDEX_HTML.replace("{{version}}", env!("CARGO_PKG_VERSION")))
}

/// `GET /watch/{name}`: the player page for one stream.
async fn watch(Path(name): Path<String>) -> Result<Response, GatewayError> {
    if !StreamName::is_valid(&name) {
        // The name is not echoed: the error page is no place for markup.
        return Err(GatewayError::BadRequest(format!(
            "invalid stream name: use 1 to {MAX_NAME_LEN} letters, digits, '_' or '-'"
        )));
    }
    Ok(page(
        WATCH_HTML
            .replace("{{hls_version}}", HLS_JS_VERSION)
            .replace("{{name}}", &escape(&name)),
    ))
}

pub(super) fn asset(
    content_type: &'static str,
    cache: &'static str,
    body: &'static str,
) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

pub(super) const JS: &str = "text/javascript; charset=utf-8";

/// Our own scripts and styles change with every release: revalidate.
pub(super) const REVALIDATE: &str = "no-cache";

/// `GET /assets/hls.min.js`: pages link it with `?v=<version>`, so it can
/// be cached for good.
async fn hls_js() -> Response {
    asset(JS, "public, max-age=31536000, immutable", HLS_JS)
}

/// `GET /assets/player.js`.
async fn player_js() -> Response {
    asset(JS, REVALIDATE, PLAYER_JS)
}

/// `GET /assets/home.js`.
async fn home_js() -> Response {
    asset(JS, REVALIDATE, HOME_JS)
}

/// `GET /assets/style.css`.
async fn style_css() -> Response {
    asset("text/css; charset=utf-8", REVALIDATE, STYLE_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HttpConfig;
    use crate::store::MemStore;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use tower::ServiceExt;

    fn app() -> Router {
        super::super::router(AppState::new(
            Arc::new(MemStore::new()),
            HttpConfig::default(),
        ))
    }

    async fn get(uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let resp = app()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    fn header<'a>(h: &'a axum::http::HeaderMap, name: &str) -> &'a str {
        h.get(name).unwrap().to_str().unwrap()
    }

    #[tokio::test]
    async fn home_lists_streams_from_the_api() {
        let (status, h, body) = get("/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header(&h, "content-type"), "text/html; charset=utf-8");
        assert!(body.contains("<title>meshcast</title>"));
        assert!(body.contains(r#"<script src="/assets/home.js""#));
        assert!(body.contains(r#"id="streams""#));
        assert!(body.contains(env!("CARGO_PKG_VERSION")));
        assert!(!body.contains("{{"), "unfilled placeholder in {body}");
        assert!(HOME_JS.contains("/api/v1/streams"));
        assert!(
            !HOME_JS.contains("innerHTML"),
            "API data must not be parsed as HTML"
        );
    }

    #[tokio::test]
    async fn watch_page_embeds_the_player() {
        let (status, h, body) = get("/watch/my_stream-1").await;
        assert_eq!(status, StatusCode::OK);
        assert!(header(&h, "content-type").starts_with("text/html"));
        assert!(header(&h, "content-security-policy").contains("script-src 'self'"));
        assert!(body.contains(r#"data-name="my_stream-1""#));
        assert!(body.contains("<h1>my_stream-1</h1>"));
        assert!(body.contains(&format!(
            r#"<script src="/assets/hls.min.js?v={HLS_JS_VERSION}""#
        )));
        assert!(body.contains(r#"<script src="/assets/player.js""#));
        assert!(body.contains(r#"id="status""#) && body.contains("<video"));
        assert!(!body.contains("{{"), "unfilled placeholder in {body}");
    }

    #[tokio::test]
    async fn bad_stream_names_are_refused() {
        let long = format!("/watch/{}", "a".repeat(MAX_NAME_LEN + 1));
        for uri in [
            "/watch/%3Cscript%3E",
            "/watch/a%20b",
            "/watch/a.m3u8",
            "/watch/%C3%A9",
            "/watch/a%2Fb",
            long.as_str(),
        ] {
            let (status, _, body) = get(uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert!(!body.contains('<'), "{uri}: {body}");
        }
        let (status, _, _) = get(&format!("/watch/{}", "a".repeat(MAX_NAME_LEN))).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn names() {
        let valid_name = StreamName::is_valid;
        assert!(valid_name("live") && valid_name("A_b-9"));
        assert!(!valid_name("") && !valid_name("a b") && !valid_name("<x>"));
        assert!(!valid_name(&"x".repeat(MAX_NAME_LEN + 1)));
    }

    #[tokio::test]
    async fn assets_have_their_types() {
        for (uri, ty, needle) in [
            ("/assets/hls.min.js", JS, "Hls"),
            ("/assets/player.js", JS, "meshcastPlayer"),
            ("/assets/home.js", JS, "/api/v1/streams"),
            ("/assets/style.css", "text/css; charset=utf-8", "video"),
        ] {
            let (status, h, body) = get(uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            assert_eq!(header(&h, "content-type"), ty, "{uri}");
            assert_eq!(header(&h, "x-content-type-options"), "nosniff");
            assert!(body.contains(needle), "{uri}");
        }
        let (_, h, body) = get("/assets/hls.min.js").await;
        assert!(header(&h, "cache-control").contains("immutable"));
        assert_eq!(body.len(), HLS_JS.len());
        let (_, h, _) = get("/assets/player.js").await;
        assert_eq!(header(&h, "cache-control"), "no-cache");
    }
}
