//! Limits, the home page and the server loop.

use super::*;
use crate::config::HttpConfig;
use crate::store::{Block, MemStore, Multihash, StoreError, RAW};
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

/// A store whose reads take `delay`.
struct Slow {
    inner: MemStore,
    delay: Duration,
}

impl Blockstore for Slow {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        std::thread::sleep(self.delay);
        self.inner.get(cid)
    }
    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        self.inner.has(cid)
    }
    fn size(&self, cid: &Cid) -> Result<Option<u64>, StoreError> {
        self.inner.size(cid)
    }
    fn put_many(&self, blocks: &[Block]) -> Result<(), StoreError> {
        self.inner.put_many(blocks)
    }
    fn delete(&self, mh: &Multihash) -> Result<bool, StoreError> {
        self.inner.delete(mh)
    }
    fn keys(&self) -> Result<Vec<Multihash>, StoreError> {
        self.inner.keys()
    }
    fn get_by_hash(&self, mh: &Multihash) -> Result<Option<Bytes>, StoreError> {
        self.inner.get_by_hash(mh)
    }
}

fn slow_app(delay: Duration, config: HttpConfig) -> (Router, Cid) {
    let store = Slow {
        inner: MemStore::new(),
        delay,
    };
    let block = Block::new(cid::Version::V1, RAW, b"slow".to_vec());
    store.put(&block).unwrap();
    (router(AppState::new(Arc::new(store), config)), block.cid)
}

async fn status(app: &Router, uri: &str) -> StatusCode {
    let req = Request::get(uri).body(Body::empty()).unwrap();
    app.clone().oneshot(req).await.unwrap().status()
}

#[tokio::test]
async fn home_page() {
    let app = router(AppState::new(
        Arc::new(MemStore::new()),
        HttpConfig::default(),
    ));
    let resp = app
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("<title>meshcast</title>") && body.contains("href=\"/ipfs/bafkqaaa\""));
}

#[tokio::test]
async fn slow_responses_time_out() {
    let config = HttpConfig {
        request_timeout: Duration::from_millis(50),
        ..HttpConfig::default()
    };
    let (app, cid) = slow_app(Duration::from_millis(400), config);
    assert_eq!(
        status(&app, &format!("/ipfs/{cid}")).await,
        StatusCode::REQUEST_TIMEOUT
    );
}

#[tokio::test]
async fn requests_beyond_the_limit_get_503() {
    let config = HttpConfig {
        max_concurrent_requests: 1,
        ..HttpConfig::default()
    };
    let (app, cid) = slow_app(Duration::from_millis(300), config);
    let uri = format!("/ipfs/{cid}");
    let first = tokio::spawn({
        let (app, uri) = (app.clone(), uri.clone());
        async move { status(&app, &uri).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let req = Request::get(&uri).body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    // The slot is free again once the first response is done.
    assert_eq!(status(&app, &uri).await, StatusCode::OK);
}

/// Sends a GET for `/` and reads until the page has arrived.
async fn fetch_home(conn: &mut tokio::net::TcpStream) -> String {
    conn.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    read_page(conn).await
}

async fn read_page(conn: &mut tokio::net::TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"</html>\n") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed early");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn serve_limits_connections_and_shuts_down() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = HttpConfig {
        max_connections: 1,
        ..HttpConfig::default()
    };
    let state = AppState::new(Arc::new(MemStore::new()), config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async {
        let _ = stopped.await;
    }));

    let mut a = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(fetch_home(&mut a).await.starts_with("HTTP/1.1 200"));
    // The only slot is held by `a` (kept alive), so `b` waits in the backlog.
    let mut b = tokio::net::TcpStream::connect(addr).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(300), fetch_home(&mut b)).await;
    assert!(
        waiting.is_err(),
        "second connection served beyond the limit"
    );
    drop(a);
    let page = tokio::time::timeout(Duration::from_secs(5), read_page(&mut b))
        .await
        .expect("served once the first connection closed");
    assert!(page.starts_with("HTTP/1.1 200"));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
}
