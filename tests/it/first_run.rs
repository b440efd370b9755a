//! What a new user meets in the first hour, run as they would run it.
//!
//! - `serve` prints URLs that lead somewhere: each address the gateway is
//!   reached at (every interface, a Yggdrasil 200::/7 one too, when bound
//!   to `[::]`; never `0.0.0.0`), the dashboard, each stream's watch page
//!   and IPNS name, and where to publish, saying where the key is but never
//!   printing it. A node with no peers says so once, at info.
//! - Errors are one line that says what, where and what to do: a config
//!   error, a data path that is a file, an unwritable data directory, a
//!   libp2p port that is taken.
//! - Commands that only read (`key list`, `pin ls`, `cat`...) create no
//!   repo where there is none.
//! - `meshcast cat` of a block no peer has, while `serve` runs, says that no
//!   peer had it in time; the server does not log that as an error.

use crate::support::*;
use anyhow::{ensure, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "firstrunkey-0123456789";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Requires `out` to be a failure whose stderr is one `Error: ` line
/// containing each of `want`; that line.
fn one_error_line(out: &Output, want: &[&str]) -> Result<String> {
    let err = stderr(out);
    ensure!(!out.status.success(), "succeeded: {err}");
    // Log lines the node wrote before it stopped (its peer ID) are not
    // part of the message.
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains(" INFO "))
        .collect();
    ensure!(
        lines.len() == 1 && lines[0].starts_with("Error: "),
        "not one error line:\n{err}"
    );
    for w in want {
        ensure!(lines[0].contains(w), "{w:?} missing from: {err}");
    }
    Ok(lines[0].to_owned())
}

/// Waits at most `timeout` for `log` to hold a whole line accepted by
/// `wanted`; the whole log then.
fn wait_log(log: &Path, wanted: impl Fn(&str) -> bool, timeout: Duration) -> Result<String> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        if whole.lines().any(&wanted) {
            return Ok(text);
        }
        ensure!(
            start.elapsed() < timeout,
            "no such line after {timeout:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_start_output_gives_urls_that_lead_somewhere() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    gw.wait_log_line(|l| l.contains("publish:"), Duration::from_secs(10))?;
    let log = std::fs::read_to_string(&gw.log)?;
    let base = &gw.base;
    let name = ipns_name(&gw, "cam")?;
    let rtmp = rtmp_addr(&gw)?;
    for want in [
        format!("{base}/\n"),
        format!("dashboard: {base}/dashboard"),
        format!("watch:     {base}/watch/cam"),
        format!("IPNS name: {name} ({base}/ipns/{name}/)"),
        format!("rtmp://{rtmp}/live/KEY"),
        "--stream cam=KEY".to_owned(),
    ] {
        ensure!(log.contains(&want), "{want:?} not printed:\n{log}");
    }
    ensure!(!log.contains(KEY), "the stream key was printed:\n{log}");
    ensure!(
        !log.contains("0.0.0.0"),
        "an address nobody can open:\n{log}"
    );
    for path in ["/", "/watch/cam"] {
        gw.expect(path, &[], 200)?;
    }
    // Alone, it says so once, at info, and kad never warns of it.
    gw.wait_log_line(
        |l| l.contains(" INFO ") && l.contains("no peers yet"),
        Duration::from_secs(20),
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let log = std::fs::read_to_string(&gw.log)?;
    ensure!(
        log.matches("no peers yet").count() == 1 && !log.contains("Failed to trigger bootstrap"),
        "{log}"
    );
    Ok(())
}

/// A network namespace with one interface holding an IPv4 and a Yggdrasil
/// address (and the link-local one the kernel adds), removed on drop.
struct Netns(String);

impl Netns {
    const V4: &str = "10.97.0.2";
    const YGG: &str = "200:97::2";

    fn new() -> Result<Self> {
        let ns = Netns(format!("mcfirst{}", std::process::id()));
        let name = ns.0.clone();
        let ip = |args: &[&str]| -> Result<()> {
            let out = Command::new("ip").args(args).output().context("run ip")?;
            check(&out, &format!("ip {}", args.join(" ")))
        };
        ip(&["netns", "add", &name])?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        // A veth pair (this kernel has no dummy devices), both ends inside.
        ip(&[
            "-n", &name, "link", "add", "d0", "type", "veth", "peer", "name", "d1",
        ])?;
        ip(&["-n", &name, "link", "set", "d1", "up"])?;
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{}/24", Self::V4),
            "dev",
            "d0",
        ])?;
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{}/7", Self::YGG),
            "dev",
            "d0",
            "nodad",
        ])?;
        ip(&["-n", &name, "link", "set", "d0", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn bound_to_every_address_the_start_output_lists_each_interface() -> Result<()> {
    let ns = Netns::new()?;
    let repo = Repo::new()?;
    let wrapper = ["ip", "netns", "exec", ns.0.as_str()];
    let stream = format!("cam={KEY}");
    let args: Vec<&std::ffi::OsStr> = ["--http", "[::]:8080", "--stream", &stream]
        .into_iter()
        .map(std::ffi::OsStr::new)
        .collect();
    let server = Spawned::new(&repo, &args, &wrapper)?;
    let log = wait_log(
        &server.log,
        |l| l.contains("publish:"),
        Duration::from_secs(20),
    )?;
    let v4 = format!("http://{}:8080/", Netns::V4);
    let ygg = format!("http://[{}]:8080/", Netns::YGG);
    for want in [&v4, &ygg, &format!("{v4}watch/cam")] {
        ensure!(log.contains(want.as_str()), "{want} not printed:\n{log}");
    }
    for unwanted in [
        "127.0.0.1:8080",
        "[::1]:8080",
        "[fe80",
        "0.0.0.0",
        "[::]:8080/",
    ] {
        ensure!(!log.contains(unwanted), "{unwanted} printed:\n{log}");
    }
    // The printed pages answer, over the Yggdrasil address too.
    for url in [format!("{v4}watch/cam"), format!("{ygg}watch/cam")] {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                "curl",
                "-sSf",
                "-o",
                "/dev/null",
                &url,
            ])
            .output()?;
        check(&out, &format!("curl {url} in the namespace"))?;
    }
    drop(server);
    Ok(())
}

