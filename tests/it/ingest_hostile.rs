//! RTMP ingest against a client that breaks the rules: a raw TCP client
//! does the plain handshake and then sends what no encoder would (a
//! `connect` naming an application the size of a message, a Set Chunk Size
//! with its reserved top bit set); the server must refuse it, say why where
//! it can, and keep its log lines short.
//!
//! And clients that attack the ingest before they have a key: connections
//! that set a large chunk size and send most of a 16 MiB message (memory
//! must stay bounded), and hundreds of connections that never finish the
//! handshake, reopened as they close (a publisher with a key must still
//! get in, and the log must not get a line per refusal). The attackers
//! connect from other loopback addresses than the publisher, as the server
//! counts connections by address.

use crate::support::*;
use anyhow::{bail, ensure, Context, Result};
use bytes::BytesMut;
use meshcast::rtmp::chunk::{ChunkLimits, TYPE_SET_CHUNK_SIZE};
use meshcast::rtmp::{Amf0Value, ChunkDecoder, ChunkEncoder, Command, Message, RawMessage};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Bytes in C1, S1 and S2.
const PACKET: usize = 1536;

/// A client past the plain (non-digest) handshake, with the encoder it
/// writes chunks with.
struct RawClient {
    socket: TcpStream,
    encoder: ChunkEncoder,
}

impl RawClient {
    fn connect(addr: SocketAddr) -> Result<Self> {
        Self::handshake(TcpStream::connect_timeout(&addr, Duration::from_secs(5))?)
    }

    fn handshake(mut socket: TcpStream) -> Result<Self> {
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut hello = vec![3u8];
        hello.extend(std::iter::repeat_n(0x22, PACKET));
        socket.write_all(&hello)?;
        let mut s0s1s2 = vec![0u8; 1 + 2 * PACKET];
        socket
            .read_exact(&mut s0s1s2)
            .context("read S0, S1 and S2")?;
        ensure!(s0s1s2[0] == 3, "S0 is version {}", s0s1s2[0]);
        socket.write_all(&s0s1s2[1..1 + PACKET])?;
        Ok(Self {
            socket,
            encoder: ChunkEncoder::new(),
        })
    }

    fn send_raw(&mut self, csid: u32, type_id: u8, payload: Vec<u8>) -> Result<()> {
        let mut out = BytesMut::new();
        self.encoder.encode(
            &RawMessage {
                csid,
                timestamp: 0,
                type_id,
                stream_id: 0,
                payload: payload.into(),
            },
            &mut out,
        )?;
        self.socket.write_all(&out)?;
        Ok(())
    }

    fn command(&mut self, stream_id: u32, cmd: Command) -> Result<()> {
        let (type_id, payload) = Message::Command(cmd).encode();
        let mut out = BytesMut::new();
        self.encoder.encode(
            &RawMessage {
                csid: 3,
                timestamp: 0,
                type_id,
                stream_id,
                payload,
            },
            &mut out,
        )?;
        // The server may close before it has read it all.
        let _ = self.socket.write_all(&out);
        Ok(())
    }

    /// The commands the server sends until it closes (or 10 s pass).
    fn answers_until_closed(&mut self) -> Result<Vec<Command>> {
        let mut decoder = ChunkDecoder::new(ChunkLimits::default());
        let mut inbox = BytesMut::new();
        let mut answers = Vec::new();
        let mut buf = [0u8; 4096];
        let start = Instant::now();
        loop {
            ensure!(
                start.elapsed() < Duration::from_secs(10),
                "the server kept the connection open; it answered {answers:?}"
            );
            match self.socket.read(&mut buf) {
                Ok(0) => return Ok(answers),
                Ok(n) => inbox.extend_from_slice(&buf[..n]),
                // A reset after the answers is a close too.
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(answers),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    bail!("the server kept the connection open; it answered {answers:?}")
                }
                Err(e) => return Err(e).context("read the server's answers"),
            }
            while let Some(raw) = decoder.decode(&mut inbox)? {
                if let Ok(Message::Command(cmd)) = Message::decode(raw.type_id, raw.payload) {
                    answers.push(cmd);
                }
            }
        }
    }
}

fn connect_command(app: &str) -> Command {
    Command::new(
        "connect",
        1.0,
        Amf0Value::object([
            ("app", Amf0Value::string(app)),
            ("type", Amf0Value::string("nonprivate")),
        ]),
        vec![],
    )
}

fn code(cmd: &Command) -> Option<&str> {
    cmd.args.first()?.get("code")?.as_str()
}

/// The longest line of the server's log, in bytes.
fn longest_log_line(gw: &Gateway) -> Result<usize> {
    let log = std::fs::read_to_string(&gw.log)?;
    Ok(log.lines().map(str::len).max().unwrap_or(0))
}

#[test]
fn a_huge_application_name_is_refused_and_not_logged() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    let mut client = RawClient::connect(rtmp_addr(&gw)?)?;
    let app = "a".repeat(200_000);
    // What a publisher sends next, so a server that took the name would
    // go on to log it with the refused publish.
    client.command(0, connect_command(&app))?;
    client.command(
        0,
        Command::new("createStream", 2.0, Amf0Value::Null, vec![]),
    )?;
    client.command(
        1,
        Command::new(
            "publish",
            3.0,
            Amf0Value::Null,
            vec![Amf0Value::string("not-the-key"), Amf0Value::string("live")],
        ),
    )?;
    let answers = client.answers_until_closed()?;
    ensure!(
        !answers.iter().any(|a| a.name == "_result"),
        "the connect was accepted: {:?}",
        answers
            .iter()
            .map(|a| (&a.name, code(a)))
            .collect::<Vec<_>>()
    );
    ensure!(
        answers
            .iter()
            .any(|a| a.name == "_error" && code(a) == Some("NetConnection.Connect.Rejected")),
        "no Connect.Rejected answer: {:?}",
        answers
            .iter()
            .map(|a| (&a.name, code(a)))
            .collect::<Vec<_>>()
    );
    gw.wait_log_line(
        |l| l.contains("application name of 200000 bytes"),
        Duration::from_secs(5),
    )?;
    let longest = longest_log_line(&gw)?;
    ensure!(longest < 2048, "a log line of {longest} bytes");

    // A publisher that behaves still gets in.
    publish_clip(&gw, KEY)?;
    Ok(())
}

