//! cjdroute's admin protocol, pure: bencoded requests out, replies in.
//!
//! Each request is one UDP datagram holding a bencoded dictionary, each
//! reply one datagram that echoes the request's `txid`:
//!
//! ```text
//! -> d4:argsd4:pagei0ee1:q29:InterfaceController_peerStats4:txid8:...e
//! <- d5:peersl d4:addr..:v20.0000.0000.0000.0013.<key>.k 7:bytesIn i..e ... e ... e
//!      4:moArei1e 5:totali9e 4:txid8:...e
//! ```
//!
//! `InterfaceController_peerStats` answers six peers a page (the reply must
//! fit cjdroute's buffer); `more` says another page follows. It needs no
//! password. A call that does is made in two steps: `{"q": "cookie"}` gets
//! a cookie, then `{"q": "auth", "aq": <function>, "cookie", "hash"}` where
//! `hash` is first SHA-256(password + cookie) in hex and then the SHA-256 of
//! the whole request so encoded, in hex, put in its place.
//!
//! A peer's `addr` is `v<version>.<switch label>.<public key>.k`; its IPv6
//! address is the first 16 bytes of SHA-512(SHA-512(key)), the key written
//! in cjdns' base32 (least significant bits first).

use super::{Link, LinkKind, MeshError, Packets};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
use std::collections::BTreeMap;
use std::net::Ipv6Addr;

/// The peer list function.
pub const PEER_STATS: &str = "InterfaceController_peerStats";

/// The function that describes the node itself; it needs no password and
/// takes no arguments. cjdroute answers `myAddr` (the node's own
/// `v<version>.<label>.<key>.k`), `version`, `encodingScheme` and
/// `compressedSchemeHex`; newer builds add `myIp6`.
pub const NODE_INFO: &str = "Core_nodeInfo";

/// The arguments of a call; peer stats take only `page`.
#[derive(Debug, Clone, Serialize)]
struct Args {
    page: u64,
}

/// An unauthenticated call, or the cookie request (no `args`).
#[derive(Serialize)]
struct Call<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<&'a Args>,
    q: &'a str,
    txid: &'a str,
}

/// An authenticated call; fields in bencode's sorted order.
#[derive(Serialize)]
struct AuthCall<'a> {
    aq: &'a str,
    args: &'a Args,
    cookie: &'a str,
    hash: String,
    q: &'static str,
    txid: &'a str,
}

/// A call of `function` for `page`, without a password.
pub fn request(function: &str, page: u64, txid: &str) -> Vec<u8> {
    serde_bencode::to_bytes(&Call {
        args: Some(&Args { page }),
        q: function,
        txid,
    })
    .expect("a call encodes")
}

/// A call of `function` with no arguments, without a password.
pub fn request_no_args(function: &str, txid: &str) -> Vec<u8> {
    serde_bencode::to_bytes(&Call {
        args: None,
        q: function,
        txid,
    })
    .expect("a call encodes")
}

/// The request for a cookie, the first step of an authenticated call.
pub fn cookie_request(txid: &str) -> Vec<u8> {
    serde_bencode::to_bytes(&Call {
        args: None,
        q: "cookie",
        txid,
    })
    .expect("a call encodes")
}

fn sha256_hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(bytes))
}

/// A call of `function` for `page` authenticated with `password` and the
/// `cookie` the daemon handed out.
pub fn auth_request(
    function: &str,
    page: u64,
    password: &str,
    cookie: &str,
    txid: &str,
) -> Vec<u8> {
    let args = Args { page };
    let mut call = AuthCall {
        aq: function,
        args: &args,
        cookie,
        hash: sha256_hex(format!("{password}{cookie}").as_bytes()),
        q: "auth",
        txid,
    };
    let first = serde_bencode::to_bytes(&call).expect("a call encodes");
    call.hash = sha256_hex(&first);
    serde_bencode::to_bytes(&call).expect("a call encodes")
}

/// The reply to a cookie request.
#[derive(Deserialize)]
struct CookieReply {
    cookie: Option<String>,
    error: Option<String>,
    txid: Option<String>,
}

