//! The one configuration tree, read from TOML.
//!
//! Every field has a default that gives a working local node, unknown keys
//! are rejected, durations are written as in `"30s"`, and command-line flags
//! override the file ([`ConfigOverrides`], filled by the CLI and applied by
//! [`Config::apply`]); [`Config::validate`] then checks what parsing alone
//! cannot (each stream its own name and key). `meshcast config default` prints
//! [`Config::default`]; `meshcast.example.toml` is the same, with comments.

use crate::media::SegmentFormat;
use crate::name::StreamName;
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// Errors loading or validating the configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path} (`meshcast config default` prints every key): {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (names the key and line).
        source: Box<toml::de::Error>,
    },
    /// A configured stream's key is too short or holds other characters.
    #[error("stream config: the key of stream {stream} must be 8-128 letters, digits, - or _")]
    StreamKey {
        /// The stream whose key it is.
        stream: String,
    },
    /// Two configured streams have the same name.
    #[error("stream config: two streams are named {stream}; give each its own name")]
    StreamNameReused {
        /// The name.
        stream: String,
    },
    /// Two configured streams share a key, so a publisher's key would not
    /// say which stream it sends.
    #[error("stream config: stream {stream} reuses another stream's key")]
    StreamKeyReused {
        /// The second stream with the key.
        stream: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The data directory: blocks, pins, keys and stream state.
    pub data_dir: PathBuf,
    /// The HTTP gateway.
    pub http: HttpConfig,
    /// RTMP ingest: where publishers (OBS, ffmpeg) connect.
    pub rtmp: RtmpConfig,
    /// Live streams: segmenting and playlists.
    pub live: LiveConfig,
    /// The streams publishers may send, as name/key pairs. With none,
    /// `serve` creates stream `live` with a random key kept in the data
    /// directory. Also `--stream NAME=KEY`.
    pub streams: Vec<StreamConfig>,
    /// The libp2p node: Bitswap, IPNS over pubsub, mirrors.
    pub p2p: P2pConfig,
    /// Stream names (IPNS).
    pub ipns: IpnsConfig,
    /// The live dashboard (`/dashboard`) and viewer reports.
    pub dashboard: DashboardConfig,
    /// Streams of other nodes to mirror, by IPNS name. Also `--follow NAME`.
    pub follow: Vec<FollowConfig>,
    /// Mesh links: the Yggdrasil and cjdns daemons' peers, read from their
    /// admin interfaces (`GET /api/v1/mesh`).
    pub mesh: MeshConfig,
    /// How log lines are written to stderr. Also `--log-format`.
    pub log_format: LogFormat,
    /// `GET /metrics` for Prometheus.
    pub metrics: MetricsConfig,
}

/// Mesh link telemetry: which admin interfaces are asked, and how often.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshConfig {
    /// The Yggdrasil admin socket: `unix:///path` or `tcp://host:port`
    /// (the daemon's `AdminListen`); "" asks no Yggdrasil daemon. A socket
    /// that does not exist shows the daemon as absent.
    pub yggdrasil_admin: String,
    /// cjdroute's UDP admin interface, `host:port`; "" asks no cjdns daemon.
    pub cjdns_admin: String,
    /// The cjdns admin password, for calls that need one (the peer list
    /// needs none); "" reads it from `~/.cjdnsadmin` when one is needed.
    pub cjdns_password: String,
    /// The daemons are asked this often.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A daemon that has not answered in this time counts as absent.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            yggdrasil_admin: "unix:///var/run/yggdrasil/yggdrasil.sock".into(),
            cjdns_admin: "127.0.0.1:11234".into(),
            cjdns_password: String::new(),
            poll_interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
        }
    }
}

// The cjdns password is a secret: debug output (and so any log line) never
// shows it.
impl std::fmt::Debug for MeshConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshConfig")
            .field("yggdrasil_admin", &self.yggdrasil_admin)
            .field("cjdns_admin", &self.cjdns_admin)
            .field("cjdns_password", &"<redacted>")
            .field("poll_interval", &self.poll_interval)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For a person: one line per event, fields as `key=value`.
    #[default]
    Text,
    /// For log shippers: one JSON object per line.
    Json,
}

