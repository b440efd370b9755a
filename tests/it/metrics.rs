//! Metrics and logs through the real binary. A real Prometheus server
//! (Debian's `prometheus`) scrapes an origin that ffmpeg publishes to and a
//! mirror that follows it, on loopback: both targets are up (Prometheus
//! parsed what they served), its query API returns meshcast series, and
//! `promtool check metrics` accepts `/metrics`. The counters move while the
//! publisher sends and the mirror follows: ingest frames and bytes,
//! segments, IPNS publishes, HTTP requests and bytes, Bitswap bytes each
//! way, the mirror's segments and lag, connections by transport. Logs in
//! JSON are one object per line; with `[metrics] enabled = false` there is
//! no `/metrics`.

use crate::support::*;
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "metricskey-0123456789";

/// `GET /metrics` of `gw` as Prometheus asks for it (OpenMetrics).
fn scrape(gw: &Gateway) -> Result<String> {
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let r = gw.expect("/metrics", &[("accept", accept)], 200)?;
    let ct = r.header("content-type").unwrap_or_default().to_owned();
    ensure!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = String::from_utf8(r.body)?;
    ensure!(text.ends_with("# EOF\n"), "no # EOF at the end");
    Ok(text)
}

/// `GET /metrics` of `gw` without asking for a format: the Prometheus text
/// format 0.0.4, which `promtool check metrics` reads.
fn scrape_text(gw: &Gateway) -> Result<String> {
    let r = gw.expect("/metrics", &[], 200)?;
    let ct = r.header("content-type").unwrap_or_default().to_owned();
    ensure!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    Ok(String::from_utf8(r.body)?)
}

/// The value of the sample `series` (name and labels as exposed), absent
/// as `None`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
}

/// [`sample`], which must be present.
fn value(text: &str, series: &str) -> Result<f64> {
    sample(text, series).with_context(|| format!("no sample {series} in\n{text}"))
}