/// The cookie in a reply to [`cookie_request`] with `txid`.
pub fn parse_cookie(reply: &[u8], txid: &str) -> Result<String, MeshError> {
    let r: CookieReply = decode(reply)?;
    check_txid(r.txid.as_deref(), txid)?;
    if let Some(error) = r.error {
        return Err(refused(error));
    }
    r.cookie.ok_or_else(|| bad("no cookie in the reply"))
}

/// This node as cjdroute's `Core_nodeInfo` describes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CjdnsSelf {
    /// Its fc00::/8 address (`myIp6`, else computed from the key).
    pub address: Option<String>,
    /// Its public key (`....k`).
    pub key: Option<String>,
    /// `myAddr` as cjdroute gives it.
    pub addr: String,
    /// The cjdns protocol version.
    pub version: Option<i64>,
}

/// The reply to `Core_nodeInfo`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeInfoReply {
    my_addr: Option<String>,
    my_ip6: Option<String>,
    version: Option<i64>,
    error: Option<String>,
    txid: Option<String>,
}

/// The node's own description in a reply to [`NODE_INFO`] with `txid`.
pub fn parse_node_info(reply: &[u8], txid: &str) -> Result<CjdnsSelf, MeshError> {
    let r: NodeInfoReply = decode(reply)?;
    check_txid(r.txid.as_deref(), txid)?;
    if let Some(error) = r.error.filter(|e| e != "none") {
        return Err(refused(error));
    }
    let addr = r.my_addr.ok_or_else(|| bad("no myAddr in the reply"))?;
    let address = r
        .my_ip6
        .and_then(|ip| ip.parse::<Ipv6Addr>().ok())
        .or_else(|| address_of(&addr))
        .map(|ip| ip.to_string());
    Ok(CjdnsSelf {
        address,
        key: key_of(&addr).map(str::to_owned),
        version: r.version,
        addr,
    })
}

/// One entry of a peer stats page, as cjdroute names its fields.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Peer {
    addr: String,
    lladdr: Option<String>,
    state: Option<String>,
    bytes_in: Option<i64>,
    bytes_out: Option<i64>,
    recv_kbps: Option<i64>,
    send_kbps: Option<i64>,
    duplicates: Option<i64>,
    lost_packets: Option<i64>,
    received_packets: Option<i64>,
    received_out_of_range: Option<i64>,
    is_incoming: Option<i64>,
    last: Option<i64>,
    user: Option<String>,
}

/// One page of peer stats.
#[derive(Debug, Deserialize)]
struct PageReply {
    #[serde(default)]
    peers: Vec<Peer>,
    more: Option<i64>,
    error: Option<String>,
    txid: Option<String>,
}

/// The links on one page of a peer stats reply to `txid`, and whether
/// another page follows. An `error` in the reply (`"Auth failed."` for a
/// call that needs a password) is [`MeshError::Refused`].
pub fn parse_page(reply: &[u8], txid: &str) -> Result<(Vec<Link>, bool), MeshError> {
    let page: PageReply = decode(reply)?;
    check_txid(page.txid.as_deref(), txid)?;
    if let Some(error) = page.error.filter(|e| e != "none") {
        return Err(refused(error));
    }
    let links = page.peers.into_iter().map(link).collect();
    Ok((links, page.more.unwrap_or(0) != 0))
}

fn link(p: Peer) -> Link {
    let n = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
    let received = n(p.received_packets);
    let lost = n(p.lost_packets);
    // Of the packets that should have arrived, the share that did not.
    let loss = match (received, lost) {
        (Some(r), Some(l)) if r + l > 0 => Some(l as f64 / (r + l) as f64),
        (Some(_), Some(_)) => Some(0.0),
        _ => None,
    };
    // Kilobits a second as cjdroute counts them (1000 bits), in bytes.
    let rate = |kbps: Option<i64>| n(kbps).map(|k| k * 1000 / 8);
    Link {
        kind: LinkKind::Cjdns,
        address: address_of(&p.addr).map(|a| a.to_string()),
        key: key_of(&p.addr).map(str::to_owned),
        remote: p.lladdr.filter(|l| !l.is_empty()),
        state: p.state.unwrap_or_else(|| "UNKNOWN".into()),
        inbound: p.is_incoming.map(|i| i != 0),
        port: None,
        bytes_in: n(p.bytes_in).unwrap_or(0),
        bytes_out: n(p.bytes_out).unwrap_or(0),
        rate_in: rate(p.recv_kbps),
        rate_out: rate(p.send_kbps),
        latency_ms: None,
        loss,
        uptime_s: None,
        last_error: None,
        coords: None,
        packets: Some(Packets {
            received,
            lost,
            duplicates: n(p.duplicates),
            out_of_range: n(p.received_out_of_range),
        }),
        last_message_unix_ms: n(p.last),
        user: p.user,
        cjdns_addr: Some(p.addr),
        peers: Vec::new(),
    }
}

