//! The commands: `serve`, and kubo-like repo commands (`add`, `cat`, `get`,
//! `pin`, `repo`, `dag`, `key`) that work on the data directory directly, so
//! they can run while a server uses the same repo.
//!
//! Each command turns its arguments into calls on the library (config
//! overrides, the store and its fetch through a running node, the UnixFS
//! importer and exporter) and prints what they did, as kubo prints it.

use anyhow::{bail, Context, Result};
use cid::Cid;
use clap::{Args, Parser, Subcommand};
use meshcast::config::{Config, ConfigOverrides};
use meshcast::store::car::{self, CarReader};
use meshcast::store::fetch::{self, missing_blocks};
use meshcast::store::pins::PinKind;
use meshcast::store::{BatchWriter, BlockRead, Repo};
use meshcast::unixfs::export::{self, walk::DagWalk, FileRange};
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Live video over a peer-to-peer, content-addressed network.
#[derive(Debug, Parser)]
#[command(name = "meshcast", version, about)]
pub struct Cli {
    /// The data directory: blocks, pins and state [default: ./meshcast-data,
    /// or data_dir from --config]
    #[arg(long, global = true, env = "MESHCAST_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// How log lines are written to stderr [default: text, or log_format
    /// from --config]
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<meshcast::config::LogFormat>,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// The log format: the flag's, else the `serve` config file's, else
    /// text. A config file that cannot be read gives text here; `serve`
    /// reports why it cannot be read.
    pub fn log_format(&self) -> meshcast::config::LogFormat {
        if let Some(f) = self.log_format {
            return f;
        }
        match &self.command {
            Command::Serve(ServeArgs {
                config: Some(path), ..
            }) => Config::load(path).map(|c| c.log_format).unwrap_or_default(),
            _ => meshcast::config::LogFormat::default(),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node: the HTTP gateway over the data directory.
    Serve(ServeArgs),
    /// Add files or directories, printing their CIDs as `ipfs add` does.
    Add(AddArgs),
    /// Print a file's bytes.
    Cat {
        /// The file's CID, optionally with a path (`CID/dir/file`).
        cid: String,
    },
    /// Write a file or directory tree to disk.
    Get {
        /// The CID, optionally with a path.
        cid: String,
        /// Where to write [default: the CID].
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Keep DAGs from garbage collection.
    #[command(subcommand)]
    Pin(PinCommand),
    /// Maintain the data directory.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Move DAGs in and out as CAR files.
    #[command(subcommand)]
    Dag(DagCommand),
    /// Show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The streams' IPNS keys.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// A TOML config file; flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address for the HTTP gateway, IP:PORT or HOST:PORT [default: [::]:8080].
    #[arg(long, value_name = "ADDR", value_parser = meshcast::config::parse_listen_addr)]
    http: Option<SocketAddr>,
    /// Address publishers connect to with RTMP, IP:PORT or HOST:PORT [default: [::]:1935].
    #[arg(long, value_name = "ADDR", value_parser = meshcast::config::parse_listen_addr)]
    rtmp: Option<SocketAddr>,
    /// A stream publishers may send, as NAME=KEY (repeatable; replaces the
    /// config file's streams).
    #[arg(long = "stream", value_name = "NAME=KEY")]
    streams: Vec<meshcast::config::StreamConfig>,
    /// Segment duration to aim for, e.g. 2s [default: 2s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    segment_target: Option<std::time::Duration>,
    /// A libp2p listen address (repeatable; replaces the defaults, TCP and
    /// QUIC on port 4001), e.g. /ip4/0.0.0.0/tcp/4001.
    #[arg(long = "p2p", value_name = "MULTIADDR")]
    p2p: Vec<libp2p::Multiaddr>,
    /// A peer to dial at start and keep connected, e.g.
    /// /ip4/10.0.0.2/tcp/4001/p2p/12D3Koo... (repeatable).
    #[arg(long = "peer", value_name = "MULTIADDR")]
    peers: Vec<libp2p::Multiaddr>,
    /// Do not look for peers on the local network with mDNS.
    #[arg(long)]
    no_mdns: bool,
    /// Mirror another node's stream, by its IPNS name (repeatable): every
    /// segment is fetched, pinned and served here as the origin serves it.
    #[arg(long = "follow", value_name = "NAME", conflicts_with = "no_p2p")]
    follow: Vec<meshcast::config::FollowConfig>,
    /// Run without the libp2p node (no Bitswap, no IPNS).
    #[arg(long, conflicts_with_all = ["p2p", "peers"])]
    no_p2p: bool,
}

#[derive(Debug, Args)]
struct AddArgs {
    /// Files or directories to add; `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    paths: Vec<PathBuf>,
    /// Print only the final root CID.
    #[arg(short = 'Q', long)]
    quieter: bool,
    /// Print only CIDs, one per line.
    #[arg(short, long)]
    quiet: bool,
    /// Compute CIDs without storing anything.
    #[arg(short = 'n', long)]
    only_hash: bool,
    /// CID version; 1 implies --raw-leaves.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=1))]
    cid_version: Option<u8>,
    /// Store file data as raw blocks instead of UnixFS leaves.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    raw_leaves: Option<bool>,
    /// Chunking: `size-N` (bytes per leaf).
    #[arg(short = 's', long, value_name = "size-N")]
    chunker: Option<String>,
    /// Add directories recursively.
    #[arg(short, long)]
    recursive: bool,
    /// Wrap the added files in a directory.
    #[arg(short = 'w', long)]
    wrap_with_directory: bool,
    /// Include files whose names start with a dot.
    #[arg(short = 'H', long)]
    hidden: bool,
    /// Pin what was added.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value = "true", action = clap::ArgAction::Set)]
    pin: bool,
    /// An import profile: unixfs-v0-2015 (kubo's defaults) or unixfs-v1-2025.
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
}

#[derive(Debug, Subcommand)]
enum PinCommand {
    /// Pin a DAG that is in the store.
    Add {
        /// CIDs to pin.
        #[arg(required = true)]
        cids: Vec<Cid>,
        /// Pin the whole DAG (default) or only the root block.
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
              default_value = "true", action = clap::ArgAction::Set)]
        recursive: bool,
    },
    /// Remove pins.
    Rm {
        /// CIDs to unpin.
        #[arg(required = true)]
        cids: Vec<Cid>,
    },
    /// List pins.
    Ls {
        /// Show only these CIDs' pins.
        cids: Vec<Cid>,
        /// recursive, direct or all.
        #[arg(short, long, default_value = "all")]
        r#type: String,
        /// Print only CIDs.
        #[arg(short, long)]
        quiet: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RepoCommand {
    /// Delete every block that no pin reaches.
    Gc {
        /// Print only the count.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Re-hash every block and report the corrupt ones.
    Verify,
}

#[derive(Debug, Subcommand)]
enum DagCommand {
    /// Write a DAG as a CARv1 to standard output.
    Export {
        /// The root CID.
        cid: Cid,
    },
    /// Read CARv1 files (or standard input) into the store and pin their roots.
    Import {
        /// CAR files; none or `-` reads standard input.
        files: Vec<PathBuf>,
        /// Pin the roots named in the CAR headers.
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
              default_value = "true", action = clap::ArgAction::Set)]
        pin_roots: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// List the keys, one `<key name> <IPNS name>` line each (never a secret).
    List,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the default configuration as TOML.
    Default,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let data = cli.data.clone();
    let repo_dir = || data.clone().unwrap_or_else(|| Config::default().data_dir);
    // Only the commands that add content create a repo; the others need
    // one already there.
    let open = || -> Result<Repo> { Ok(Repo::open_existing(&repo_dir())?) };
    let create = || -> Result<Repo> { Ok(Repo::open(&repo_dir())?) };
    match cli.command {
        Command::Serve(args) => serve(args, data),
        Command::Add(args) => add(args, &repo_dir()),
        Command::Cat { cid } => cat(&open()?, &cid),
        Command::Get { cid, output } => get(&open()?, &cid, output),
        Command::Pin(cmd) => pin(&open()?, cmd),
        Command::Repo(cmd) => repo_cmd(&open()?, cmd),
        Command::Dag(cmd @ DagCommand::Import { .. }) => dag(&create()?, cmd),
        Command::Dag(cmd) => dag(&open()?, cmd),
        Command::Config(ConfigCommand::Default) => {
            print!("{}", Config::default_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Key(KeyCommand::List) => key_list(&repo_dir()),
    }
}

fn key_list(data_dir: &Path) -> Result<ExitCode> {
    // A repo with no key yet has nothing to list; no repo at all is an error.
    if !data_dir.join(meshcast::ipns::KEYS_DIR).is_dir() {
        return if data_dir.is_dir() {
            Ok(ExitCode::SUCCESS)
        } else {
            Err(meshcast::store::StoreError::NoRepo {
                path: data_dir.to_path_buf(),
            }
            .into())
        };
    }
    let store = meshcast::ipns::KeyStore::open(data_dir)?;
    let mut out = std::io::stdout().lock();
    for (key, name) in store.list()? {
        writeln!(out, "{key} {name}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(args: ServeArgs, data: Option<PathBuf>) -> Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config.apply(ConfigOverrides {
        data_dir: data,
        http_listen: args.http,
        rtmp_listen: args.rtmp,
        streams: args.streams,
        segment_target: args.segment_target,
        p2p_listen: args.p2p,
        peers: args.peers,
        no_mdns: args.no_mdns,
        no_p2p: args.no_p2p,
        follow: args.follow,
    });
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let node = meshcast::node::Node::bind(config.clone()).await?;
        let interfaces: Vec<IpAddr> = match if_addrs::get_if_addrs() {
            Ok(list) => list.iter().map(if_addrs::Interface::ip).collect(),
            Err(e) => {
                tracing::warn!("cannot list the network interfaces: {e}");
                Vec::new()
            }
        };
        let http_hosts = hosts(node.http_addr().ip(), &interfaces);
        tracing::info!(
            http = %node.http_addr(),
            rtmp = %node.rtmp_addr(),
            peer_id = %node.p2p().map(|p| p.peer_id().to_string()).unwrap_or_else(|| "off".into()),
            data = %config.data_dir.display(),
            "meshcast serving at {}",
            url("http", http_hosts[0], node.http_addr().port(), "/")
        );
        // Printed for the person who started the node, not logged: the
        // addresses to open, each stream's pages and where to publish it.
        print!("{}", start_banner(&node, &config, &interfaces));
        wait_for_signal().await;
        tracing::info!("shutting down");
        node.shutdown().await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The hosts a listener bound to `bound` is reached at: `bound` itself, or
/// for an unspecified address every interface address it accepts (IPv4 for
/// `0.0.0.0`; IPv4 and IPv6 for `[::]`), IPv4 first, but no loopback and no
/// IPv6 link-local address (those need a zone to be dialled). Loopback when
/// that leaves none.
fn hosts(bound: IpAddr, interfaces: &[IpAddr]) -> Vec<IpAddr> {
    if !bound.is_unspecified() {
        return vec![bound];
    }
    let link_local = |ip: &IpAddr| match ip {
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
        IpAddr::V4(v4) => v4.is_link_local(),
    };
    let mut out: Vec<IpAddr> = interfaces
        .iter()
        .copied()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !link_local(ip))
        .filter(|ip| bound.is_ipv6() || ip.is_ipv4())
        .collect();
    out.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    out.dedup();
    if out.is_empty() {
        out.push(std::net::Ipv4Addr::LOCALHOST.into());
    }
    out
}

/// `scheme://host:port/path`, with an IPv6 host in brackets.
fn url(scheme: &str, host: IpAddr, port: u16, path: &str) -> String {
    format!("{scheme}://{}{path}", SocketAddr::new(host, port))
}

/// What `serve` prints at start: the node's addresses, its dashboard, and
/// for each stream its watch page, IPNS name and publish URL. Stream keys are
/// secrets: the banner says where each is, never what it is.
fn start_banner(node: &meshcast::node::Node, config: &Config, interfaces: &[IpAddr]) -> String {
    use std::fmt::Write as _;
    let http = hosts(node.http_addr().ip(), interfaces);
    let rtmp = hosts(node.rtmp_addr().ip(), interfaces);
    let (hp, rp) = (node.http_addr().port(), node.rtmp_addr().port());
    let mut out = String::new();
    let _ = writeln!(out, "meshcast is serving; open");
    for host in &http {
        let _ = writeln!(out, "  {}", url("http", *host, hp, "/"));
    }
    let _ = writeln!(
        out,
        "  dashboard: {}",
        url("http", http[0], hp, "/dashboard")
    );
    for (stream, name) in node.stream_names() {
        let _ = writeln!(out, "stream {stream}:");
        let _ = writeln!(
            out,
            "  watch:     {}",
            url("http", http[0], hp, &format!("/watch/{stream}"))
        );
        if let Some(name) = name {
            let _ = writeln!(
                out,
                "  IPNS name: {name} ({})",
                url("http", http[0], hp, &format!("/ipns/{name}/"))
            );
        }
        let server = url("rtmp", rtmp[0], rp, "/live");
        let key_is = match node.created_stream() {
            Some(s) if s.name.to_string() == *stream => format!(
                "the key in {}",
                config
                    .data_dir
                    .join(meshcast::node::DEFAULT_KEY_FILE)
                    .display()
            ),
            _ => format!(
                "the key given for {stream} (--stream {stream}=KEY or [[streams]] in the config)"
            ),
        };
        let _ = writeln!(out, "  publish:   {server}/KEY, KEY being {key_is}");
        let _ = writeln!(
            out,
            "             (in OBS: Server {server}, Stream Key KEY)"
        );
    }
    if !node.stream_names().is_empty() {
        // OBS's default keyframe interval (250 frames) makes 8 s segments
        // and 9 s of latency; the log and the stream API say so again with
        // the interval measured once a publisher sends.
        let _ = writeln!(
            out,
            "Set the encoder's keyframe interval to 1-2 s (in OBS: Settings > Output > Keyframe Interval) for low latency."
        );
    }
    out
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = ctrl_c => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn pin(repo: &Repo, cmd: PinCommand) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cmd {
        PinCommand::Add { cids, recursive } => {
            for cid in cids {
                let kind = if recursive {
                    // Refuse to pin a DAG we cannot keep whole.
                    let missing = missing_blocks(&*repo.blocks, &cid)?;
                    if let Some(m) = missing.first() {
                        bail!("cannot pin {cid}: block {m} is not in the store (add or import it first)");
                    }
                    PinKind::Recursive
                } else {
                    if !repo.blocks.has(&cid)? {
                        bail!("cannot pin {cid}: it is not in the store");
                    }
                    PinKind::Direct
                };
                repo.pins.add(&cid, kind)?;
                writeln!(out, "pinned {cid} {}", kind.as_str())?;
            }
        }
        PinCommand::Rm { cids } => {
            for cid in cids {
                if !repo.pins.remove(&cid)? {
                    bail!("{cid} is not pinned");
                }
                writeln!(out, "unpinned {cid}")?;
            }
        }
        PinCommand::Ls {
            cids,
            r#type,
            quiet,
        } => {
            let want = match r#type.as_str() {
                "all" => None,
                "recursive" => Some(PinKind::Recursive),
                "direct" => Some(PinKind::Direct),
                other => bail!("unknown pin type {other:?}: use recursive, direct or all"),
            };
            let pins: Vec<(Cid, PinKind)> = if cids.is_empty() {
                repo.pins.list()?
            } else {
                let mut v = Vec::new();
                for c in cids {
                    match repo.pins.get(&c) {
                        Some(k) => v.push((c, k)),
                        None => bail!("{c} is not pinned"),
                    }
                }
                v
            };
            for (cid, kind) in pins
                .into_iter()
                .filter(|(_, k)| want.is_none_or(|w| w == *k))
            {
                if quiet {
                    writeln!(out, "{cid}")?;
                } else {
                    writeln!(out, "{cid} {}", kind.as_str())?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn repo_cmd(repo: &Repo, cmd: RepoCommand) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cmd {
        RepoCommand::Gc { quiet } => {
            let report = repo.gc()?;
            if !quiet {
                for mh in &report.removed {
                    writeln!(out, "removed {}", Cid::new_v1(meshcast::store::RAW, *mh))?;
                }
            }
            for m in &report.missing {
                eprintln!(
                    "warning: pinned block {m} is missing; `meshcast pin rm` its root or re-add it"
                );
            }
            eprintln!(
                "removed {} blocks, kept {}",
                report.removed.len(),
                report.kept
            );
            Ok(ExitCode::SUCCESS)
        }
        RepoCommand::Verify => {
            let report = repo.verify()?;
            for (mh, path) in &report.corrupt {
                writeln!(
                    out,
                    "corrupt block {} at {}",
                    Cid::new_v1(meshcast::store::RAW, *mh),
                    path.display()
                )?;
            }
            eprintln!(
                "verified {} blocks: {} corrupt",
                report.checked,
                report.corrupt.len()
            );
            if report.corrupt.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("remove the corrupt files and re-add or re-import their content");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

fn dag(repo: &Repo, cmd: DagCommand) -> Result<ExitCode> {
    match cmd {
        DagCommand::Export { cid } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            out.write_all(&car::header(&[cid]))?;
            let mut walk = DagWalk::all(cid);
            while let Some(block) = walk.next_block(&*repo.blocks)? {
                out.write_all(&car::section(&block.cid, &block.data))
                    .context("writing to standard output")?;
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        DagCommand::Import { files, pin_roots } => {
            let files = if files.is_empty() {
                vec![PathBuf::from("-")]
            } else {
                files
            };
            let _guard = repo.writer()?;
            let mut out = std::io::stdout().lock();
            let mut ok = true;
            for f in files {
                ok &= dag_import(repo, &f, pin_roots, &mut out)?;
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// Imports one CAR; `Ok(false)` when it was read only in part or a root
/// could not be pinned. What was read before a bad section is kept and its
/// complete roots are pinned (a CAR cut short in transfer should not cost
/// the blocks that arrived), and both the error and what was kept are said,
/// so the exit code never hides a root left unpinned.
fn dag_import(repo: &Repo, f: &Path, pin_roots: bool, out: &mut impl Write) -> Result<bool> {
    let input: Box<dyn std::io::Read> = if f.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?)
    };
    let mut reader = CarReader::new(std::io::BufReader::new(input))
        .with_context(|| format!("reading {}", f.display()))?;
    let roots = reader.roots().to_vec();
    let mut writer = BatchWriter::new(repo.blocks.clone());
    let mut n = 0u64;
    let read_error = loop {
        match reader.next_block() {
            Ok(Some(block)) => {
                meshcast::store::BlockSink::put_block(&mut writer, block)?;
                n += 1;
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    writer.flush()?;
    let mut ok = true;
    match &read_error {
        None => eprintln!("imported {n} blocks from {}", f.display()),
        Some(e) => {
            ok = false;
            eprintln!(
                "error: {}: {e}; kept the {n} blocks read before it",
                f.display()
            );
        }
    }
    if !pin_roots {
        return Ok(ok);
    }
    for root in roots {
        let missing = missing_blocks(&*repo.blocks, &root)?;
        if missing.is_empty() {
            repo.pins.add(&root, PinKind::Recursive)?;
            writeln!(out, "pinned root {root} success")?;
        } else {
            ok = false;
            writeln!(
                out,
                "pinned root {root} FAILED: {} blocks missing, first {}",
                missing.len(),
                missing[0]
            )?;
            eprintln!(
                "error: root {root} not pinned: {} blocks missing (first {}); \
                 the blocks that were imported stay unpinned until `repo gc`",
                missing.len(),
                missing[0]
            );
        }
    }
    Ok(ok)
}

fn add(args: AddArgs, repo_dir: &Path) -> Result<ExitCode> {
    use meshcast::unixfs::import::{
        import_path, import_reader, parse_chunker, wrap, Added, EntryKind, ImportOptions, Profile,
    };
    let mut opts = match &args.profile {
        Some(p) => ImportOptions::from_profile(p.parse::<Profile>()?),
        None => ImportOptions::default(),
    };
    if let Some(v) = args.cid_version {
        let version = if v == 1 {
            cid::Version::V1
        } else {
            cid::Version::V0
        };
        opts = opts.with_cid_version(version);
    }
    if let Some(r) = args.raw_leaves {
        opts.raw_leaves = r;
    }
    if let Some(c) = &args.chunker {
        opts.chunk_size = parse_chunker(c)?;
    }
    opts.hidden = args.hidden;
    // Wrapping is done here, so that several paths share one wrapper.
    opts.wrap_with_directory = false;
    opts.validate()?;

    let repo = if args.only_hash {
        None
    } else {
        Some(Repo::open(repo_dir)?)
    };
    // Held until the roots are pinned, so a concurrent GC cannot take them.
    let _guard = repo.as_ref().map(Repo::writer).transpose()?;
    let mut discard = meshcast::store::Discard;
    let mut writer = repo.as_ref().map(|r| BatchWriter::new(r.blocks.clone()));
    let sink: &mut dyn meshcast::store::BlockSink = match writer.as_mut() {
        Some(w) => w,
        None => &mut discard,
    };

    let progress = progress_bar(&args)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut print_err = None;
    let mut report = |a: &Added| {
        let r = if args.quieter {
            Ok(())
        } else if args.quiet {
            writeln!(out, "{}", a.cid())
        } else if a.name.is_empty() {
            writeln!(out, "added {}", a.cid())
        } else {
            writeln!(out, "added {} {}", a.cid(), a.name)
        };
        if let Err(e) = r {
            print_err.get_or_insert(e);
        }
    };
    let mut on_progress = |n: u64| {
        if let Some(p) = &progress {
            p.inc(n);
        }
    };

    let mut tops: Vec<Added> = Vec::new();
    for path in &args.paths {
        let top = if path.as_os_str() == "-" {
            let root = import_reader(&mut std::io::stdin().lock(), &opts, sink, &mut on_progress)?;
            let a = Added {
                name: root.cid.to_string(),
                kind: EntryKind::File,
                root,
            };
            report(&a);
            a
        } else {
            import_path(
                path,
                args.recursive,
                &opts,
                sink,
                &mut report,
                &mut on_progress,
            )?
        };
        tops.push(top);
    }
    let root = if args.wrap_with_directory {
        let wrapper = wrap(&tops, &opts, sink)?;
        report(&wrapper);
        vec![wrapper]
    } else {
        tops
    };
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    if let Some(w) = writer.as_mut() {
        w.flush()?;
    }
    if let (Some(repo), true) = (&repo, args.pin) {
        for r in &root {
            repo.pins.add(&r.cid(), PinKind::Recursive)?;
        }
    }
    if args.quieter {
        if let Some(last) = root.last() {
            writeln!(out, "{}", last.cid())?;
        }
    }
    if let Some(e) = print_err {
        return Err(e).context("writing to standard output");
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// A byte progress bar on stderr, only when stderr is a terminal and the
/// input is large enough for one to help.
fn progress_bar(args: &AddArgs) -> Result<Option<indicatif::ProgressBar>> {
    const SHOW_FROM: u64 = 8 << 20;
    if args.quieter || args.quiet || !std::io::stderr().is_terminal() {
        return Ok(None);
    }
    let mut total = 0u64;
    for p in &args.paths {
        if p.as_os_str() == "-" {
            continue;
        }
        total += tree_size(p, args.recursive);
    }
    if total < SHOW_FROM {
        return Ok(None);
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bytes}/{total_bytes} [{wide_bar}] {binary_bytes_per_sec} {eta}",
        )?
        .progress_chars("=> "),
    );
    Ok(Some(bar))
}

/// Bytes of the regular files at `path` (walking directories when
/// `recursive`), for sizing the progress bar; unreadable entries count 0.
fn tree_size(path: &Path, recursive: bool) -> u64 {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(m) if m.is_dir() && recursive => std::fs::read_dir(path)
            .map(|entries| entries.flatten().map(|e| tree_size(&e.path(), true)).sum())
            .unwrap_or(0),
        _ => 0,
    }
}

/// Splits `CID[/path/...]` (also accepting a leading `/ipfs/`).
fn parse_ipfs_path(s: &str) -> Result<(Cid, Vec<String>)> {
    let s = s.strip_prefix("/ipfs/").unwrap_or(s);
    let mut parts = s.split('/').filter(|p| !p.is_empty());
    let first = parts.next().context("empty path: give a CID")?;
    let cid: Cid = first
        .parse()
        .with_context(|| format!("{first:?} is not a valid CID"))?;
    Ok((cid, parts.map(str::to_owned).collect()))
}

/// Makes sure the DAG at `root/segments` is in the repo: when blocks are
/// missing and a node runs on this data directory, they are fetched through
/// it. Without a node, the local read that follows reports what is missing.
fn fetch_missing(repo: &Repo, root: &Cid, segments: &[String]) -> Result<()> {
    let complete = match export::resolve(&*repo.blocks, root, segments) {
        Ok(r) => missing_blocks(&*repo.blocks, &r.cid)?.is_empty(),
        Err(_) => false,
    };
    if !complete {
        fetch::from_node_api(repo, root, segments)?;
    }
    Ok(())
}

fn cat(repo: &Repo, path: &str) -> Result<ExitCode> {
    let (root, segments) = parse_ipfs_path(path)?;
    fetch_missing(repo, &root, &segments)?;
    let target = export::resolve(&*repo.blocks, &root, &segments)?.cid;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    write_file(repo, &target, &mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn write_file(repo: &Repo, cid: &Cid, out: &mut dyn Write) -> Result<()> {
    let stat = export::stat(&*repo.blocks, cid)?;
    if !stat.is_file() {
        bail!("{cid} is a {}, not a file (use `meshcast get`)", stat.kind);
    }
    let mut range = FileRange::new(*cid, 0, u64::MAX);
    while let Some(chunk) = range.next_chunk(&*repo.blocks)? {
        out.write_all(&chunk)?;
    }
    Ok(())
}

fn get(repo: &Repo, path: &str, output: Option<PathBuf>) -> Result<ExitCode> {
    let (root, segments) = parse_ipfs_path(path)?;
    fetch_missing(repo, &root, &segments)?;
    let target = export::resolve(&*repo.blocks, &root, &segments)?.cid;
    let dest = output.unwrap_or_else(|| {
        PathBuf::from(segments.last().cloned().unwrap_or_else(|| root.to_string()))
    });
    export::write_to_dir(&*repo.blocks, &target, &dest)?;
    eprintln!("saved {} to {}", target, dest.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::{hosts, url};
    use std::net::IpAddr;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn the_start_urls_name_every_reachable_interface_address() {
        let interfaces = ips(&[
            "127.0.0.1",
            "::1",
            "fe80::1",
            "200:1234::5",
            "192.168.1.7",
            "169.254.3.4",
            "10.0.0.2",
        ]);
        assert_eq!(
            hosts("::".parse().unwrap(), &interfaces),
            ips(&["10.0.0.2", "192.168.1.7", "200:1234::5"])
        );
        assert_eq!(
            hosts("0.0.0.0".parse().unwrap(), &interfaces),
            ips(&["10.0.0.2", "192.168.1.7"])
        );
        assert_eq!(
            hosts("127.0.0.1".parse().unwrap(), &interfaces),
            ips(&["127.0.0.1"])
        );
        assert_eq!(
            hosts("::".parse().unwrap(), &ips(&["127.0.0.1", "::1"])),
            ips(&["127.0.0.1"])
        );
        assert_eq!(
            url("http", "200:1234::5".parse().unwrap(), 8080, "/watch/live"),
            "http://[200:1234::5]:8080/watch/live"
        );
    }
}
