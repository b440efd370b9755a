//! IPNS against the JS `ipns` package (Helia's), through
//! `tests/interop/ipns-check.mjs`: records we sign validate there and read
//! back with the same fields; records it signs verify here (with Ed25519,
//! RSA and secp256k1 keys), and stop verifying when tampered with; both
//! sides spell names, routing keys and pubsub topics the same. Also
//! `meshcast key list`.

use crate::support::*;
use anyhow::{ensure, Context, Result};
use libp2p::identity::Keypair;
use meshcast::ipns::{KeyStore, Name, Record};
use serde::Deserialize;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const VALUE: &str = "/ipfs/bafkqaddwgevxmmraojswg33smq";

/// One line of `ipns-check.mjs` output.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsView {
    peer_id: String,
    name: String,
    cid: String,
    routing_key: String,
    topic: String,
    value: Option<String>,
    sequence: Option<String>,
    validity: Option<String>,
    ttl: Option<String>,
    v1: Option<bool>,
}

fn ipns_check<I, S>(args: I) -> Result<JsView>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = ipns_check_cmd();
    c.args(args);
    let out = stdout_of(c)?;
    serde_json::from_str(out.trim()).with_context(|| format!("ipns-check printed {out:?}"))
}

/// The JS side's names for a key must be ours, character for character.
fn assert_same_names(js: &JsView, name: &Name) {
    assert_eq!(js.peer_id, name.peer_id().to_base58());
    assert_eq!(js.name, name.to_string());
    assert_eq!(js.cid, name.to_cid().to_string());
    assert_eq!(
        js.routing_key,
        data_encoding::BASE64URL_NOPAD.encode(&name.routing_key())
    );
    assert_eq!(js.topic, name.pubsub_topic());
    // And our parser takes every spelling the JS side printed.
    for s in [&js.peer_id, &js.name, &js.cid] {
        assert_eq!(s.parse::<Name>().as_ref(), Ok(name), "{s}");
    }
}

fn secs_from_now(secs: u64, nanos: u32) -> SystemTime {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    UNIX_EPOCH + Duration::new(now.as_secs() + secs, nanos)
}

/// The instant a validity string names (humantime takes the `Z` forms both
/// sides write).
fn instant(validity: &str) -> SystemTime {
    humantime::parse_rfc3339(validity).unwrap_or_else(|e| panic!("{validity:?}: {e}"))
}

#[test]
fn records_we_sign_validate_in_js() -> Result<()> {
    let dir = tempdir()?;
    let key = Keypair::generate_ed25519();
    let name = Name::from_public_key(&key.public());
    let cases = [
        // A whole second: no fraction at all, as kubo writes it.
        (0, Duration::ZERO, secs_from_now(3600, 0), "Z"),
        // Trailing zeros of the fraction dropped.
        (
            7,
            Duration::new(90, 123),
            secs_from_now(3600, 120_000_000),
            ".12Z",
        ),
        // The largest values other implementations read.
        (
            i64::MAX as u64,
            Duration::from_nanos(i64::MAX as u64),
            humantime::parse_rfc3339("9999-12-31T23:59:59.999999999Z")?,
            ".999999999Z",
        ),
    ];
    for (i, (sequence, ttl, validity, ending)) in cases.into_iter().enumerate() {
        let record = Record::sign(&key, VALUE, sequence, validity, ttl)?;
        let file = dir.path().join(format!("{i}.ipns-record"));
        std::fs::write(&file, record.to_bytes())?;
        let js = ipns_check([
            "validate".as_ref(),
            name.to_string().as_ref(),
            file.as_os_str(),
        ])?;
        assert_same_names(&js, &name);
        assert_eq!(js.value.as_deref(), Some(VALUE));
        assert_eq!(js.sequence, Some(sequence.to_string()));
        assert_eq!(js.ttl, Some(ttl.as_nanos().to_string()));
        assert_eq!(js.v1, Some(true), "we write V1 fields for old readers");
        let v = js.validity.unwrap();
        assert!(v.ends_with(ending), "{v} should end with {ending}");
        assert_eq!(instant(&v), validity);
    }
    // Another key's name: the JS validator refuses the record too.
    let other = Name::from_public_key(&Keypair::generate_ed25519().public());
    let file = dir.path().join("0.ipns-record");
    let mut c = ipns_check_cmd();
    c.arg("validate").arg(other.to_string()).arg(&file);
    ensure!(
        !c.output()?.status.success(),
        "the JS validator accepted a record for the wrong name"
    );
    Ok(())
}

/// Where the signed DAG-CBOR map starts: `{TTL: ...` in canonical order.
fn data_offset(record: &[u8]) -> usize {
    record
        .windows(5)
        .position(|w| w == b"\xa5\x63TTL")
        .expect("the record holds its data map")
}