/// The Prometheus metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serves `GET /metrics` (Prometheus text exposition). When false the
    /// route is absent and nothing is recorded.
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// One followed stream (`[[follow]]` in the config, or `--follow NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowConfig {
    /// The stream's IPNS name (`k51...`).
    pub name: String,
    /// Segments older than this are let go (unpinned, then collected).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub retain: Option<Duration>,
    /// Segments beyond this many bytes (newest kept) are let go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_bytes: Option<u64>,
}

impl std::str::FromStr for FollowConfig {
    type Err = String;

    /// `NAME`, as `--follow` takes it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<crate::ipns::Name>()
            .map_err(|e| format!("{s:?}: {e}"))?;
        Ok(Self {
            name: s.to_owned(),
            retain: None,
            retain_bytes: None,
        })
    }
}

/// IPNS: the signed name of each stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpnsConfig {
    /// How long a record stays valid. Long, so that nodes whose clocks are
    /// days off still accept it; freshness comes from sequence numbers.
    #[serde(with = "humantime_serde")]
    pub validity: Duration,
    /// How long others may cache a record (a playlist changes with every
    /// segment).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Each stream's current record is published again this often, for
    /// peers that joined since.
    #[serde(with = "humantime_serde")]
    pub republish: Duration,
    /// How long `/ipns/{name}` waits for a record it does not hold.
    #[serde(with = "humantime_serde")]
    pub resolve_timeout: Duration,
}

impl Default for IpnsConfig {
    fn default() -> Self {
        Self {
            // One year as humantime reads "1year": 365.25 days.
            validity: Duration::from_secs(31_557_600),
            ttl: Duration::from_secs(1),
            republish: Duration::from_secs(30),
            resolve_timeout: Duration::from_secs(5),
        }
    }
}

/// The libp2p node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct P2pConfig {
    /// Run the node. Without it the gateway serves only local blocks and
    /// stream names are not published.
    pub enabled: bool,
    /// Multiaddrs to listen on (TCP and QUIC-v1). Also `--p2p` (repeatable;
    /// replaces this list).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start and keep connected, redialled with backoff
    /// when the connection drops: full multiaddrs ending in `/p2p/<peer id>`.
    /// Also `--peer` (repeatable; added to this list).
    pub peers: Vec<Multiaddr>,
    /// Find and connect to peers on the local network with mDNS (mesh
    /// networks have no bootstrap servers). Also `--no-mdns`.
    pub mdns: bool,
    /// Connections open at once (established, both directions).
    pub max_connections: u32,
    /// Connections being set up at once (each direction).
    pub max_pending_connections: u32,
    /// Connections to one peer.
    pub max_connections_per_peer: u32,
    /// New connections are refused while the process uses more memory
    /// than this (bytes).
    pub max_memory: usize,
    /// A connection with no stream open for this long is closed (peers in
    /// `peers` are redialled).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

/// RTMP ingest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    /// Address and port publishers connect to. Also `--rtmp`. `[::]` takes
    /// every address: IPv4 (dual stack) and mesh ones (Yggdrasil, cjdns).
    pub listen: SocketAddr,
    /// Publisher connections served at once. When all are taken, a new
    /// connection takes the slot of the oldest one still in the handshake,
    /// else of the oldest one that has not published for over a second;
    /// else it is refused.
    pub max_connections: usize,
    /// Connections from one address (an IPv6 /64) that have not published
    /// with a valid key yet; more from it are refused. A publishing
    /// connection does not count.
    pub max_connections_per_address: usize,
    /// Networks publishers may connect from (CIDR, e.g. "200::/7" for
    /// Yggdrasil); empty allows every address.
    pub allow: Vec<String>,
    /// A connection that has not finished the handshake and `publish` in
    /// this time is closed (encoders take well under a second).
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A publisher that sends no media for this long is dropped.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// The largest RTMP chunk size accepted (bytes).
    pub max_chunk_size: u32,
    /// The largest RTMP message accepted (bytes); a video frame must fit.
    pub max_message_size: u32,
    /// The largest RTMP message accepted before a publish with a valid key
    /// (bytes), and the most a connection may hold in partial messages
    /// until then: commands and metadata are a few hundred bytes (this
    /// leaves room to answer an oversized `connect` with an error rather
    /// than a cut connection), so a connection
    /// without a key holds at most this, and all of them together at most
    /// `max_connections` times it.
    pub max_message_size_before_publish: u32,
}

