//! The gateway against hand-built DAGs, one request at a time.

use super::super::{router, AppState};
use super::hot_block;
use crate::config::HttpConfig;
use crate::store::car::CarReader;
use crate::store::{Block, BlockRead, Blockstore, DAG_PB, RAW};
use crate::unixfs::export::testdag::TestDag;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use cid::Cid;
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The CAR body: roots and block CIDs, each block hash-checked.
    fn car(&self) -> (Vec<Cid>, Vec<Cid>) {
        let mut r = CarReader::new(&self.body[..]).unwrap();
        let roots = r.roots().to_vec();
        let mut cids = Vec::new();
        while let Some(b) = r.next_block().unwrap() {
            cids.push(b.cid);
        }
        (roots, cids)
    }
}

fn app(t: &TestDag) -> Router {
    router(AppState::new(t.store.clone(), HttpConfig::default()))
}

async fn send(app: &Router, method: Method, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

async fn get(app: &Router, uri: &str) -> Reply {
    send(app, Method::GET, uri, &[]).await
}

fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 13 % 256) as u8).collect()
}

/// A site: `hello.txt`, a 1000-byte chunked `data.bin`, a sub-directory.
struct Site {
    t: TestDag,
    root: Cid,
    hello: Cid,
    data: Cid,
    data_bytes: Vec<u8>,
    sub: Cid,
}

fn site() -> Site {
    let t = TestDag::new();
    let hello = t.pb_leaf(b"hello, world\n");
    let data_bytes = bytes(1000);
    let data = t.chunked(&data_bytes, 100, 4);
    let note = t.raw(b"a note");
    let sub = t.dir(&[("note", note), ("<b>&\"odd name\".txt", note)]);
    let root = t.dir(&[("hello.txt", hello), ("data.bin", data), ("sub", sub)]);
    Site {
        t,
        root,
        hello,
        data,
        data_bytes,
        sub,
    }
}

#[tokio::test]
async fn serves_a_file_with_gateway_headers() {
    let s = site();
    let app = app(&s.t);
    let r = get(&app, &format!("/ipfs/{}/hello.txt", s.root)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, b"hello, world\n");
    assert_eq!(r.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(r.header("content-length"), "13");
    assert_eq!(r.header("etag"), format!("\"{}\"", s.hello));
    assert_eq!(
        r.header("cache-control"),
        "public, max-age=29030400, immutable"
    );
    assert_eq!(
        r.header("x-ipfs-path"),
        format!("/ipfs/{}/hello.txt", s.root)
    );
    assert_eq!(r.header("x-ipfs-roots"), format!("{},{}", s.root, s.hello));
    assert_eq!(r.header("accept-ranges"), "bytes");

    let r = get(&app, &format!("/ipfs/{}/data.bin", s.root)).await;
    assert_eq!(r.body, s.data_bytes);
    assert_eq!(r.header("content-type"), "application/octet-stream");
    // By CID alone the type is sniffed.
    let r = get(&app, &format!("/ipfs/{}", s.hello)).await;
    assert_eq!(r.header("content-type"), "text/plain; charset=utf-8");
}

#[tokio::test]
async fn large_files_stream_in_order() {
    let t = TestDag::new();
    let data = bytes(3 << 20);
    let file = t.chunked(&data, 256 << 10, 174);
    let app = app(&t);
    let r = get(&app, &format!("/ipfs/{file}")).await;
    assert_eq!(r.header("content-length"), (3 << 20).to_string());
    assert!(r.body == data);
    let r = send(
        &app,
        Method::GET,
        &format!("/ipfs/{file}"),
        &[("range", "bytes=1000000-2000000")],
    )
    .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert!(r.body == data[1_000_000..=2_000_000]);
}

#[tokio::test]
async fn byte_ranges() {
    let s = site();
    let app = app(&s.t);
    let uri = format!("/ipfs/{}", s.data);
    let range = |r: &'static str| {
        let (app, uri) = (app.clone(), uri.clone());
        async move { send(&app, Method::GET, &uri, &[("range", r)]).await }
    };
    let r = range("bytes=10-19").await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.header("content-range"), "bytes 10-19/1000");
    assert_eq!(r.header("content-length"), "10");
    assert_eq!(r.body, &s.data_bytes[10..20]);
    let r = range("bytes=-5").await;
    assert_eq!(r.header("content-range"), "bytes 995-999/1000");
    assert_eq!(r.body, &s.data_bytes[995..]);
    let r = range("bytes=990-").await;
    assert_eq!(r.body, &s.data_bytes[990..]);
    let r = range("bytes=950-5000").await;
    assert_eq!(r.header("content-range"), "bytes 950-999/1000");
    let r = range("bytes=1000-").await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("content-range"), "bytes */1000");
    // Positions past u64 are still positions past the end: a last one is
    // clamped, a first one or a suffix too.
    let r = range("bytes=0-18446744073709551616").await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.header("content-range"), "bytes 0-999/1000");
    assert_eq!(r.body, s.data_bytes);
    let r = range("bytes=990-99999999999999999999999999").await;
    assert_eq!(r.header("content-range"), "bytes 990-999/1000");
    let r = range("bytes=-99999999999999999999999999").await;
    assert_eq!(r.header("content-range"), "bytes 0-999/1000");
    for past in [
        "bytes=18446744073709551616-",
        "bytes=99999999999999999999-99999999999999999999",
    ] {
        let r = range(past).await;
        assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE, "{past}");
        assert_eq!(r.header("content-range"), "bytes */1000");
    }
    // Several ranges, other units, garbage and signs: the whole file.
    for whole in [
        "bytes=0-1,5-6",
        "items=0-1",
        "bytes=x-y",
        "bytes=+1-5",
        "bytes=5-2",
    ] {
        let r = range(whole).await;
        assert_eq!(r.status, StatusCode::OK, "{whole}");
        assert_eq!(r.body.len(), 1000);
    }
}

