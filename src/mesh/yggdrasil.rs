//! The Yggdrasil admin protocol, pure: requests out, replies in.
//!
//! ```text
//! -> {"request":"getPeers","keepalive":false}\n      (one JSON object per request)
//! <- {"status":"success","request":{...},"response":{"peers": ...}}
//! ```
//!
//! Both generations of the daemon are read. 0.4 (Debian's 0.4.7) answers
//! `getPeers` with a list of `address`, `key`, `port`, `priority`,
//! `coords`, `remote`, `bytes_recvd`, `bytes_sent` and `uptime` (seconds);
//! before 0.4 the peers were an object keyed by address, also read. 0.5
//! drops `coords` and adds `up`, `inbound`, the latency in nanoseconds
//! (`latency`; `latency_ms` in early 0.5 releases despite its unit),
//! `rate_recvd`, `rate_sent` (bytes a second) and `last_error`. `getSelf`
//! gives this node's address, key and subnet (and its `coords` in 0.4).

use super::{Link, LinkKind, MeshError, YggdrasilSelf};
use serde_json::Value;

/// The request line for admin function `name` (`getPeers`, `getSelf`); the
/// daemon closes the connection after its answer. The empty `arguments` is
/// there because 0.5's handlers decode it and fail on none at all.
pub fn request(name: &str) -> Vec<u8> {
    let request = serde_json::json!({ "request": name, "arguments": {}, "keepalive": false });
    let mut line = serde_json::to_vec(&request).expect("a JSON object serializes");
    line.push(b'\n');
    line
}