/// Live segmenting and playlists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Cut at the first keyframe at or after this much media. Also
    /// `--segment-target`.
    #[serde(with = "humantime_serde")]
    pub segment_target: Duration,
    /// Segments listed in the live playlist at least; more while the
    /// listed ones last less than three target durations, as RFC 8216
    /// (6.2.2) requires. The target duration follows the publisher's
    /// keyframe interval: with 2 s keyframes it is 2, and 6 segments of 2 s
    /// are listed.
    pub window: usize,
    /// Packaging for streams that do not set their own.
    pub format: SegmentFormat,
    /// A publisher that has sent nothing for this long gives way to a new
    /// publisher with the stream's key: an encoder whose link died without
    /// a word reconnects at once instead of waiting out the old
    /// connection's `rtmp.idle_timeout`. "0s" never replaces a publisher.
    #[serde(with = "humantime_serde")]
    pub takeover_after: Duration,
    /// Low-latency HLS: fMP4 segments are also cut into parts of at most
    /// this much media, each listed in the live playlist as it completes,
    /// with blocking playlist reload. "0s" turns it off (plain HLS);
    /// MPEG-TS streams never have parts. 300 ms played closest to the
    /// edge in `bench/llhls.py` (200 ms and 500 ms further behind).
    #[serde(with = "humantime_serde")]
    pub part_target: Duration,
    /// The low-space watermark of the data directory's filesystem, in
    /// bytes: while less than this is free, the node lets the oldest media
    /// of its own streams go, oldest first across them (past sessions,
    /// never a stream's latest, and the head of a live one, never its live
    /// window), so that the disk never fills. 0 turns it off.
    pub min_free_bytes: u64,
}

/// One stream publishers may send.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// The public name (in URLs and playlists).
    pub name: StreamName,
    /// The secret stream key the publisher puts in OBS's "Stream Key";
    /// never shown in a URL, playlist, API answer or log line.
    pub key: String,
    /// Packaging for this stream; the `[live]` default if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<SegmentFormat>,
    /// Low-latency part target for this stream ("0s" turns parts off);
    /// the `[live]` default if absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub part_target: Option<Duration>,
    /// Media older than this is let go (unpinned, then collected): whole
    /// past sessions, and the oldest segments of a long live one (its
    /// archive then starts later). Unlimited if absent.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub retain: Option<Duration>,
    /// The stream's media beyond this many bytes (newest kept) is let go,
    /// as for `retain`. Unlimited if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_bytes: Option<u64>,
}

/// The live dashboard: `/dashboard`, its event stream `/api/v1/events`,
/// and the players' reports at `/api/v1/viewers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// Serve the dashboard and take viewer reports. Off, the node samples
    /// nothing for it and the three routes answer 404.
    pub enabled: bool,
    /// Dashboards open at once (event streams); more are answered 503.
    pub max_clients: usize,
    /// Players whose reports are kept at once; reports of further ones are
    /// answered 429 until a kept one goes quiet.
    pub max_viewers: usize,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_clients: 16,
            max_viewers: 1000,
        }
    }
}

