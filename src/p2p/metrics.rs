//! The libp2p node's metrics for `GET /metrics`.
//!
//! ```text
//! swarm task: every SwarmEvent --> libp2p-metrics (swarm, identify, ping, Kademlia,
//!                                  gossipsub: meshcast_libp2p_*)
//!             ConnectionEstablished / Closed --> connections{transport, network}, peers
//! ```
//!
//! Connections are labelled by what their address says (the transport and
//! the kind of network it runs over, each a fixed set), never by peer id or
//! address.

use libp2p::core::ConnectedPoint;
use libp2p::metrics::Recorder;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::Multiaddr;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::IpAddr;

/// The transport a connection's address names.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Transport {
    /// TCP (with Noise and Yamux).
    Tcp,
    /// QUIC v1.
    Quic,
    /// Anything else (a relay, memory, WebSocket).
    Other,
}

/// The kind of network a connection's address lies in.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Network {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// Yggdrasil's 200::/7.
    Yggdrasil,
    /// cjdns' fc00::/8.
    Cjdns,
    /// RFC 1918, link-local, unique local (a LAN or a community mesh).
    Private,
    /// Everything else.
    Public,
    /// No IP address (DNS name, memory).
    Unknown,
}

macro_rules! label_value {
    ($t:ty, $($v:ident => $s:literal),+) => {
        impl $t {
            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),+ }
            }
        }
        impl EncodeLabelValue for $t {
            fn encode(&self, e: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(e, self.as_str())
            }
        }
    };
}
label_value!(Transport, Tcp => "tcp", Quic => "quic", Other => "other");
label_value!(Network, Loopback => "loopback", Yggdrasil => "yggdrasil", Cjdns => "cjdns",
    Private => "private", Public => "public", Unknown => "unknown");

/// A connection's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabels {
    /// Its transport.
    pub transport: Transport,
    /// Its network.
    pub network: Network,
}

impl LinkLabels {
    /// The labels of a connection to or from `addr`.
    pub fn of(addr: &Multiaddr) -> Self {
        let mut transport = Transport::Other;
        let mut network = Network::Unknown;
        for p in addr.iter() {
            match p {
                Protocol::Ip4(ip) => network = network_of(ip.into()),
                Protocol::Ip6(ip) => network = network_of(ip.into()),
                Protocol::Tcp(_) => transport = Transport::Tcp,
                Protocol::QuicV1 => transport = Transport::Quic,
                Protocol::P2pCircuit | Protocol::Ws(_) | Protocol::Wss(_) => {
                    transport = Transport::Other;
                }
                _ => {}
            }
        }
        Self { transport, network }
    }
}

fn network_of(ip: IpAddr) -> Network {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Network::Loopback,
        IpAddr::V4(v4) if v4.is_private() || v4.is_link_local() => Network::Private,
        IpAddr::V4(_) => Network::Public,
        IpAddr::V6(v6) => match v6.octets()[0] {
            _ if v6.is_loopback() => Network::Loopback,
            0x02 | 0x03 => Network::Yggdrasil,
            0xfc => Network::Cjdns,
            0xfd => Network::Private,
            0xfe if v6.octets()[1] & 0xc0 == 0x80 => Network::Private,
            _ => match v6.to_ipv4_mapped() {
                Some(v4) => network_of(v4.into()),
                None => Network::Public,
            },
        },
    }
}

/// What the swarm task records.
pub(super) struct Metrics {
    libp2p: libp2p::metrics::Metrics,
    connections: Family<LinkLabels, Gauge>,
    peers: Gauge,
}

impl Metrics {
    /// Registers the libp2p metrics (`libp2p_`) and the node's own (`p2p_`).
    pub(super) fn new(registry: &mut Registry) -> Self {
        let libp2p = libp2p::metrics::Metrics::new(registry);
        let r = registry.sub_registry_with_prefix("p2p");
        let connections = Family::default();
        r.register(
            "connections",
            "Open libp2p connections, by transport and the kind of network they run over",
            connections.clone(),
        );
        let peers = Gauge::default();
        r.register("peers", "Peers connected", peers.clone());
        Self {
            libp2p,
            connections,
            peers,
        }
    }

    /// Records one swarm event; `peers` counts those connected after it.
    pub(super) fn record(
        &self,
        ev: &SwarmEvent<super::swarm::BehaviourEvent>,
        peers: impl FnOnce() -> usize,
    ) {
        use super::swarm::BehaviourEvent as B;
        self.libp2p.record(ev);
        match ev {
            SwarmEvent::Behaviour(B::Identify(e)) => self.libp2p.record(e),
            SwarmEvent::Behaviour(B::Ping(e)) => self.libp2p.record(e),
            SwarmEvent::Behaviour(B::Kad(e) | B::LanKad(e)) => self.libp2p.record(e),
            SwarmEvent::Behaviour(B::Gossipsub(e)) => self.libp2p.record(e),
            SwarmEvent::ConnectionEstablished { endpoint, .. } => {
                self.connections
                    .get_or_create(&LinkLabels::of(remote(endpoint)))
                    .inc();
                self.peers.set(peers() as i64);
            }
            SwarmEvent::ConnectionClosed { endpoint, .. } => {
                self.connections
                    .get_or_create(&LinkLabels::of(remote(endpoint)))
                    .dec();
                self.peers.set(peers() as i64);
            }
            _ => {}
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn remote(endpoint: &ConnectedPoint) -> &Multiaddr {
    match endpoint {
        ConnectedPoint::Dialer { address, .. } => address,
        ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_labelled_by_transport_and_network_only() {
        let cases = [
            ("/ip4/127.0.0.1/tcp/4001", "tcp", "loopback"),
            ("/ip4/10.1.2.3/udp/4001/quic-v1", "quic", "private"),
            ("/ip6/200:1234::1/tcp/4001", "tcp", "yggdrasil"),
            ("/ip6/fc12::1/tcp/4001", "tcp", "cjdns"),
            ("/ip4/8.8.8.8/tcp/4001", "tcp", "public"),
            ("/dns4/example.org/tcp/4001", "tcp", "unknown"),
            ("/memory/1", "other", "unknown"),
        ];
        for (addr, transport, network) in cases {
            let l = LinkLabels::of(&addr.parse().unwrap());
            assert_eq!(
                (l.transport.as_str(), l.network.as_str()),
                (transport, network),
                "{addr}"
            );
        }
    }
}