#[tokio::test]
async fn conditional_requests() {
    let s = site();
    let app = app(&s.t);
    let uri = format!("/ipfs/{}/hello.txt", s.root);
    let tag = format!("\"{}\"", s.hello);
    for inm in [
        tag.clone(),
        format!("W/{tag}"),
        format!("\"x\", {tag}"),
        "*".into(),
    ] {
        let r = send(&app, Method::GET, &uri, &[("if-none-match", &inm)]).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), tag);
    }
    let r = send(&app, Method::GET, &uri, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn head_sends_headers_only() {
    let s = site();
    let app = app(&s.t);
    let r = send(
        &app,
        Method::HEAD,
        &format!("/ipfs/{}/data.bin", s.root),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), "1000");
    assert!(r.body.is_empty());
    let r = send(&app, Method::POST, &format!("/ipfs/{}", s.root), &[]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn content_types_by_name_and_by_content() {
    let t = TestDag::new();
    let playlist = t.raw(b"#EXTM3U\n#EXT-X-VERSION:3\n");
    let png = t.raw(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
    let page = t.raw(b"<!DOCTYPE html><title>x</title>");
    let binary = t.raw(&[0, 1, 2, 3, 0xff]);
    let dir = t.dir(&[("live.m3u8", playlist), ("seg0.ts", binary), ("page", page)]);
    let app = app(&t);
    let ct = |uri: String| {
        let app = app.clone();
        async move { get(&app, &uri).await.header("content-type").to_owned() }
    };
    assert_eq!(
        ct(format!("/ipfs/{playlist}")).await,
        "application/vnd.apple.mpegurl"
    );
    assert_eq!(ct(format!("/ipfs/{png}")).await, "image/png");
    assert_eq!(
        ct(format!("/ipfs/{page}")).await,
        "text/html; charset=utf-8"
    );
    assert_eq!(
        ct(format!("/ipfs/{binary}")).await,
        "application/octet-stream"
    );
    assert_eq!(
        ct(format!("/ipfs/{dir}/live.m3u8")).await,
        "application/vnd.apple.mpegurl"
    );
    assert_eq!(ct(format!("/ipfs/{dir}/seg0.ts")).await, "video/mp2t");
    assert_eq!(
        ct(format!("/ipfs/{dir}/page")).await,
        "text/html; charset=utf-8"
    );
    let r = get(
        &app,
        &format!("/ipfs/{binary}?filename=pic%20%D1%84.png&download=true"),
    )
    .await;
    assert_eq!(r.header("content-type"), "image/png");
    assert_eq!(
        r.header("content-disposition"),
        "attachment; filename=\"pic _.png\"; filename*=UTF-8''pic%20%D1%84%2Epng"
    );
}

#[tokio::test]
async fn content_from_the_store_is_sandboxed() {
    let t = TestDag::new();
    let script = t.raw(b"<script>fetch('/api/v1/streams')</script>");
    let page = t.raw(b"<!DOCTYPE html><title>x</title>");
    let dir = t.dir(&[("index.html", page), ("x", script)]);
    let app = app(&t);
    // Whatever the type, and however it was asked for: a node without
    // streams has no site of its own.
    for uri in [
        format!("/ipfs/{script}?filename=x.html"),
        format!("/ipfs/{script}"),
        format!("/ipfs/{dir}/"),
        format!("/ipfs/{dir}/x?filename=x.html"),
        format!("/ipfs/{dir}/index.html"),
        format!("/ipfs/{dir}/?format=car"),
        format!("/ipfs/{page}?format=raw"),
    ] {
        let r = get(&app, &uri).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
        assert_eq!(r.header("content-security-policy"), "sandbox", "{uri}");
    }
    let r = get(&app, &format!("/ipfs/{script}?filename=x.html")).await;
    assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
}

#[tokio::test]
async fn raw_blocks() {
    let s = site();
    let app = app(&s.t);
    let block = s.t.store.get(&s.root).unwrap().unwrap();
    let r = get(&app, &format!("/ipfs/{}?format=raw", s.root)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, block);
    assert_eq!(r.header("content-type"), "application/vnd.ipld.raw");
    assert_eq!(r.header("x-content-type-options"), "nosniff");
    assert_eq!(
        r.header("content-disposition"),
        format!("attachment; filename=\"{}.bin\"", s.root)
    );
    assert_eq!(r.header("etag"), format!("\"{}.raw\"", s.root));
    assert!(r.headers.get("content-location").is_none());
    // By Accept: the same block, and where the ?format= form lives.
    let uri = format!("/ipfs/{}", s.root);
    let r = send(
        &app,
        Method::GET,
        &uri,
        &[("accept", "application/vnd.ipld.raw")],
    )
    .await;
    assert_eq!(r.body, block);
    assert_eq!(r.header("content-location"), format!("{uri}?format=raw"));
    // A block below a path.
    let r = get(&app, &format!("/ipfs/{}/hello.txt?format=raw", s.root)).await;
    assert_eq!(r.body, s.t.store.get(&s.hello).unwrap().unwrap());
}

#[tokio::test]
async fn car_responses() {
    let s = site();
    let app = app(&s.t);
    let leaves: Vec<Cid> = crate::store::links(&s.data, &s.t.store.get(&s.data).unwrap().unwrap())
        .unwrap()
        .into_iter()
        .flat_map(|c| crate::store::links(&c, &s.t.store.get(&c).unwrap().unwrap()).unwrap())
        .collect();
    assert_eq!(leaves.len(), 10);

    let r = get(&app, &format!("/ipfs/{}/data.bin?format=car", s.root)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("content-type"),
        "application/vnd.ipld.car; version=1; order=dfs; dups=n"
    );
    assert_eq!(r.header("x-content-type-options"), "nosniff");
    assert_eq!(
        r.header("content-disposition"),
        format!("attachment; filename=\"{}.car\"", s.root)
    );
    assert!(r.header("etag").starts_with(&format!("\"{}.car.", s.root)));
    let (roots, cids) = r.car();
    assert_eq!(roots, vec![s.root]);
    assert_eq!(cids[0], s.root);
    assert_eq!(cids[1], s.data);
    assert_eq!(
        cids.len(),
        2 + 3 + 10,
        "root, file, 3 inner nodes, 10 leaves"
    );
    assert_eq!(&cids[cids.len() - 1], leaves.last().unwrap());

    let base = format!("/ipfs/{}/data.bin?format=car", s.root);
    let r = get(&app, &format!("{base}&dag-scope=block")).await;
    assert_eq!(r.car().1, vec![s.root, s.data]);
    // Bytes 250..=449 sit in leaves 2, 3 and 4.
    let r = get(&app, &format!("{base}&entity-bytes=250:449")).await;
    let sent_leaves: Vec<Cid> = r.car().1.into_iter().filter(|c| c.codec() == RAW).collect();
    assert_eq!(sent_leaves, &leaves[2..5]);
    let r = get(&app, &format!("{base}&entity-bytes=-100:*")).await;
    assert_eq!(r.car().1.last(), leaves.last());
    // Each variant has its own tag.
    let tags: std::collections::HashSet<String> = [
        get(&app, &base).await,
        get(&app, &format!("{base}&dag-scope=block")).await,
        get(&app, &format!("{base}&entity-bytes=0:10")).await,
    ]
    .iter()
    .map(|r| r.header("etag").to_owned())
    .collect();
    assert_eq!(tags.len(), 3);

    // A whole directory, every block once.
    let r = get(&app, &format!("/ipfs/{}?format=car", s.root)).await;
    let cids = r.car().1;
    let unique: std::collections::HashSet<_> = cids.iter().collect();
    assert_eq!(unique.len(), cids.len());
    assert!(cids.contains(&s.sub) && cids.contains(&s.hello));
    // Entity of a directory: just its block.
    let r = get(
        &app,
        &format!("/ipfs/{}/sub?format=car&dag-scope=entity", s.root),
    )
    .await;
    assert_eq!(r.car().1, vec![s.root, s.sub]);
}

#[tokio::test]
async fn car_negotiation() {
    let s = site();
    let app = app(&s.t);
    let uri = format!("/ipfs/{}/sub", s.root);
    let accept = |v: &'static str| {
        let (app, uri) = (app.clone(), uri.clone());
        async move { send(&app, Method::GET, &uri, &[("accept", v)]).await }
    };
    let r = accept("application/vnd.ipld.car; version=1; order=dfs; dups=y").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("content-type"),
        "application/vnd.ipld.car; version=1; order=dfs; dups=y"
    );
    assert_eq!(r.header("content-location"), format!("{uri}?format=car"));
    // `note` is linked twice: with dups=y it comes twice.
    assert_eq!(r.car().1.len(), 4);
    let r = accept("text/html, application/vnd.ipld.car;q=0.5").await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY, "HTML is preferred");
    let r = accept("application/vnd.ipld.car;q=0.9, application/vnd.ipld.raw").await;
    assert_eq!(r.header("content-type"), "application/vnd.ipld.raw");
    let r = accept("application/vnd.ipld.car; version=2").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("version"));
    // ?format= wins over Accept.
    let r = send(
        &app,
        Method::GET,
        &format!("{uri}?format=car"),
        &[("accept", "application/vnd.ipld.raw")],
    )
    .await;
    assert!(r
        .header("content-type")
        .starts_with("application/vnd.ipld.car"));
    for bad in [
        "dag-scope=most",
        "entity-bytes=9:1",
        "entity-bytes=x",
        "car-dups=maybe",
        "format=tar",
    ] {
        let r = get(&app, &format!("{uri}?format=car&{bad}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    // HEAD: headers, no walk.
    let r = send(&app, Method::HEAD, &format!("{uri}?format=car"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn directories() {
    let s = site();
    let app = app(&s.t);
    let r = get(&app, &format!("/ipfs/{}/sub?x=1", s.root)).await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.header("location"), format!("/ipfs/{}/sub/?x=1", s.root));
    let r = get(&app, &format!("/ipfs/{}/sub/", s.root)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(r.header("etag"), format!("\"DirIndex-1_CID-{}\"", s.sub));
    let html = r.text();
    assert!(html.contains("<a href=\"./note\">note</a>"), "{html}");
    assert!(
        html.contains("<a href=\"./%3Cb%3E&amp;%22odd%20name%22.txt\">&lt;b&gt;&amp;&quot;odd name&quot;.txt</a>"),
        "{html}"
    );
    assert!(!html.contains("<b>"));
    assert!(html.contains("href=\"../\""));
    // The note's CID and DAG size are listed.
    let note = s.t.raw(b"a note");
    assert!(html.contains(&format!("/ipfs/{note}")));
    assert!(html.contains("6 B"));
    // A listing is revalidated by its own tag.
    let r = send(
        &app,
        Method::GET,
        &format!("/ipfs/{}/sub/", s.root),
        &[("if-none-match", &format!("\"DirIndex-1_CID-{}\"", s.sub))],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn index_html_is_served_for_its_directory() {
    let t = TestDag::new();
    let index = t.raw(b"<p>welcome</p>");
    let site = t.dir(&[("index.html", index), ("a.txt", t.raw(b"a"))]);
    let app = app(&t);
    let r = get(&app, &format!("/ipfs/{site}/")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, b"<p>welcome</p>");
    assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(r.header("etag"), format!("\"{index}\""));
}

#[tokio::test]
async fn hamt_paths_resolve() {
    let t = TestDag::new();
    let names: Vec<String> = (0..500).map(|i| format!("seg-{i:05}.ts")).collect();
    let entries: Vec<(&str, Cid)> = names
        .iter()
        .map(|n| (n.as_str(), t.raw(n.as_bytes())))
        .collect();
    let dir = t.hamt(&entries, 256);
    let root = t.dir(&[("stream", dir)]);
    let app = app(&t);
    let r = get(&app, &format!("/ipfs/{root}/stream/seg-00321.ts")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, b"seg-00321.ts");
    assert_eq!(r.header("content-type"), "video/mp2t");
    assert_eq!(
        r.header("x-ipfs-roots"),
        format!("{root},{dir},{}", entries[321].1)
    );
    let r = get(&app, &format!("/ipfs/{root}/stream/")).await;
    assert_eq!(
        r.text().matches("<tr>").count(),
        1 + 1 + 500,
        "head, .., entries"
    );
    let r = get(&app, &format!("/ipfs/{root}/stream/absent.ts")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The CAR for a HAMT path carries the shards it went through.
    let r = get(
        &app,
        &format!("/ipfs/{root}/stream/seg-00321.ts?format=car"),
    )
    .await;
    let cids = r.car().1;
    assert_eq!(cids[..2], [root, dir]);
    assert_eq!(cids.last(), Some(&entries[321].1));
}

#[tokio::test]
async fn probe() {
    let app = app(&TestDag::new());
    let r = get(&app, "/ipfs/bafkqaaa").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    let r = get(&app, "/ipfs/bafkqaaa?format=raw").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    let r = get(&app, "/ipfs/bafkqaaa?format=car").await;
    assert_eq!(r.status, StatusCode::OK);
    let (roots, blocks) = r.car();
    assert_eq!(roots, vec!["bafkqaaa".parse::<Cid>().unwrap()]);
    assert!(blocks.is_empty());
    let r = send(
        &app,
        Method::HEAD,
        "/ipfs/bafkqaaa",
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn cors() {
    let s = site();
    let app = app(&s.t);
    let uri = format!("/ipfs/{}/hello.txt", s.root);
    let r = send(
        &app,
        Method::GET,
        &uri,
        &[("origin", "https://example.org")],
    )
    .await;
    assert_eq!(r.header("access-control-allow-origin"), "*");
    let exposed = r
        .header("access-control-expose-headers")
        .to_ascii_lowercase();
    for h in [
        "x-ipfs-path",
        "x-ipfs-roots",
        "content-range",
        "content-length",
    ] {
        assert!(exposed.contains(h), "{exposed}");
    }
    let r = send(
        &app,
        Method::OPTIONS,
        &uri,
        &[
            ("origin", "https://example.org"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "range"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("access-control-allow-origin"), "*");
    assert!(r.header("access-control-allow-methods").contains("GET"));
    assert!(r.header("access-control-allow-headers").contains("range"));
}

#[tokio::test]
async fn errors_say_what_is_wrong() {
    let s = site();
    let app = app(&s.t);
    let r = get(&app, "/ipfs/not-a-cid/x").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.text().starts_with("invalid CID \"not-a-cid\": "),
        "{}",
        r.text()
    );

    let gone = Block::new(cid::Version::V1, RAW, b"not here".to_vec()).cid;
    let r = get(&app, &format!("/ipfs/{gone}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.text().contains(&gone.to_string()));
    for fmt in ["raw", "car"] {
        let r = get(&app, &format!("/ipfs/{gone}?format={fmt}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{fmt}");
    }

    let r = send(
        &app,
        Method::GET,
        &format!("/ipfs/{gone}"),
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert!(r.body.is_empty());
    let r = send(
        &app,
        Method::HEAD,
        &format!("/ipfs/{}", s.root),
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);

    let r = get(&app, &format!("/ipfs/{}/sub/missing.txt", s.root)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.text()
            .contains(&format!("/ipfs/{}/sub/missing.txt not found", s.root)),
        "{}",
        r.text()
    );
    let r = get(&app, &format!("/ipfs/{}/hello.txt/deeper", s.root)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    for escape in ["..", "%2E%2E", "sub/../hello.txt", "a%2Fb"] {
        let r = get(&app, &format!("/ipfs/{}/{escape}", s.root)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{escape}");
    }

    // A file whose leaf is gone: found while sniffing its type, a 404; found
    // only while streaming, the head is sent and the body is cut.
    let file = s.t.file(b"x", &[(gone, 8)]);
    let r = get(&app, &format!("/ipfs/{file}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.text().contains(&gone.to_string()));
    let dir = s.t.dir(&[("f.bin", file)]);
    let req = Request::get(format!("/ipfs/{dir}/f.bin"))
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.into_body().collect().await.is_err());

    let cbor = s.t.put(Block::new(cid::Version::V1, 0x71, vec![0xa0]));
    let r = get(&app, &format!("/ipfs/{cbor}")).await;
    assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED);
    assert!(r.text().contains("format=raw"));
    assert_eq!(
        get(&app, &format!("/ipfs/{cbor}?format=raw")).await.body,
        [0xa0]
    );

    let junk =
        s.t.put(Block::new(cid::Version::V1, DAG_PB, vec![0xff, 0xff]));
    let r = get(&app, &format!("/ipfs/{junk}")).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.text().contains(&junk.to_string()));

    let r = send(
        &app,
        Method::GET,
        &format!("/ipfs/{}", s.root),
        &[("service-worker", "script")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = get(&app, "/nothing/here").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn symlinks_are_served_as_their_target() {
    let t = TestDag::new();
    let link = t.symlink("../elsewhere");
    let app = app(&t);
    let r = get(&app, &format!("/ipfs/{link}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, b"../elsewhere");
    assert_eq!(r.header("content-type"), "inode/symlink");
}

/// Fetches blocks from another store, as peers would send them; a block
/// the other store lacks times out.
struct Remote {
    from: std::sync::Arc<crate::store::MemStore>,
    to: std::sync::Arc<crate::store::MemStore>,
    calls: std::sync::atomic::AtomicUsize,
    /// Fetches under way, and the most there were at once.
    in_flight: std::sync::Arc<(
        std::sync::atomic::AtomicUsize,
        std::sync::atomic::AtomicUsize,
    )>,
}

impl crate::store::fetch::Fetcher for Remote {
    fn fetch(
        &self,
        cid: Cid,
        timeout: std::time::Duration,
    ) -> futures::future::BoxFuture<'static, Result<(), crate::store::fetch::FetchError>> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (from, to) = (self.from.clone(), self.to.clone());
        let in_flight = self.in_flight.clone();
        Box::pin(async move {
            use std::sync::atomic::Ordering::SeqCst;
            match from.get(&cid).unwrap() {
                Some(data) => {
                    let now = in_flight.0.fetch_add(1, SeqCst) + 1;
                    in_flight.1.fetch_max(now, SeqCst);
                    // A round trip.
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    to.put(&Block { cid, data }).unwrap();
                    in_flight.0.fetch_sub(1, SeqCst);
                    Ok(())
                }
                None => {
                    tokio::time::sleep(timeout).await;
                    Err(crate::store::fetch::FetchError::Timeout { cid, timeout })
                }
            }
        })
    }
}

/// A gateway over an empty store that fetches from `s`'s store.
fn fetching(s: &Site, fetch_timeout_ms: u64) -> (Router, std::sync::Arc<Remote>) {
    let local = std::sync::Arc::new(crate::store::MemStore::new());
    let remote = std::sync::Arc::new(Remote {
        from: s.t.store.clone(),
        to: local.clone(),
        calls: Default::default(),
        in_flight: Default::default(),
    });
    let config = HttpConfig {
        fetch_timeout: std::time::Duration::from_millis(fetch_timeout_ms),
        ..HttpConfig::default()
    };
    let state = AppState::new(local, config).with_fetcher(remote.clone());
    (router(state), remote)
}

#[tokio::test]
async fn a_file_held_elsewhere_is_fetched_many_blocks_at_a_time() {
    let t = TestDag::new();
    let data = bytes(100 * 64);
    let file = t.chunked(&data, 100, 64);
    let root = t.dir(&[("big.bin", file)]);
    let s = Site {
        root,
        hello: file,
        data: file,
        data_bytes: data.clone(),
        sub: file,
        t,
    };
    let (app, remote) = fetching(&s, 5000);
    let r = get(&app, &format!("/ipfs/{file}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body == data);
    use std::sync::atomic::Ordering::SeqCst;
    // The root, then 64 leaves: each miss brings the next ones along.
    assert_eq!(remote.calls.load(SeqCst), 65, "each block fetched once");
    let most = remote.in_flight.1.load(SeqCst);
    assert_eq!(
        most,
        super::body::READ_AHEAD,
        "fetched {most} at once at most"
    );
}

#[tokio::test]
async fn missing_blocks_are_fetched_through_paths_files_and_cars() {
    let s = site();
    let (app, remote) = fetching(&s, 5000);
    let r = get(&app, &format!("/ipfs/{}/hello.txt", s.root)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, b"hello, world\n");
    // A chunked file: its leaves are fetched while the body streams.
    let r = get(&app, &format!("/ipfs/{}/data.bin", s.root)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, s.data_bytes);
    let r = get(&app, &format!("/ipfs/{}?format=raw", s.sub)).await;
    assert_eq!(r.body, s.t.store.get(&s.sub).unwrap().unwrap());
    let r = get(&app, &format!("/ipfs/{}?format=car", s.root)).await;
    let (_, cids) = r.car();
    let mut all = s.t.store.keys().unwrap();
    let mut got: Vec<_> = cids.iter().map(|c| *c.hash()).collect();
    all.sort_by_key(|m| m.to_bytes());
    got.sort_by_key(|m| m.to_bytes());
    assert_eq!(got, all, "every block of the site, fetched");
    let calls = remote.calls.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(calls, all.len(), "each block fetched once");
    // Now all local: nothing more is fetched.
    let r = get(&app, &format!("/ipfs/{}/data.bin", s.root)).await;
    assert_eq!(r.body, s.data_bytes);
    assert_eq!(
        remote.calls.load(std::sync::atomic::Ordering::Relaxed),
        calls
    );
}

#[tokio::test]
async fn a_block_no_peer_sends_is_504_after_the_fetch_timeout() {
    let s = site();
    let (app, _) = fetching(&s, 100);
    let nowhere = Block::new(cid::Version::V1, RAW, b"nowhere".to_vec()).cid;
    let start = std::time::Instant::now();
    let r = get(&app, &format!("/ipfs/{nowhere}")).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(start.elapsed() >= std::time::Duration::from_millis(100));
    assert!(r.text().contains("not found on any peer"), "{}", r.text());
    assert_eq!(r.header("cache-control"), "no-store");
}

#[tokio::test]
async fn only_if_cached_never_fetches() {
    let s = site();
    let (app, remote) = fetching(&s, 5000);
    let cached = [("cache-control", "only-if-cached")];
    let r = send(&app, Method::GET, &format!("/ipfs/{}", s.hello), &cached).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    // With the root here but not the file, the file is not fetched either.
    let r = get(&app, &format!("/ipfs/{}?format=raw", s.root)).await;
    assert_eq!(r.status, StatusCode::OK);
    let before = remote.calls.load(std::sync::atomic::Ordering::Relaxed);
    let r = send(
        &app,
        Method::GET,
        &format!("/ipfs/{}/hello.txt", s.root),
        &cached,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        remote.calls.load(std::sync::atomic::Ordering::Relaxed),
        before
    );
}

#[tokio::test]
async fn mapped_blocks_change_nothing_clients_see() {
    use crate::store::{FsStore, MemStore};
    let data = bytes(200_000);
    let block = Block::new(cid::Version::V1, RAW, data.clone());
    let plain = std::sync::Arc::new(MemStore::new());
    plain.put(&block).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = std::sync::Arc::new(FsStore::open(dir.path()).unwrap());
    files.put(&block).unwrap();
    let mapped = files.get_for_send(&block.cid).unwrap().unwrap();
    assert_eq!(files.mapped_files().unwrap().len(), 1);
    drop(mapped);
    let apps = [
        router(AppState::new(plain, HttpConfig::default())),
        router(AppState::new(files.clone(), HttpConfig::default())),
    ];
    let uri = format!("/ipfs/{}?filename=7.m4s", block.cid);
    let tag = format!("\"{}\"", block.cid);
    type Request<'a> = (Method, &'a str, Vec<(&'a str, &'a str)>);
    let requests: [Request<'_>; 8] = [
        (Method::GET, &uri, vec![]),
        (Method::GET, &uri, vec![("range", "bytes=1000-1999")]),
        (Method::GET, &uri, vec![("range", "bytes=300000-")]),
        (Method::HEAD, &uri, vec![]),
        (Method::GET, &uri, vec![("if-none-match", &tag)]),
        (Method::GET, &uri, vec![("cache-control", "only-if-cached")]),
        (
            Method::GET,
            &uri,
            vec![("accept", "application/vnd.ipld.raw")],
        ),
        (Method::GET, &uri, vec![("origin", "https://example.org")]),
    ];
    for (method, uri, headers) in &requests {
        let mut replies = Vec::new();
        for app in &apps {
            replies.push(send(app, method.clone(), uri, headers).await);
        }
        let want = &replies[0];
        for r in &replies[1..] {
            assert_eq!(r.status, want.status, "{method} {headers:?}");
            assert_eq!(r.headers, want.headers, "{method} {headers:?}");
            assert!(r.body == want.body, "{method} {headers:?}: bodies differ");
        }
    }
    let whole = send(&apps[1], Method::GET, &uri, &[]).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert!(whole.body == data);
    // One mapping, kept for the next request; none left per response.
    assert_eq!(files.mapped_files().unwrap().len(), 1);
    // Deleted: forgotten and unmapped.
    files.delete(block.cid.hash()).unwrap();
    assert!(files.mapped_files().unwrap().is_empty());
}

mod hot;