/// The `response` object of a reply, or the daemon's error.
fn response(reply: &[u8]) -> Result<serde_json::Map<String, Value>, MeshError> {
    let value: Value = serde_json::from_slice(reply).map_err(|e| MeshError::Reply {
        kind: LinkKind::Yggdrasil,
        reason: format!("not JSON: {e}"),
    })?;
    let status = value.get("status").and_then(Value::as_str).unwrap_or("");
    if status != "success" {
        let error = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no status and no error in the reply");
        return Err(MeshError::Refused {
            kind: LinkKind::Yggdrasil,
            reason: error.to_owned(),
        });
    }
    match value.get("response") {
        Some(Value::Object(m)) => Ok(m.clone()),
        _ => Err(MeshError::Reply {
            kind: LinkKind::Yggdrasil,
            reason: "no response object".into(),
        }),
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn number(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn count(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

fn coords(v: &Value) -> Option<Vec<u64>> {
    let list = v.get("coords")?.as_array()?;
    Some(list.iter().filter_map(Value::as_u64).collect())
}

/// The links in a `getPeers` reply, at most `max`.
pub fn parse_peers(reply: &[u8], max: usize) -> Result<Vec<Link>, MeshError> {
    let response = response(reply)?;
    let entries: Vec<(Option<String>, &Value)> = match response.get("peers") {
        // Before 0.4: keyed by the peer's address.
        Some(Value::Object(m)) => m.iter().map(|(k, v)| (Some(k.clone()), v)).collect(),
        // 0.4 and 0.5: a list.
        Some(Value::Array(a)) => a.iter().map(|v| (None, v)).collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(_) => {
            return Err(MeshError::Reply {
                kind: LinkKind::Yggdrasil,
                reason: "peers is neither an object nor a list".into(),
            })
        }
    };
    Ok(entries
        .into_iter()
        .take(max)
        .map(|(address, p)| {
            // 0.4 lists only peerings that are up; 0.5 says.
            let up = p.get("up").and_then(Value::as_bool).unwrap_or(true);
            let latency_ns = number(p, "latency").or_else(|| number(p, "latency_ms"));
            Link {
                kind: LinkKind::Yggdrasil,
                address: address.or_else(|| text(p, "address")),
                key: text(p, "key"),
                remote: text(p, "remote"),
                state: if up { "up" } else { "down" }.into(),
                inbound: p.get("inbound").and_then(Value::as_bool),
                port: count(p, "port"),
                bytes_in: count(p, "bytes_recvd").unwrap_or(0),
                bytes_out: count(p, "bytes_sent").unwrap_or(0),
                rate_in: count(p, "rate_recvd"),
                rate_out: count(p, "rate_sent"),
                latency_ms: latency_ns.map(|ns| ns / 1e6),
                loss: None,
                uptime_s: number(p, "uptime"),
                last_error: text(p, "last_error"),
                coords: coords(p),
                packets: None,
                last_message_unix_ms: None,
                user: None,
                cjdns_addr: None,
                peers: Vec::new(),
            }
        })
        .collect())
}

/// This node as a `getSelf` reply describes it. Before 0.4 the fields were
/// nested under `self`, keyed by the node's address.
pub fn parse_self(reply: &[u8]) -> Result<YggdrasilSelf, MeshError> {
    let response = response(reply)?;
    let (address, node) = match response.get("self") {
        Some(Value::Object(m)) if m.len() == 1 => {
            let (k, v) = m.iter().next().expect("one entry");
            (Some(k.clone()), v.clone())
        }
        _ => (None, Value::Object(response)),
    };
    Ok(YggdrasilSelf {
        address: address.or_else(|| text(&node, "address")),
        key: text(&node, "key"),
        subnet: text(&node, "subnet"),
        build_version: text(&node, "build_version"),
        coords: coords(&node),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_line() {
        let r = request("getPeers");
        assert_eq!(r.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&r).unwrap();
        assert_eq!(v["request"], "getPeers");
        assert_eq!(v["keepalive"], false);
        assert_eq!(v["arguments"], serde_json::json!({}));
    }

    #[test]
    fn reads_0_4_peers() {
        // As yggdrasil 0.4.7 answers.
        let reply = br#"{"status":"success","request":null,"response":{"peers":[
            {"address":"201:1::1","key":"ab12","port":2,"priority":0,"coords":[1,3],
             "remote":"tcp://10.0.0.2:12345","bytes_recvd":1200,"bytes_sent":3400,"uptime":12.5}]}}"#;
        let links = parse_peers(reply, 10).unwrap();
        let keyed = br#"{"status":"success","response":{"peers":{"201:1::1":{"bytes_recvd":1200,
            "bytes_sent":3400,"coords":[1,3],"key":"ab12","port":2,"remote":"tcp://10.0.0.2:12345",
            "uptime":12.5}}}}"#;
        assert_eq!(parse_peers(keyed, 10).unwrap(), links);
        assert_eq!(links.len(), 1);
        let l = &links[0];
        assert_eq!(l.address.as_deref(), Some("201:1::1"));
        assert_eq!(l.remote.as_deref(), Some("tcp://10.0.0.2:12345"));
        assert_eq!((l.bytes_in, l.bytes_out), (1200, 3400));
        assert_eq!(l.coords, Some(vec![1, 3]));
        assert_eq!(l.uptime_s, Some(12.5));
        assert_eq!(l.state, "up");
        assert_eq!((l.port, l.latency_ms, l.inbound), (Some(2), None, None));
    }

    #[test]
    fn reads_0_5_peers() {
        let reply = br#"{"status":"success","request":{},"response":{"peers":[
            {"remote":"tls://[::1]:1","up":true,"inbound":true,"address":"202::2","key":"cd",
             "port":1,"priority":0,"bytes_recvd":5,"bytes_sent":6,"rate_recvd":7,"rate_sent":8,
             "uptime":3.0,"latency":2500000},
            {"remote":"tcp://h:2","up":false,"inbound":false,"key":"","port":0,"priority":0,
             "last_error":"connection refused","last_error_time":1000}]}}"#;
        let links = parse_peers(reply, 10).unwrap();
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].latency_ms, Some(2.5));
        assert_eq!((links[0].rate_in, links[0].rate_out), (Some(7), Some(8)));
        assert_eq!(links[0].inbound, Some(true));
        assert_eq!(links[1].state, "down");
        assert_eq!(links[1].address, None);
        assert_eq!(links[1].last_error.as_deref(), Some("connection refused"));
        assert_eq!(parse_peers(reply, 1).unwrap().len(), 1);
    }

    #[test]
    fn errors_are_the_daemons() {
        let err = parse_peers(br#"{"status":"error","error":"Unknown action"}"#, 1).unwrap_err();
        assert!(err.to_string().contains("Unknown action"), "{err}");
        assert!(parse_peers(b"nope", 1).is_err());
        assert!(parse_peers(br#"{"status":"success","response":{"peers":3}}"#, 1).is_err());
    }

    #[test]
    fn reads_self_of_both_generations() {
        let old =
            br#"{"status":"success","response":{"self":{"200:aa::1":{"build_name":"yggdrasil",
            "build_version":"0.3.16","coords":[],"key":"ee","subnet":"300:aa::/64"}}}}"#;
        let s = parse_self(old).unwrap();
        assert_eq!(s.address.as_deref(), Some("200:aa::1"));
        assert_eq!(s.build_version.as_deref(), Some("0.3.16"));
        // 0.4.7.
        let v04 = br#"{"status":"success","request":null,"response":{"build_name":"unknown",
            "build_version":"unknown","key":"a4","address":"200:b6c5::1","coords":[],
            "subnet":"300:b6c5::/64"}}"#;
        let s = parse_self(v04).unwrap();
        assert_eq!(s.address.as_deref(), Some("200:b6c5::1"));
        assert_eq!(s.coords, Some(vec![]));
        let new =
            br#"{"status":"success","response":{"build_name":"yggdrasil","build_version":"0.5.8",
            "key":"ff","address":"200:bb::1","routing_entries":3,"subnet":"300:bb::/64"}}"#;
        let s = parse_self(new).unwrap();
        assert_eq!(s.address.as_deref(), Some("200:bb::1"));
        assert_eq!(s.subnet.as_deref(), Some("300:bb::/64"));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse_peers(&bytes, 8);
            let _ = parse_self(&bytes);
        }
    }
}