#[test]
fn records_js_signs_verify_here() -> Result<()> {
    let dir = tempdir()?;
    for v2_only in [false, true] {
        let file = dir.path().join(format!("js-{v2_only}.ipns-record"));
        let mut args = vec![
            "create".to_string(),
            file.display().to_string(),
            VALUE.into(),
            "42".into(),
            "3600000".into(),
            "--ttl-ns".into(),
            "60000000001".into(),
        ];
        if v2_only {
            args.push("--v2-only".into());
        }
        let js = ipns_check(&args)?;
        let name: Name = js.name.parse()?;
        assert_same_names(&js, &name);
        assert_eq!(js.v1, Some(!v2_only));
        let bytes = std::fs::read(&file)?;
        let record = Record::verify(&name, &bytes)?;
        assert_eq!(record.value(), VALUE);
        assert_eq!(record.sequence(), 42);
        assert_eq!(record.ttl(), Duration::from_nanos(60_000_000_001));
        assert_eq!(record.validity(), instant(js.validity.as_deref().unwrap()));
        assert!(!record.is_expired(SystemTime::now()));
        assert_eq!(record.to_bytes(), bytes);

        // Not for another name.
        let other = Name::from_public_key(&Keypair::generate_ed25519().public());
        ensure!(Record::verify(&other, &bytes).is_err());

        // Every byte of the signed data matters; no other byte changes
        // what the record says (a changed V1 signature is ignored, as the
        // spec requires).
        let data = data_offset(&bytes);
        for i in 0..bytes.len() {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            match Record::verify(&name, &t) {
                Err(_) => {}
                Ok(r) => {
                    ensure!(i < data, "flipping byte {i} inside the data verified");
                    ensure!(
                        (r.value(), r.sequence(), r.validity(), r.ttl())
                            == (
                                record.value(),
                                record.sequence(),
                                record.validity(),
                                record.ttl()
                            ),
                        "flipping byte {i} changed the record to {r:?}"
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn records_js_signs_with_rsa_and_secp256k1_keys_verify_here() -> Result<()> {
    let dir = tempdir()?;
    for (key_type, peer_id_prefix, name_prefix) in
        [("RSA", "Qm", "k2k4r8"), ("secp256k1", "16Uiu2", "kzwfwjn5")]
    {
        let file = dir.path().join(format!("js-{key_type}.ipns-record"));
        let file_arg = file.display().to_string();
        let js = ipns_check([
            "create",
            &file_arg,
            VALUE,
            "7",
            "3600000",
            "--key-type",
            key_type,
        ])?;
        ensure!(
            js.peer_id.starts_with(peer_id_prefix) && js.name.starts_with(name_prefix),
            "{key_type}: {js:?}"
        );
        let name: Name = js.name.parse()?;
        assert_same_names(&js, &name);
        let bytes = std::fs::read(&file)?;
        // An RSA name hashes the key, so the record must carry it.
        ensure!(
            name.inlined_public_key().is_none() == (key_type == "RSA"),
            "{key_type}"
        );
        let record = Record::verify(&name, &bytes).with_context(|| key_type.to_owned())?;
        ensure!(
            (record.value(), record.sequence()) == (VALUE, 7),
            "{record:?}"
        );
        let by_peer_id: Name = js.peer_id.parse()?;
        ensure!(Record::verify(&by_peer_id, &bytes).is_ok(), "{key_type}");
        let other = Name::from_public_key(&Keypair::generate_ed25519().public());
        ensure!(Record::verify(&other, &bytes).is_err(), "{key_type}");
    }
    Ok(())
}

#[test]
fn expiry_is_the_callers_check() -> Result<()> {
    let dir = tempdir()?;
    let file = dir.path().join("expired.ipns-record");
    let js = ipns_check([
        "create",
        file.to_str().unwrap(),
        VALUE,
        "1",
        "0",
        "--v2-only",
    ])?;
    let name: Name = js.name.parse()?;
    let record = Record::verify(&name, &std::fs::read(&file)?)?;
    let validity = instant(js.validity.as_deref().unwrap());
    assert!(record.is_expired(validity + Duration::from_millis(1)));
    assert!(!record.is_expired(validity - Duration::from_secs(1)));
    Ok(())
}

#[test]
fn key_list_prints_each_key_and_its_name() -> Result<()> {
    let repo = Repo::new()?;
    // No repo yet: an error, and none is created.
    let out = repo.cmd(["key", "list"]).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("no meshcast repo"),
        "{stderr}"
    );
    ensure!(!repo.path().exists(), "key list created the repo");
    std::fs::create_dir(repo.path())?;
    assert_eq!(repo.run(["key", "list"])?, "");
    let store = KeyStore::open(&repo.path())?;
    let talks = store.get_or_create("talks")?;
    let live = store.get_or_create("live")?;
    let out = repo.run(["key", "list"])?;
    let want = format!(
        "live {}\ntalks {}\n",
        Name::from_public_key(&live.public()),
        Name::from_public_key(&talks.public())
    );
    assert_eq!(out, want);

    // The key files are libp2p protobuf keys: the JS stack reads them and
    // finds the names `key list` printed.
    for line in out.lines() {
        let (key, name) = line.split_once(' ').unwrap();
        let js = ipns_check([
            "key-name".as_ref(),
            repo.path().join("keys").join(key).as_os_str(),
        ])?;
        assert_same_names(&js, &name.parse()?);
    }

    // The record the store keeps for a key validates in JS under the listed
    // name.
    let record = store.sign_next(
        "live",
        VALUE,
        secs_from_now(600, 0),
        Duration::from_secs(60),
    )?;
    let name = out.lines().next().unwrap().split_once(' ').unwrap().1;
    let stored = repo.path().join("ipns/live.record");
    check_stored(&stored, &record)?;
    let js = ipns_check(["validate".as_ref(), name.as_ref(), stored.as_os_str()])?;
    assert_eq!(js.sequence.as_deref(), Some("0"));
    assert_eq!(js.value.as_deref(), Some(VALUE));
    Ok(())
}

fn check_stored(path: &Path, record: &Record) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    ensure!(
        bytes == record.to_bytes(),
        "{} is not the record signed",
        path.display()
    );
    Ok(())
}