/// The HTTP gateway and API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address and port to listen on. `[::]` takes every address: IPv4
    /// (dual stack) and mesh ones (Yggdrasil, cjdns).
    pub listen: SocketAddr,
    /// A request that has not completed in this time is answered 408.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A connection must send a request's whole head within this time of
    /// connecting or of its previous response; else it is closed (one
    /// that trickles a header byte at a time holds a slot no longer).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A response the client takes none of for this long is cut off and
    /// its connection closed, giving back its slot and read-ahead.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// A block the node lacks is fetched from its peers (Bitswap) for at
    /// most this long; then the request is answered 504. Keep it below
    /// `request_timeout`.
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// Connections served at once. When all are taken, a newcomer takes
    /// the slot of the connection that has waited longest with no request
    /// in flight (a slowloris head, an idle keep-alive); while every one is
    /// busy, more wait in the listen backlog. Lowered at start to what the
    /// open-file limit leaves after a reserve for the store, RTMP and
    /// libp2p.
    pub max_connections: usize,
    /// Connections from one address (an IPv6 /64) served at once; more
    /// from it are closed at once, so one client cannot take every slot.
    pub max_connections_per_address: usize,
    /// Bytes of response bodies read from the store ahead of the clients,
    /// across all responses (at least 2 MiB): clients that stop reading
    /// hold this much memory at most, and others wait for it until
    /// `write_timeout` cuts the stalled ones off.
    pub body_buffer: usize,
    /// Requests handled at once across all connections; more get 503.
    pub max_concurrent_requests: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("meshcast-data"),
            http: HttpConfig::default(),
            rtmp: RtmpConfig::default(),
            live: LiveConfig::default(),
            streams: Vec::new(),
            p2p: P2pConfig::default(),
            ipns: IpnsConfig::default(),
            dashboard: DashboardConfig::default(),
            follow: Vec::new(),
            mesh: MeshConfig::default(),
            log_format: LogFormat::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl Default for P2pConfig {
    fn default() -> Self {
        let addr = |s: &str| s.parse().expect("a valid default multiaddr");
        Self {
            enabled: true,
            listen: vec![
                addr("/ip4/0.0.0.0/tcp/4001"),
                addr("/ip4/0.0.0.0/udp/4001/quic-v1"),
                addr("/ip6/::/tcp/4001"),
                addr("/ip6/::/udp/4001/quic-v1"),
            ],
            peers: Vec::new(),
            mdns: true,
            max_connections: 256,
            max_pending_connections: 64,
            max_connections_per_peer: 4,
            max_memory: 256 << 20,
            idle_timeout: Duration::from_secs(120),
        }
    }
}

// The key is a secret: debug output (and so any log line) never shows it.
impl std::fmt::Debug for StreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConfig")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .field("format", &self.format)
            .field("part_target", &self.part_target)
            .field("retain", &self.retain)
            .field("retain_bytes", &self.retain_bytes)
            .finish()
    }
}

impl std::str::FromStr for StreamConfig {
    type Err = String;

    /// `NAME=KEY`, as `--stream` takes it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, key) = s
            .split_once('=')
            .ok_or_else(|| "expected NAME=KEY, e.g. --stream talks=a-long-secret".to_owned())?;
        Ok(Self {
            name: name
                .parse()
                .map_err(|e: crate::name::StreamNameError| e.to_string())?,
            key: key.to_owned(),
            format: None,
            part_target: None,
            retain: None,
            retain_bytes: None,
        })
    }
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0u16; 8], 1935)),
            max_connections: 64,
            max_connections_per_address: 4,
            allow: Vec::new(),
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            max_chunk_size: 1 << 20,
            max_message_size: 16 << 20,
            max_message_size_before_publish: 256 << 10,
        }
    }
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            segment_target: Duration::from_secs(2),
            window: 6,
            format: SegmentFormat::Fmp4,
            takeover_after: Duration::from_secs(2),
            part_target: Duration::from_millis(300),
            min_free_bytes: 64 << 20,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0u16; 8], 8080)),
            request_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_address: 64,
            body_buffer: 8 << 20,
            max_concurrent_requests: 512,
        }
    }
}

impl Config {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The defaults as TOML.
    pub fn default_toml() -> String {
        toml::to_string_pretty(&Self::default()).expect("the default config serializes")
    }
}