/// `promtool check metrics` (Debian's `prometheus` package) on `text`.
fn promtool_check(text: &str) -> Result<()> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool (Debian package prometheus; scripts/test installs it)")?;
    child
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A Prometheus server scraping `targets` every second, killed on drop.
struct Prometheus {
    _child: KillOnDrop,
    base: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(targets: &[&Gateway]) -> Result<Self> {
        let dir = tempdir()?;
        let targets: Vec<String> = targets
            .iter()
            .map(|g| format!("'{}'", g.base.trim_start_matches("http://")))
            .collect();
        let config = dir.path().join("prometheus.yml");
        write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: meshcast\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            )
            .as_bytes(),
        )?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("running prometheus (Debian package prometheus; scripts/test installs it)")?;
        let p = Self {
            _child: KillOnDrop::new(child),
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let start = Instant::now();
        while ureq::get(format!("{}/-/ready", p.base)).call().is_err() {
            ensure!(
                start.elapsed() < Duration::from_secs(20),
                "prometheus not ready after 20 s:\n{}",
                log_tail("prometheus", &p._dir.path().join("prometheus.log"))
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(p)
    }

    /// The result vector of the instant query `q`.
    fn query(&self, q: &str) -> Result<Vec<Value>> {
        let mut resp = ureq::get(format!("{}/api/v1/query", self.base))
            .query("query", q)
            .call()
            .with_context(|| format!("query {q}"))?;
        let v: Value = serde_json::from_str(&resp.body_mut().read_to_string()?)?;
        ensure!(v["status"] == "success", "query {q}: {v}");
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until the query `q` returns at least `n` series; them.
    fn wait_series(&self, q: &str, n: usize) -> Result<Vec<Value>> {
        let start = Instant::now();
        loop {
            let r = self.query(q)?;
            if r.len() >= n {
                return Ok(r);
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!("query {q}: {} series after 20 s, want {n}: {r:?}", r.len());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

#[test]
fn prometheus_scrapes_an_origin_and_its_mirror_while_counters_move() -> Result<()> {
    let origin_repo = Repo::new()?;
    let origin = Gateway::start(&origin_repo, &["--stream", &format!("cam={KEY}")])?;
    let name = ipns_name(&origin, "cam")?;
    let mirror_repo = Repo::new()?;
    let mirror = Gateway::start(
        &mirror_repo,
        &["--peer", &tcp_addr(&origin)?, "--follow", &name],
    )?;
    scrape(&origin)?;
    promtool_check(&scrape_text(&origin)?)?;
    let prometheus = Prometheus::start(&[&origin, &mirror])?;

    let mut publisher = publish_cmd(rtmp_addr(&origin)?, KEY, &clip(12)?, true).spawn()?;
    wait_live_segments(&mirror, "cam", 3, Duration::from_secs(25))?;
    let early = scrape(&origin)?;
    // A segment through the gateway, so HTTP bytes move (the hot path once
    // the block is mapped).
    let live = get_text(&origin, "/live/cam.m3u8")?;
    let segment = live
        .lines()
        .find(|l| l.starts_with("/ipfs/") && !l.contains("init"))
        .context("a segment in the live playlist")?;
    origin.expect(segment, &[], 200)?;
    origin.expect(segment, &[], 200)?;
    std::thread::sleep(Duration::from_secs(3));
    let late = scrape(&origin)?;
    let mirrored = scrape(&mirror)?;
    let status = publisher.wait()?;
    ensure!(status.success(), "ffmpeg: {status}");
    promtool_check(&scrape_text(&origin)?)?;
    promtool_check(&scrape_text(&mirror)?)?;

    // Ingest and segments move while ffmpeg publishes.
    let video = "meshcast_ingest_frames_total{stream=\"cam\",track=\"video\"}";
    ensure!(
        value(&late, video)? > value(&early, video)?,
        "video frames did not move"
    );
    let media = "meshcast_ingest_media_bytes_total{stream=\"cam\"}";
    ensure!(value(&late, media)? > value(&early, media)?);
    ensure!(
        value(
            &late,
            "meshcast_ingest_frames_total{stream=\"cam\",track=\"audio\"}"
        )? > 0.0
    );
    ensure!(value(&late, "meshcast_stream_publishing{stream=\"cam\"}")? == 1.0);
    let segments = value(&late, "meshcast_hls_segments_total{stream=\"cam\"}")?;
    ensure!(segments >= 3.0, "{segments} segments");
    // LL-HLS parts are cut from the fMP4 stream as it arrives.
    ensure!(value(&late, "meshcast_hls_parts_total{stream=\"cam\"}")? > 0.0);
    ensure!(
        value(
            &late,
            "meshcast_hls_segment_duration_seconds_count{stream=\"cam\"}"
        )? == segments
    );
    // 2 s GOPs: every segment lasts about 2 s.
    let total = value(
        &late,
        "meshcast_hls_segment_duration_seconds_sum{stream=\"cam\"}",
    )?;
    ensure!(
        (1.5..=2.5).contains(&(total / segments)),
        "mean segment {} s",
        total / segments
    );
    ensure!(
        value(
            &late,
            "meshcast_hls_segment_ready_lag_seconds_count{stream=\"cam\"}"
        )? == segments
    );
    ensure!(value(&late, "meshcast_ipns_publishes_total{stream=\"cam\"}")? > 0.0);
    ensure!(value(&late, "meshcast_ipns_sequence{stream=\"cam\"}")? > 0.0);
    // HTTP: the segment requests, and the bytes they sent.
    ensure!(
        value(
            &late,
            "meshcast_http_requests_total{route=\"ipfs\",status=\"200\"}"
        )? >= 2.0
    );
    let sent = "meshcast_http_sent_bytes_total";
    ensure!(value(&late, sent)? > value(&early, sent)? + 2.0 * 100_000.0);
    ensure!(value(&late, "meshcast_store_free_bytes")? > 0.0);
    // The mirror fetched by Bitswap from the origin.
    ensure!(value(&late, "meshcast_bitswap_sent_bytes_total")? > 100_000.0);
    ensure!(value(&mirrored, "meshcast_bitswap_received_bytes_total")? > 100_000.0);
    let follow = format!("{{follow=\"{name}\"}}");
    ensure!(
        value(
            &mirrored,
            &format!("meshcast_mirror_segments_total{follow}")
        )? >= 3.0
    );
    let lag = value(&mirrored, &format!("meshcast_mirror_lag_seconds{follow}"))?;
    ensure!((0.0..30.0).contains(&lag), "mirror lag {lag} s");
    for text in [&late, &mirrored] {
        ensure!(value(text, "meshcast_p2p_peers")? >= 1.0);
        ensure!(
            value(
                text,
                "meshcast_p2p_connections{transport=\"tcp\",network=\"loopback\"}"
            )? >= 1.0
        );
        ensure!(text.contains("meshcast_libp2p_swarm_connections_established_total"));
        ensure!(text.contains("meshcast_libp2p_identify_"));
    }
    // No peer id or address as a label value.
    let peer = node_info(&mirror)?["peer_id"]
        .as_str()
        .context("peer id")?
        .to_owned();
    ensure!(!late.contains(&peer), "the origin's metrics name a peer id");

    // Prometheus scraped both and reads their series.
    let up = prometheus.wait_series("up{job=\"meshcast\"} == 1", 2)?;
    ensure!(up.len() == 2, "{up:?}");
    let frames = prometheus.wait_series("meshcast_ingest_frames_total{stream=\"cam\"} > 0", 2)?;
    ensure!(frames.len() == 2, "video and audio: {frames:?}");
    prometheus.wait_series("meshcast_bitswap_received_bytes_total > 0", 1)?;
    prometheus.wait_series("sum by (instance) (meshcast_http_requests_total)", 2)?;
    Ok(())
}

#[test]
fn json_logs_parse_and_metrics_can_be_off() -> Result<()> {
    let check_json = |gw: &Gateway| -> Result<()> {
        gw.wait_log_line(|l| l.contains("meshcast serving"), Duration::from_secs(10))?;
        let text = std::fs::read_to_string(&gw.log)?;
        let mut lines = 0;
        // The log holds stdout too, where `serve` prints its start banner
        // for a person (headings, then indented lines); every other line is
        // a log line and JSON.
        let banner = |l: &str| {
            l.starts_with("  ")
                || l.starts_with("meshcast is serving; open")
                || l.starts_with("stream ")
                || l.starts_with("Set the encoder's keyframe interval")
        };
        for line in text.lines().filter(|l| !banner(l)) {
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("log line is not JSON: {line}"))?;
            ensure!(v["level"].is_string() && v["timestamp"].is_string(), "{v}");
            ensure!(v["fields"].is_object(), "{v}");
            lines += 1;
        }
        ensure!(lines >= 2, "{text}");
        let serving = gw.wait_log_line(|l| l.contains("meshcast serving"), Duration::ZERO)?;
        let v: Value = serde_json::from_str(&serving)?;
        ensure!(
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("meshcast serving")),
            "{v}"
        );
        ensure!(
            v["fields"]["http"].is_string(),
            "the event's fields are JSON fields: {v}"
        );
        Ok(())
    };
    // By flag, metrics on.
    let repo = Repo::new()?;
    let gw = Gateway::start(
        &repo,
        &["--log-format", "json", "--stream", &format!("cam={KEY}")],
    )?;
    check_json(&gw)?;
    scrape(&gw)?;
    drop(gw);
    // By the config file, metrics off: no route.
    let repo = Repo::new()?;
    let gw = Gateway::start_config(
        &repo,
        &format!(
            "log_format = \"json\"\n\n[[streams]]\nname = \"cam\"\nkey = \"{KEY}\"\n\n[metrics]\nenabled = false\n\n{LOOPBACK_RTMP}\n{LOOPBACK_P2P}"
        ),
    )?;
    check_json(&gw)?;
    gw.expect("/metrics", &[], 404)?;
    Ok(())
}