#[test]
fn a_set_chunk_size_with_the_top_bit_is_a_protocol_error() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    let mut client = RawClient::connect(rtmp_addr(&gw)?)?;
    // 0x80000080: a decoder that masked the bit off would read 128 and go
    // on as if nothing happened.
    client.send_raw(
        2,
        TYPE_SET_CHUNK_SIZE,
        0x8000_0080u32.to_be_bytes().to_vec(),
    )?;
    client.command(0, connect_command("live"))?;
    let answers = client.answers_until_closed()?;
    ensure!(
        answers.is_empty(),
        "the server went on after it: {:?}",
        answers
            .iter()
            .map(|a| (&a.name, code(a)))
            .collect::<Vec<_>>()
    );
    gw.wait_log_line(|l| l.contains("reserved top bit"), Duration::from_secs(5))?;
    Ok(())
}

/// Peak resident memory of the server, in MiB.
fn peak_mib(gw: &Gateway) -> Result<u64> {
    Ok(gw.memory_kib("VmHWM")? / 1024)
}

#[test]
fn unpublished_connections_cannot_make_the_server_hold_large_messages() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    let addr = rtmp_addr(&gw)?;
    let before = peak_mib(&gw)?;
    // 16 connections (4 addresses, within the per-address share), each
    // with a 1 MiB chunk size and 15 MiB of one 16 MiB message: 240 MiB if
    // the server buffered it.
    let attackers: Vec<_> = (0..16u8)
        .map(|i| {
            std::thread::spawn(move || -> Result<()> {
                let from = IpAddr::from([127, 0, 0, 10 + i / 4]);
                let mut client = RawClient::handshake(connect_from(from, addr, None)?)?;
                let mut out = BytesMut::new();
                client.encoder.set_chunk_size(1 << 20, 1 << 20, &mut out)?;
                client.socket.write_all(&out)?;
                // A type 0 header on chunk stream 4: video, 16 MiB - 1
                // bytes (the 24-bit maximum), message stream 1; then 15
                // chunks of 1 MiB (type 3 headers between them).
                let mut header = vec![0x04, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9];
                header.extend(1u32.to_le_bytes());
                let chunk = vec![0u8; 1 << 20];
                // The server may refuse at the header and close: writes
                // then fail, which is the point.
                let _ = (|| -> std::io::Result<()> {
                    client.socket.write_all(&header)?;
                    for i in 0..15 {
                        if i > 0 {
                            client.socket.write_all(&[0xC4])?;
                        }
                        client.socket.write_all(&chunk)?;
                    }
                    Ok(())
                })();
                Ok(())
            })
        })
        .collect();
    for a in attackers {
        a.join().expect("attacker thread")?;
    }
    let grew = peak_mib(&gw)?.saturating_sub(before);
    ensure!(
        grew < 40,
        "peak RSS grew by {grew} MiB under 16 unpublished connections\n{}",
        gw.log_tail()
    );
    // A publisher with the key still gets in.
    publish_clip(&gw, KEY)?;
    Ok(())
}

#[test]
fn connections_that_never_handshake_do_not_lock_publishers_out() -> Result<()> {
    let repo = Repo::new()?;
    let gw = Gateway::start(&repo, &["--stream", &format!("cam={KEY}")])?;
    let addr = rtmp_addr(&gw)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // 300 connections from 127.0.0.2 that send nothing, each reopened as
    // soon as the server closes it (or refuses it).
    let attacker = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<u64> {
            let from = IpAddr::from([127, 0, 0, 2]);
            let open = || -> Result<TcpStream> {
                let s = connect_from(from, addr, None)?;
                s.set_nonblocking(true)?;
                Ok(s)
            };
            let mut conns: Vec<TcpStream> = (0..300).map(|_| open()).collect::<Result<_>>()?;
            let mut reopened = 0u64;
            let mut buf = [0u8; 64];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for c in conns.iter_mut() {
                    let closed = match c.read(&mut buf) {
                        Ok(0) => true,
                        Ok(_) => false,
                        Err(e) => e.kind() != ErrorKind::WouldBlock,
                    };
                    if closed {
                        *c = open()?;
                        reopened += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(reopened)
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let clip = clip(1)?;
    let mut published = 0;
    let mut failures = Vec::new();
    for _ in 0..5 {
        let out = publish_cmd(addr, KEY, &clip, false).output()?;
        match check(&out, "ffmpeg publishing") {
            Ok(()) => published += 1,
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reopened = attacker.join().expect("attacker thread")?;
    ensure!(
        published == 5,
        "{published}/5 publishes got in while 300 connections never handshook: {failures:?}\n{}",
        gw.log_tail()
    );
    ensure!(
        reopened > 0,
        "the server never closed an attacking connection"
    );
    let log = std::fs::read_to_string(&gw.log)?;
    let refusals = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("refusing"))
        .count();
    ensure!(
        refusals <= 10,
        "{refusals} WARN lines of refusals for {reopened} refused connections\n{}",
        gw.log_tail()
    );
    Ok(())
}