/// The `serve` flags, applied onto the config file's values by
/// [`Config::apply`]: a value given replaces the file's, except where a
/// field says it adds.
#[derive(Debug, Clone, Default)]
pub struct ConfigOverrides {
    /// `--data`.
    pub data_dir: Option<PathBuf>,
    /// `--http`.
    pub http_listen: Option<SocketAddr>,
    /// `--rtmp`.
    pub rtmp_listen: Option<SocketAddr>,
    /// `--stream`: when any are given, they replace the file's streams.
    pub streams: Vec<StreamConfig>,
    /// `--segment-target`.
    pub segment_target: Option<Duration>,
    /// `--p2p`: when any are given, they replace the listen addresses.
    pub p2p_listen: Vec<Multiaddr>,
    /// `--peer`: added to the file's peers.
    pub peers: Vec<Multiaddr>,
    /// `--no-mdns`.
    pub no_mdns: bool,
    /// `--no-p2p`.
    pub no_p2p: bool,
    /// `--follow`: added to the file's follows, unless a name is there
    /// already (whose retention settings are kept).
    pub follow: Vec<FollowConfig>,
}

impl Config {
    /// Applies command-line overrides.
    pub fn apply(&mut self, overrides: ConfigOverrides) {
        let o = overrides;
        if let Some(d) = o.data_dir {
            self.data_dir = d;
        }
        if let Some(h) = o.http_listen {
            self.http.listen = h;
        }
        if let Some(r) = o.rtmp_listen {
            self.rtmp.listen = r;
        }
        if !o.streams.is_empty() {
            self.streams = o.streams;
        }
        if let Some(t) = o.segment_target {
            self.live.segment_target = t;
        }
        if !o.p2p_listen.is_empty() {
            self.p2p.listen = o.p2p_listen;
        }
        self.p2p.peers.extend(o.peers);
        if o.no_mdns {
            self.p2p.mdns = false;
        }
        if o.no_p2p {
            self.p2p.enabled = false;
        }
        for f in o.follow {
            if !self.follow.iter().any(|c| c.name == f.name) {
                self.follow.push(f);
            }
        }
    }

