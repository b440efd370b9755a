//! Limits, the home page and the server loop.

use super::*;
use crate::config::HttpConfig;
use crate::store::{Block, Blockstore, MemStore, StoreError, RAW};
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

/// A store whose reads take `delay`.
struct Slow {
    inner: MemStore,
    delay: Duration,
}

impl BlockRead for Slow {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        std::thread::sleep(self.delay);
        self.inner.get(cid)
    }
}

fn slow_app(delay: Duration, config: HttpConfig) -> (Router, Cid) {
    let store = Slow {
        inner: MemStore::new(),
        delay,
    };
    let block = Block::new(cid::Version::V1, RAW, b"slow".to_vec());
    store.inner.put(&block).unwrap();
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
async fn mesh_api_without_telemetry_shows_both_daemons_off() {
    let app = router(AppState::new(
        Arc::new(MemStore::new()),
        HttpConfig::default(),
    ));
    let resp = app
        .oneshot(Request::get("/api/v1/mesh").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["links"], serde_json::json!([]));
    assert_eq!(v["daemons"]["yggdrasil"]["state"], "off");
    assert_eq!(v["daemons"]["cjdns"]["state"], "off");
    assert!(v.get("self").is_some(), "{v}");
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
async fn serve_limits_connections_evicts_a_waiting_one_and_shuts_down() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = HttpConfig {
        max_connections: 1,
        ..HttpConfig::default()
    };
    let store = Slow {
        inner: MemStore::new(),
        delay: Duration::from_millis(1000),
    };
    let block = Block::new(cid::Version::V1, RAW, b"slow".to_vec());
    store.inner.put(&block).unwrap();
    let state = AppState::new(Arc::new(store), config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async {
        let _ = stopped.await;
    }));

    // `a` holds the only slot with a request in flight (a read that takes
    // 1 s): busy, so `b` waits in the backlog.
    let mut a = tokio::net::TcpStream::connect(addr).await.unwrap();
    let get = format!(
        "GET /ipfs/{}?format=raw HTTP/1.1\r\nhost: test\r\n\r\n",
        block.cid
    );
    a.write_all(get.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut b = tokio::net::TcpStream::connect(addr).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(300), fetch_home(&mut b)).await;
    assert!(
        waiting.is_err(),
        "second connection served beside a busy one"
    );
    // Once `a` has its response it waits for its next request, kept
    // alive: then it gives its slot to `b`, which is served, and is closed.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"slow") {
        let n = tokio::time::timeout(Duration::from_secs(5), a.read(&mut buf))
            .await
            .expect("the busy request is answered")
            .unwrap();
        assert!(n > 0, "the busy connection was closed");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));
    let page = tokio::time::timeout(Duration::from_secs(5), read_page(&mut b))
        .await
        .expect("served once the first connection waited");
    assert!(page.starts_with("HTTP/1.1 200"));
    let closed = tokio::time::timeout(Duration::from_secs(5), a.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the waiting connection was not closed for the newcomer"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
}

/// Reads responses off a connection, keeping what arrived early.
struct Responses {
    conn: tokio::net::TcpStream,
    got: Vec<u8>,
}

impl Responses {
    async fn more(&mut self) {
        let mut buf = [0u8; 65536];
        let n = self.conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed early");
        self.got.extend_from_slice(&buf[..n]);
    }

    /// The next response's head, and its body unless it answers a HEAD.
    async fn next(&mut self, head_only: bool) -> (String, Vec<u8>) {
        let head_end = loop {
            if let Some(i) = self.got.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.more().await;
        };
        let head = String::from_utf8_lossy(&self.got[..head_end]).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: ").map(str::to_owned))
            .map_or(0, |v| v.trim().parse().unwrap());
        let len = if head_only { 0 } else { len };
        while self.got.len() < head_end + len {
            self.more().await;
        }
        let rest = self.got.split_off(head_end + len);
        let body = self.got.split_off(head_end);
        self.got = rest;
        (head, body)
    }
}

/// A server over a file store (which maps large blocks), and blocks in it.
async fn file_server(
    blocks: &[Block],
) -> (
    std::net::SocketAddr,
    Arc<crate::store::mapped::MappedFiles>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(crate::store::FsStore::open(dir.path()).unwrap());
    store.put_many(blocks).unwrap();
    let files = store.mapped_files().unwrap().clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState::new(store, HttpConfig::default());
    tokio::spawn(serve(listener, state, std::future::pending()));
    (addr, files, dir)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8 ^ seed).collect()
}

#[tokio::test]
async fn mapped_blocks_are_served_whole_over_keep_alive() {
    let big = Block::new(cid::Version::V1, RAW, pattern(750_000, 1));
    let small = Block::new(cid::Version::V1, RAW, pattern(1000, 2));
    let (addr, _files, _dir) = file_server(&[big.clone(), small.clone()]).await;
    let mut conn = Responses {
        conn: tokio::net::TcpStream::connect(addr).await.unwrap(),
        got: Vec::new(),
    };
    let get = |cid: &Cid, extra: &str| {
        format!("GET /ipfs/{cid}?filename=1.m4s HTTP/1.1\r\nhost: t\r\n{extra}\r\n")
    };
    // Two requests at once (pipelined), then one at a time.
    let two = get(&big.cid, "") + &get(&small.cid, "");
    conn.conn.write_all(two.as_bytes()).await.unwrap();
    let (head, body) = conn.next(false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-length: 750000"), "{head}");
    assert!(body == big.data, "the big block differs");
    let (_, body) = conn.next(false).await;
    assert_eq!(body, small.data);

    let range = get(&big.cid, "range: bytes=100000-399999\r\n");
    conn.conn.write_all(range.as_bytes()).await.unwrap();
    let (head, body) = conn.next(false).await;
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert!(body[..] == big.data[100_000..400_000], "the range differs");

    let head_req = format!("HEAD /ipfs/{} HTTP/1.1\r\nhost: t\r\n\r\n", big.cid);
    conn.conn.write_all(head_req.as_bytes()).await.unwrap();
    let (head, _) = conn.next(true).await;
    assert!(head.contains("content-length: 750000"), "{head}");

    conn.conn
        .write_all(get(&big.cid, "").as_bytes())
        .await
        .unwrap();
    let (_, body) = conn.next(false).await;
    assert!(body == big.data, "the big block differs the second time");
    assert!(conn.got.is_empty());
}

#[tokio::test]
async fn mapped_blocks_go_out_from_their_files() {
    let block = Block::new(cid::Version::V1, RAW, pattern(300_000, 3));
    let (addr, files, _dir) = file_server(std::slice::from_ref(&block)).await;
    let mut conn = Responses {
        conn: tokio::net::TcpStream::connect(addr).await.unwrap(),
        got: Vec::new(),
    };
    let before = files.sent();
    let get = format!("GET /ipfs/{} HTTP/1.1\r\nhost: t\r\n\r\n", block.cid);
    for _ in 0..2 {
        conn.conn.write_all(get.as_bytes()).await.unwrap();
        let (_, body) = conn.next(false).await;
        assert!(body == block.data, "the block differs");
    }
    // Every byte of both bodies went out by sendfile, none by a copy.
    assert_eq!(files.sent() - before, 600_000);
}