fn decode<'a, T: Deserialize<'a>>(reply: &'a [u8]) -> Result<T, MeshError> {
    serde_bencode::from_bytes(reply).map_err(|e| bad(&format!("not a bencoded reply: {e}")))
}

fn check_txid(got: Option<&str>, want: &str) -> Result<(), MeshError> {
    match got {
        Some(t) if t == want => Ok(()),
        _ => Err(bad("the reply is to another request (txid)")),
    }
}

fn bad(reason: &str) -> MeshError {
    MeshError::Reply {
        kind: LinkKind::Cjdns,
        reason: reason.to_owned(),
    }
}

fn refused(reason: String) -> MeshError {
    MeshError::Refused {
        kind: LinkKind::Cjdns,
        reason,
    }
}

/// The public key in a peer's `addr` (`....<key>.k`).
fn key_of(addr: &str) -> Option<&str> {
    let start = addr.rfind('.').and_then(|k| addr[..k].rfind('.'))?;
    let key = &addr[start + 1..];
    (key.len() == 54 && key.ends_with(".k")).then_some(key)
}

/// The IPv6 address of the node with the key in `addr`.
pub fn address_of(addr: &str) -> Option<Ipv6Addr> {
    let key = key_of(addr)?;
    let bytes = base32().decode(&key.as_bytes()[..52]).ok()?;
    let hash = Sha512::digest(Sha512::digest(&bytes));
    let ip: [u8; 16] = hash[..16].try_into().ok()?;
    // Every cjdns address is in fc00::/8; a key whose hash is not is no
    // cjdns node's.
    (ip[0] == 0xfc).then(|| Ipv6Addr::from(ip))
}

/// cjdns' base32: its own alphabet, least significant bits first.
fn base32() -> data_encoding::Encoding {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("0123456789bcdfghjklmnpqrstuvwxyz");
    spec.bit_order = data_encoding::BitOrder::LeastSignificantFirst;
    spec.encoding().expect("a valid base32 specification")
}

