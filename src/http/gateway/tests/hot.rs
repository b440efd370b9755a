//! The hot path (`gateway::hot`) against the router: the same answers.

use super::*;

/// A request with `headers` and no body.
fn req(method: Method, uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut r = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(Body::empty()).unwrap()
}

/// The headers but the date, comparable.
fn strip(h: &HeaderMap) -> Vec<(String, String)> {
    let mut h = h.clone();
    h.remove("date");
    h.iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn the_hot_path_answers_as_the_router_does() {
    use crate::store::FsStore;
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(FsStore::open(dir.path()).unwrap());
    let segment = Block::new(cid::Version::V1, RAW, bytes(200_000));
    let small = Block::new(cid::Version::V1, RAW, bytes(1000));
    store.put_many(&[segment.clone(), small.clone()]).unwrap();
    let state = AppState::new(store.clone(), HttpConfig::default());
    let app = router(state.clone());
    let seg = format!("/ipfs/{}", segment.cid);
    let named = format!("{seg}?filename=000042.m4s");
    let v0ish = format!(
        "/ipfs/{}?filename=x.ts",
        segment
            .cid
            .to_string_of_base(cid::multibase::Base::Base58Btc)
            .unwrap()
    );
    let browser: &[(&str, &str)] = &[
        ("host", "gw"),
        ("accept", "*/*"),
        ("origin", "http://other.example"),
        ("referer", "http://other.example/watch/live"),
        ("sec-fetch-mode", "cors"),
        ("cache-control", "no-cache"),
        ("user-agent", "Mozilla/5.0"),
    ];
    // Not at hand until it has been sent once.
    assert!(hot_block(&state, &req(Method::GET, &named, &[])).is_none());
    assert_eq!(get(&app, &named).await.status, StatusCode::OK);

    // Taken: the same answer as the router's, but the date.
    type Case<'a> = (Method, &'a str, &'a [(&'a str, &'a str)]);
    let taken: [Case<'_>; 5] = [
        (Method::GET, &named, &[]),
        (Method::GET, &seg, &[]),
        (Method::HEAD, &named, &[]),
        (Method::GET, &named, browser),
        (Method::GET, &v0ish, &[]),
    ];
    for (method, uri, headers) in taken {
        let hot = hot_block(&state, &req(method.clone(), uri, headers))
            .unwrap_or_else(|| panic!("{method} {uri} {headers:?} not taken"));
        let (status, hot_headers) = (hot.status(), hot.headers().clone());
        let hot_body = hot.into_body().collect().await.unwrap().to_bytes();
        let slow = send(&app, method.clone(), uri, headers).await;
        assert_eq!(status, slow.status, "{method} {uri} {headers:?}");
        assert_eq!(strip(&hot_headers), strip(&slow.headers), "{method} {uri}");
        assert!(hot_body == slow.body, "{method} {uri}: bodies differ");
    }

    // Left to the router: anything the answer depends on.
    let small_uri = format!("/ipfs/{}", small.cid);
    let left: [Case<'_>; 11] = [
        (Method::GET, &named, &[("range", "bytes=0-9")]),
        (Method::GET, &named, &[("if-none-match", "*")]),
        (
            Method::GET,
            &named,
            &[("accept", "application/vnd.ipld.raw")],
        ),
        (Method::GET, &named, &[("cache-control", "only-if-cached")]),
        (Method::GET, &named, &[("service-worker", "script")]),
        (Method::GET, &format!("{seg}?format=car"), &[]),
        (Method::GET, &format!("{seg}?filename=a%20b.m4s"), &[]),
        (
            Method::GET,
            &format!("{seg}?filename=a.m4s&download=true"),
            &[],
        ),
        (Method::GET, &format!("{seg}/"), &[]),
        (Method::OPTIONS, &named, &[]),
        (Method::GET, &small_uri, &[]),
    ];
    for (method, uri, headers) in left {
        assert!(
            hot_block(&state, &req(method.clone(), uri, headers)).is_none(),
            "{method} {uri} {headers:?} taken"
        );
    }
}

/// A root over raw leaves only, as a closed LL-HLS segment is: its
/// `(leaves, root)` blocks, each leaf of `sizes[i]` bytes.
fn flat_file(sizes: &[usize]) -> (Vec<Block>, Block) {
    use crate::unixfs::pb::{DataType, PbLink, PbNode, UnixfsData};
    let leaves: Vec<Block> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let data: Vec<u8> = bytes(n).into_iter().map(|b| b ^ i as u8).collect();
            Block::new(cid::Version::V1, RAW, data)
        })
        .collect();
    let mut data = UnixfsData::new(DataType::File);
    data.blocksizes = sizes.iter().map(|&n| n as u64).collect();
    data.filesize = Some(sizes.iter().sum::<usize>() as u64);
    let node = PbNode {
        links: leaves
            .iter()
            .map(|b| PbLink {
                hash: b.cid.to_bytes(),
                name: Some(String::new()),
                tsize: Some(b.data.len() as u64),
            })
            .collect(),
        data: Some(data.encode()),
    };
    let root = Block::new(cid::Version::V1, DAG_PB, node.encode());
    (leaves, root)
}