#[test]
fn errors_are_one_line_that_says_what_where_and_what_to_do() -> Result<()> {
    let dir = tempdir()?;
    let meshcast = || {
        let mut c = Command::new(meshcast_bin());
        c.env_remove("MESHCAST_DATA").stdin(Stdio::null());
        c
    };
    let loopback = ["--http", "127.0.0.1:0", "--rtmp", "127.0.0.1:0"];

    // A config error: the parser's excerpt with its caret, once.
    let bad = dir.path().join("bad.toml");
    write(&bad, b"[http]\nlisten = 5\n")?;
    let out = meshcast().args(["serve", "--config"]).arg(&bad).output()?;
    let err = stderr(&out);
    ensure!(!out.status.success(), "{err}");
    ensure!(
        err.starts_with(&format!("Error: invalid config {} (", bad.display())),
        "{err}"
    );
    let carets = err.lines().filter(|l| l.contains('^')).count();
    ensure!(carets == 1, "the excerpt shown {carets} times:\n{err}");
    ensure!(err.matches("listen").count() <= 2, "{err}");

    // A data path that is a file.
    let file = dir.path().join("afile");
    write(&file, b"not a repo")?;
    let path = file.display().to_string();
    for args in [vec!["pin", "ls"], vec!["add", "-Q"], {
        let mut v = vec!["serve", "--no-p2p"];
        v.extend(loopback);
        v
    }] {
        let mut c = meshcast();
        c.arg("--data").arg(&file).args(&args);
        if args[0] == "add" {
            c.arg(&bad);
        }
        let line = one_error_line(&c.output()?, &[&path, "is not a directory"])?;
        ensure!(!line.contains("File exists"), "{args:?}: {line}");
    }

    // An unwritable data directory, for a user other than root (root may
    // write anywhere).
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro)?;
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555))?;
    let data = ro.join("data");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(meshcast_bin())
        .arg("--data")
        .arg(&data)
        .args(["serve", "--no-p2p"])
        .args(loopback)
        .env_remove("MESHCAST_DATA")
        .stdin(Stdio::null())
        .output()
        .context("run setpriv (util-linux)")?;
    let line = one_error_line(&out, &[&data.display().to_string(), "Permission denied"])?;
    ensure!(line.matches("Permission denied").count() == 1, "{line}");

    // The libp2p port taken by another process.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let quic = format!("/ip4/127.0.0.1/udp/{port}/quic-v1");
    let repo = Repo::new()?;
    let out = repo
        .cmd(["serve", "--no-mdns", "--p2p", &quic])
        .args(loopback)
        .stdin(Stdio::null())
        .output()?;
    let line = one_error_line(&out, &[&quic, "in use", "--p2p"])?;
    ensure!(!line.contains(": ;"), "an empty cause: {line}");
    ensure!(line.matches("in use").count() == 1, "{line}");
    Ok(())
}

#[test]
fn commands_that_only_read_create_no_repo() -> Result<()> {
    let cwd = tempdir()?;
    let elsewhere = tempdir()?;
    let f = elsewhere.path().join("x");
    write(&f, b"x")?;
    let cid = only_hash([&f])?;
    let commands: [&[&str]; 7] = [
        &["key", "list"],
        &["pin", "ls"],
        &["cat", &cid],
        &["get", &cid],
        &["repo", "verify"],
        &["repo", "gc"],
        &["dag", "export", &cid],
    ];
    for args in commands {
        let out = Command::new(meshcast_bin())
            .args(args)
            .current_dir(cwd.path())
            .env_remove("MESHCAST_DATA")
            .stdin(Stdio::null())
            .output()?;
        one_error_line(&out, &["no meshcast repo in", "meshcast-data", "--data"])
            .with_context(|| format!("meshcast {}", args.join(" ")))?;
        ensure!(
            !cwd.path().join("meshcast-data").exists(),
            "meshcast {} created a repo",
            args.join(" ")
        );
    }
    Ok(())
}

#[test]
fn cat_of_a_block_no_peer_has_says_so_and_the_server_logs_no_error() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start_config(
        &repo,
        &format!("[http]\nfetch_timeout = \"2s\"\n{LOOPBACK_RTMP}{LOOPBACK_P2P}"),
    )?;
    // The node tells the commands where it is once it is up.
    gw.wait_log_line(|l| l.contains("meshcast serving"), Duration::from_secs(10))?;
    let dir = tempdir()?;
    let file = dir.path().join("nowhere.bin");
    write_random_file(&file, 11, 5000)?;
    let absent = only_hash([&file])?;
    let start = Instant::now();
    let out = repo.cmd(["cat", &absent]).stdin(Stdio::null()).output()?;
    let line = one_error_line(
        &out,
        &[
            &gw.base,
            &absent,
            "not found on any peer within 2s",
            "HTTP 504",
        ],
    )?;
    ensure!(!line.contains("is `meshcast serve` running"), "{line}");
    ensure!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    std::thread::sleep(Duration::from_millis(300));
    let log = std::fs::read_to_string(&gw.log)?;
    ensure!(
        !log.contains(" ERROR "),
        "the server logged an error:\n{log}"
    );
    Ok(())
}