/// The password in `~/.cjdnsadmin` (JSON with `addr`, `port`, `password`).
pub fn password_from_file(text: &str) -> Option<String> {
    let v: BTreeMap<String, serde_json::Value> = serde_json::from_str(text).ok()?;
    v.get("password")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "92dyb2331kd5txjucrgwv98zq88rvcf5nnzzknu66sr7vr3pwum0.k";

    #[test]
    fn requests_are_sorted_bencode() {
        assert_eq!(
            request(PEER_STATS, 2, "t1"),
            b"d4:argsd4:pagei2ee1:q29:InterfaceController_peerStats4:txid2:t1e"
        );
        assert_eq!(cookie_request("t2"), b"d1:q6:cookie4:txid2:t2e");
    }

    #[test]
    fn auth_hashes_password_cookie_then_the_request() {
        let r = auth_request(PEER_STATS, 0, "pw", "1234", "t3");
        let text = String::from_utf8(r.clone()).unwrap();
        assert!(
            text.starts_with(
                "d2:aq29:InterfaceController_peerStats4:argsd4:pagei0ee6:cookie4:1234"
            ),
            "{text}"
        );
        // Undo the second step: the request with the first hash in place
        // hashes to the hash sent.
        let first = sha256_hex(b"pw1234");
        let sent = &text[text.find("4:hash64:").unwrap() + 9..][..64];
        let with_first = text.replace(sent, &first);
        assert_eq!(sent, sha256_hex(with_first.as_bytes()));
    }

    #[test]
    fn addresses_come_from_keys() {
        let addr = format!("v20.0000.0000.0000.0013.{KEY}");
        assert_eq!(
            address_of(&addr),
            Some("fc29:09c3:74d3:6ce0:3381:90f6:4e05:a5e8".parse().unwrap())
        );
        assert_eq!(key_of(&addr), Some(KEY));
        assert_eq!(address_of("v20.0000.0000.0000.0013.short.k"), None);
    }

    #[test]
    fn pages_read_every_field() {
        let addr = format!("v20.0000.0000.0000.0013.{KEY}");
        let reply = format!(
            "d5:peersld4:addr{}:{addr}7:bytesIni1000e8:bytesOuti2000e10:duplicatesi1e\
             10:isIncomingi1e4:lasti1700000000000e6:lladdr14:10.0.0.2:11234\
             11:lostPacketsi5e18:receivedOutOfRangei2e15:receivedPacketsi95e\
             8:recvKbpsi80e8:sendKbpsi16e5:state11:ESTABLISHEDee4:morei1e5:totali7e4:txid2:t9e",
            addr.len()
        );
        let (links, more) = parse_page(reply.as_bytes(), "t9").unwrap();
        assert!(more);
        let l = &links[0];
        assert_eq!(l.kind, LinkKind::Cjdns);
        assert_eq!(
            l.address.as_deref(),
            Some("fc29:9c3:74d3:6ce0:3381:90f6:4e05:a5e8")
        );
        assert_eq!(l.remote.as_deref(), Some("10.0.0.2:11234"));
        assert_eq!(l.state, "ESTABLISHED");
        assert_eq!((l.bytes_in, l.bytes_out), (1000, 2000));
        assert_eq!((l.rate_in, l.rate_out), (Some(10_000), Some(2_000)));
        assert_eq!(l.loss, Some(0.05));
        assert_eq!(l.inbound, Some(true));
        assert_eq!(l.last_message_unix_ms, Some(1_700_000_000_000));
        assert!(parse_page(reply.as_bytes(), "other").is_err());
    }

    #[test]
    fn node_info_names_this_node() {
        assert_eq!(
            request_no_args(NODE_INFO, "t4"),
            b"d1:q13:Core_nodeInfo4:txid2:t4e"
        );
        let my_addr = format!("v21.0000.0000.0000.0001.{KEY}");
        let reply = format!(
            "d19:compressedSchemeHex6:0014a05:error4:none6:myAddr{}:{my_addr}4:txid2:t47:versioni21ee",
            my_addr.len()
        );
        let me = parse_node_info(reply.as_bytes(), "t4").unwrap();
        assert_eq!(me.key.as_deref(), Some(KEY));
        assert_eq!(me.version, Some(21));
        assert_eq!(me.address, address_of(&my_addr).map(|ip| ip.to_string()));
        assert!(me.address.as_deref().unwrap().starts_with("fc"));
        // A newer cjdroute's myIp6 is taken as it says.
        let reply = format!(
            "d6:myAddr{}:{my_addr}5:myIp639:fc00:0000:0000:0000:0000:0000:0000:00014:txid2:t5e",
            my_addr.len()
        );
        let me = parse_node_info(reply.as_bytes(), "t5").unwrap();
        assert_eq!(me.address.as_deref(), Some("fc00::1"));
        assert!(parse_node_info(b"d5:error4:nope4:txid2:t6e", "t6").is_err());
        assert!(parse_node_info(b"d4:txid2:t7e", "t7").is_err());
        assert!(parse_node_info(reply.as_bytes(), "other").is_err());
    }

    #[test]
    fn errors_and_cookies() {
        let err = parse_page(b"d5:error12:Auth failed.4:txid1:xe", "x").unwrap_err();
        assert!(matches!(err, MeshError::Refused { .. }), "{err}");
        assert_eq!(
            parse_cookie(b"d6:cookie10:17000000004:txid1:ye", "y").unwrap(),
            "1700000000"
        );
        assert!(parse_page(b"garbage", "x").is_err());
        assert_eq!(
            password_from_file(r#"{"addr":"127.0.0.1","port":11234,"password":"s3"}"#).as_deref(),
            Some("s3")
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse_page(&bytes, "t");
            let _ = parse_cookie(&bytes, "t");
        }
    }
}