#[test]
fn only_roots_over_raw_leaves_are_flat() {
    use crate::http::gateway::hot::FlatFile;
    use crate::unixfs::pb::{DataType, PbNode, UnixfsData};
    let (leaves, root) = flat_file(&[100_000, 150_000, 90_000]);
    let flat = FlatFile::of(&root.data).expect("flat");
    assert_eq!(flat.size, 340_000);
    let want: Vec<_> = leaves
        .iter()
        .map(|b| (b.cid, b.data.len() as u64))
        .collect();
    assert_eq!(flat.leaves, want);
    // Not flat: bytes of its own, a dag-pb child, sizes that disagree, no
    // links, not a file, not dag-pb at all.
    let mut node = PbNode::decode(&root.data).unwrap();
    let data = UnixfsData::decode(node.data.as_deref().unwrap()).unwrap();
    let with = |f: &dyn Fn(&mut PbNode, &mut UnixfsData)| {
        let (mut n, mut d) = (node.clone(), data.clone());
        f(&mut n, &mut d);
        n.data = Some(d.encode());
        FlatFile::of(&n.encode())
    };
    assert!(with(&|_, d| d.data = Some(vec![1, 2, 3])).is_none());
    assert!(with(&|n, _| n.links[1].hash = root.cid.to_bytes()).is_none());
    assert!(with(&|_, d| d.filesize = Some(1)).is_none());
    assert!(with(&|_, d| d.blocksizes.pop().map(drop).unwrap_or(())).is_none());
    assert!(with(&|n, d| {
        n.links.clear();
        d.blocksizes.clear();
    })
    .is_none());
    assert!(with(&|_, d| d.kind = DataType::Directory).is_none());
    assert!(FlatFile::of(&leaves[0].data).is_none());
    node.data = None;
    assert!(FlatFile::of(&node.encode()).is_none());
}

#[tokio::test]
async fn a_flat_file_goes_out_from_its_leaves_files_and_then_by_the_hot_path() {
    use crate::store::FsStore;
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(FsStore::open(dir.path()).unwrap());
    let (leaves, root) = flat_file(&[100_000, 150_000, 90_000]);
    let mut all = leaves.clone();
    all.push(root.clone());
    store.put_many(&all).unwrap();
    let whole: Vec<u8> = leaves.iter().flat_map(|b| b.data.to_vec()).collect();
    let state = AppState::new(store.clone(), HttpConfig::default());
    let app = router(state.clone());
    let named = format!("/ipfs/{}?filename=000007.m4s", root.cid);
    // Not known before the router served it once.
    assert!(hot_block(&state, &req(Method::GET, &named, &[])).is_none());
    let slow = get(&app, &named).await;
    assert_eq!(slow.status, StatusCode::OK);
    assert!(slow.body == whole, "the router's body differs");
    // Its leaves went out as mappings (sendfile), kept for the next viewer.
    assert_eq!(store.mapped_files().unwrap().len(), 3);
    for method in [Method::GET, Method::HEAD] {
        let hot = hot_block(&state, &req(method.clone(), &named, &[]))
            .unwrap_or_else(|| panic!("{method} not taken"));
        let (status, hot_headers) = (hot.status(), hot.headers().clone());
        let hot_body = hot.into_body().collect().await.unwrap().to_bytes();
        let slow = send(&app, method.clone(), &named, &[]).await;
        assert_eq!(status, slow.status, "{method}");
        assert_eq!(strip(&hot_headers), strip(&slow.headers), "{method}");
        assert!(hot_body == slow.body, "{method}: bodies differ");
    }
    // A range is the router's, and right across leaves.
    let r = send(
        &app,
        Method::GET,
        &named,
        &[("range", "bytes=99990-100009")],
    )
    .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.body, whole[99_990..100_010]);
    // A leaf gone: not taken, and the router's body is cut, never short.
    store.delete(leaves[1].cid.hash()).unwrap();
    assert!(hot_block(&state, &req(Method::GET, &named, &[])).is_none());
    let resp = app
        .clone()
        .oneshot(req(Method::GET, &named, &[]))
        .await
        .unwrap();
    assert!(resp.into_body().collect().await.is_err());
}