    /// Checks what parsing alone cannot: every stream has a name and a key
    /// of its own, the key long enough (names are [`StreamName`]s, checked
    /// as parsed).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for s in &self.streams {
            if !names.insert(&s.name) {
                return Err(ConfigError::StreamNameReused {
                    stream: s.name.to_string(),
                });
            }
            if !StreamName::is_valid(&s.key) || s.key.len() < 8 {
                return Err(ConfigError::StreamKey {
                    stream: s.name.to_string(),
                });
            }
            if !seen.insert(&s.key) {
                return Err(ConfigError::StreamKeyReused {
                    stream: s.name.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// A listen address as the command line takes it: `IP:PORT`, `[IPv6]:PORT`,
/// or `HOST:PORT` with the host name resolved now (`localhost:8080`), to
/// the first address it resolves to.
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs;
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{text:?} resolves to no address")),
        Err(e) => Err(format!(
            "{text:?} is not IP:PORT or HOST:PORT ({e}); e.g. 127.0.0.1:8080, [::]:8080 or localhost:8080"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_equals_defaults() {
        let text = include_str!("../meshcast.example.toml");
        assert_eq!(Config::parse(text).unwrap(), Config::default());
    }

    #[test]
    fn printed_defaults_parse_back() {
        assert_eq!(
            Config::parse(&Config::default_toml()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::parse("[http]\nlisten_addr = \"1.2.3.4:5\"\n").unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }

    #[test]
    fn streams_parse() {
        let c = Config::parse("[[streams]]\nname = \"talks\"\nkey = \"s3cret\"\nformat = \"ts\"\n")
            .unwrap();
        assert_eq!(c.streams[0].name, "talks");
        assert_eq!(c.streams[0].format, Some(SegmentFormat::Ts));
        assert!(Config::parse("[[streams]]\nname = \"x\"\n").is_err());
        let c = Config::parse(
            "[live]\npart_target = \"0s\"\n[[streams]]\nname = \"t\"\nkey = \"k\"\npart_target = \"250ms\"\n",
        )
        .unwrap();
        assert_eq!(c.live.part_target, Duration::ZERO);
        assert_eq!(c.streams[0].part_target, Some(Duration::from_millis(250)));
    }

    #[test]
    fn stream_keys_never_show_in_debug_output() {
        let s: StreamConfig = "talks=s3cret-key".parse().unwrap();
        assert_eq!(s.name, "talks");
        let mut c = Config::default();
        c.streams.push(s);
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!("no-equals".parse::<StreamConfig>().is_err());
    }

    fn stream(name: &str, key: &str) -> StreamConfig {
        StreamConfig {
            name: name.parse().unwrap(),
            key: key.into(),
            format: None,
            part_target: None,
            retain: None,
            retain_bytes: None,
        }
    }

    #[test]
    fn validate_refuses_bad_stream_names_and_keys() {
        let mut c = Config {
            streams: vec![stream("talks", "a-long-key"), stream("cam", "other-key")],
            ..Config::default()
        };
        c.validate().unwrap();
        c.streams = vec![stream("talks", "a-long-key"), stream("talks", "other-key")];
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "stream config: two streams are named talks; give each its own name"
        );
        let err = Config::parse("[[streams]]\nname = \"a b\"\nkey = \"a-long-key\"\n").unwrap_err();
        assert!(err.to_string().contains("is not a stream name"), "{err}");
        c.streams = vec![stream("talks", "short")];
        assert!(matches!(c.validate(), Err(ConfigError::StreamKey { .. })));
        c.streams = vec![stream("talks", "a long key")];
        assert!(matches!(c.validate(), Err(ConfigError::StreamKey { .. })));
        c.streams = vec![stream("talks", "a-long-key"), stream("cam", "a-long-key")];
        let err = c.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "stream config: stream cam reuses another stream's key"
        );
    }

    #[test]
    fn overrides_replace_or_add() {
        let mut c = Config::parse(
            "[p2p]\npeers = [\"/ip4/10.0.0.1/tcp/4001\"]\n\
             [[follow]]\nname = \"k51a\"\nretain = \"1h\"\n",
        )
        .unwrap();
        c.apply(ConfigOverrides {
            http_listen: Some("127.0.0.1:9000".parse().unwrap()),
            streams: vec![stream("cam", "a-long-key")],
            peers: vec!["/ip4/10.0.0.2/tcp/4001".parse().unwrap()],
            no_mdns: true,
            follow: vec![
                FollowConfig {
                    name: "k51a".into(),
                    retain: None,
                    retain_bytes: None,
                },
                FollowConfig {
                    name: "k51b".into(),
                    retain: None,
                    retain_bytes: None,
                },
            ],
            ..ConfigOverrides::default()
        });
        assert_eq!(c.http.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.rtmp.listen, RtmpConfig::default().listen);
        assert_eq!(c.streams, vec![stream("cam", "a-long-key")]);
        assert_eq!(c.p2p.peers.len(), 2);
        assert!(!c.p2p.mdns && c.p2p.enabled);
        assert_eq!(c.p2p.listen, P2pConfig::default().listen);
        assert_eq!(c.follow.len(), 2);
        assert_eq!(c.follow[0].retain, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn durations_are_humantime() {
        let c = Config::parse("[http]\nrequest_timeout = \"2m 5s\"\n").unwrap();
        assert_eq!(c.http.request_timeout, Duration::from_secs(125));
    }

    #[test]
    fn listen_addresses_take_host_names() {
        assert_eq!(
            parse_listen_addr("127.0.0.1:8080"),
            Ok("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("[::]:1935"),
            Ok("[::]:1935".parse().unwrap())
        );
        let local = parse_listen_addr("localhost:8080").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 8080, "{local}");
        let err = parse_listen_addr("localhost").unwrap_err();
        assert!(err.contains("HOST:PORT"), "{err}");
    }
}
