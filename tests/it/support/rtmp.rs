//! A small RTMP publisher of its own, written from the spec rather than
//! with meshcast's codec, for tests that must read what the server tells a
//! publisher while it publishes (ffmpeg does not print `onStatus`
//! warnings).
//!
//! ```text
//! publish thread: plain handshake (C0 C1, S0 S1 S2, C2) -> Set Chunk Size
//!     -> connect, createStream, publish -> (Publish.Start) -> FLV tags of a
//!     file, paced by their timestamps -> FCUnpublish, deleteStream -> close
//! status thread:  chunks -> messages (Set Chunk Size applied) -> onStatus
//!     info objects -> a channel the test reads
//! ```

use anyhow::{bail, ensure, Context, Result};
use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The chunk size the publisher sends with.
const CHUNK: usize = 4096;

/// An `onStatus` the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub level: String,
    pub code: String,
    pub description: String,
}

/// A publish running in a thread, and the statuses it received.
pub struct RtmpPublisher {
    statuses: mpsc::Receiver<Status>,
    /// Every status taken from `statuses` so far, for error messages.
    seen: Vec<Status>,
    publish: Option<JoinHandle<Result<()>>>,
}

impl RtmpPublisher {
    /// Publishes the FLV file `flv` to `addr` with `key` in real time.
    pub fn start(addr: SocketAddr, key: &str, flv: &Path) -> Result<Self> {
        let tags = flv_tags(&std::fs::read(flv).with_context(|| format!("{}", flv.display()))?)?;
        let mut socket = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        socket.set_nodelay(true)?;
        handshake(&mut socket)?;
        // A publish hears a few statuses; the test reads them as they come.
        let (tx, statuses) = mpsc::sync_channel(64);
        let (started_tx, started) = mpsc::sync_channel(1);
        let reader = socket.try_clone()?;
        std::thread::spawn(move || read_statuses(reader, tx, started_tx));
        let key = key.to_owned();
        let publish = std::thread::spawn(move || publish(socket, &key, &tags, started));
        Ok(Self {
            statuses,
            seen: Vec::new(),
            publish: Some(publish),
        })
    }

    /// Waits for a status with `code`, passing over others.
    pub fn wait_status(&mut self, code: &str, timeout: Duration) -> Result<Status> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.statuses.recv_timeout(left) {
                Ok(s) => {
                    self.seen.push(s.clone());
                    if s.code == code {
                        return Ok(s);
                    }
                }
                Err(_) => bail!("no {code} within {timeout:?}; received {:?}", self.seen),
            }
        }
    }

    /// Every status received so far.
    pub fn statuses(&mut self) -> &[Status] {
        self.seen.extend(self.statuses.try_iter());
        &self.seen
    }

    /// Waits for the whole file to be sent and the publish ended.
    pub fn finish(&mut self) -> Result<()> {
        let thread = self.publish.take().context("finished already")?;
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("the publish thread panicked"))?
    }
}

/// One FLV tag: type (8 audio, 9 video, 18 script data), timestamp, body.
type Tag = (u8, u32, Vec<u8>);

/// The tags of an FLV file.
fn flv_tags(file: &[u8]) -> Result<Vec<Tag>> {
    ensure!(file.starts_with(b"FLV"), "not an FLV file");
    let header = u32::from_be_bytes(file[5..9].try_into()?) as usize;
    let mut at = header + 4;
    let mut tags = Vec::new();
    while at + 11 <= file.len() {
        let t = &file[at..];
        let size = u32::from_be_bytes([0, t[1], t[2], t[3]]) as usize;
        let ts = u32::from_be_bytes([t[7], t[4], t[5], t[6]]);
        ensure!(t.len() >= 11 + size, "FLV tag cut short");
        tags.push((t[0] & 0x1f, ts, t[11..11 + size].to_vec()));
        at += 11 + size + 4;
    }
    Ok(tags)
}

fn handshake(socket: &mut TcpStream) -> Result<()> {
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut c0c1 = vec![3u8];
    c0c1.extend_from_slice(&[0; 8]);
    c0c1.extend((0..1528).map(|i| (i * 7 + 3) as u8));
    socket.write_all(&c0c1)?;
    let mut s0s1s2 = vec![0u8; 1 + 2 * 1536];
    socket.read_exact(&mut s0s1s2).context("reading S0 S1 S2")?;
    ensure!(s0s1s2[0] == 3, "S0 says version {}", s0s1s2[0]);
    ensure!(
        s0s1s2[1 + 1536 + 8..] == c0c1[1 + 8..],
        "S2 does not echo C1"
    );
    socket.write_all(&s0s1s2[1..1 + 1536])?;
    socket.set_read_timeout(None)?;
    Ok(())
}

/// Writes one message as chunks: a type 0 header, then type 3 headers.
fn message(out: &mut Vec<u8>, csid: u8, type_id: u8, stream: u32, ts: u32, body: &[u8]) {
    let ext = ts >= 0xff_ffff;
    let field = if ext { 0xff_ffff } else { ts };
    out.push(csid);
    out.extend_from_slice(&field.to_be_bytes()[1..]);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    out.push(type_id);
    out.extend_from_slice(&stream.to_le_bytes());
    if ext {
        out.extend_from_slice(&ts.to_be_bytes());
    }
    for (i, chunk) in body.chunks(CHUNK).enumerate() {
        if i > 0 {
            out.push(0xc0 | csid);
            if ext {
                out.extend_from_slice(&ts.to_be_bytes());
            }
        }
        out.extend_from_slice(chunk);
    }
}

/// AMF0 values, as much as commands need.
enum Amf<'a> {
    Num(f64),
    Str(&'a str),
    Null,
    Obj(&'a [(&'a str, Amf<'a>)]),
}

fn amf(out: &mut Vec<u8>, v: &Amf<'_>) {
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    match v {
        Amf::Num(n) => {
            out.push(0);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Amf::Str(s) => {
            out.push(2);
            string(out, s);
        }
        Amf::Null => out.push(5),
        Amf::Obj(props) => {
            out.push(3);
            for (k, v) in *props {
                string(out, k);
                amf(out, v);
            }
            out.extend_from_slice(&[0, 0, 9]);
        }
    }
}

fn command(out: &mut Vec<u8>, stream: u32, values: &[Amf<'_>]) {
    let mut body = Vec::new();
    for v in values {
        amf(&mut body, v);
    }
    message(out, if stream == 0 { 3 } else { 8 }, 20, stream, 0, &body);
}

fn publish(
    mut socket: TcpStream,
    key: &str,
    tags: &[Tag],
    started: mpsc::Receiver<()>,
) -> Result<()> {
    let mut out = Vec::new();
    message(&mut out, 2, 1, 0, 0, &(CHUNK as u32).to_be_bytes());
    let tc_url = format!("rtmp://{}/live", socket.peer_addr()?);
    command(
        &mut out,
        0,
        &[
            Amf::Str("connect"),
            Amf::Num(1.0),
            Amf::Obj(&[
                ("app", Amf::Str("live")),
                ("type", Amf::Str("nonprivate")),
                ("flashVer", Amf::Str("FMLE/3.0 (compatible; meshcast-it)")),
                ("tcUrl", Amf::Str(&tc_url)),
            ]),
        ],
    );
    command(
        &mut out,
        0,
        &[
            Amf::Str("releaseStream"),
            Amf::Num(2.0),
            Amf::Null,
            Amf::Str(key),
        ],
    );
    command(
        &mut out,
        0,
        &[
            Amf::Str("FCPublish"),
            Amf::Num(3.0),
            Amf::Null,
            Amf::Str(key),
        ],
    );
    command(
        &mut out,
        0,
        &[Amf::Str("createStream"), Amf::Num(4.0), Amf::Null],
    );
    // The server's first stream is 1.
    command(
        &mut out,
        1,
        &[
            Amf::Str("publish"),
            Amf::Num(5.0),
            Amf::Null,
            Amf::Str(key),
            Amf::Str("live"),
        ],
    );
    socket.write_all(&out)?;
    started
        .recv_timeout(Duration::from_secs(10))
        .context("no NetStream.Publish.Start")?;
    let start = Instant::now();
    for (type_id, ts, body) in tags {
        let due = start + Duration::from_millis(u64::from(*ts));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let csid = match type_id {
            8 => 4,
            9 => 6,
            _ => 5,
        };
        let mut out = Vec::new();
        message(&mut out, csid, *type_id, 1, *ts, body);
        socket.write_all(&out).context("sending media")?;
    }
    let mut out = Vec::new();
    command(
        &mut out,
        0,
        &[
            Amf::Str("FCUnpublish"),
            Amf::Num(6.0),
            Amf::Null,
            Amf::Str(key),
        ],
    );
    command(
        &mut out,
        0,
        &[
            Amf::Str("deleteStream"),
            Amf::Num(7.0),
            Amf::Null,
            Amf::Num(1.0),
        ],
    );
    socket.write_all(&out)?;
    // The server closes after the unpublish.
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    std::thread::sleep(Duration::from_millis(200));
    let _ = socket.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// What a chunk stream carries between chunks.
#[derive(Default)]
struct ChunkStream {
    ts: u32,
    len: usize,
    type_id: u8,
    ext: bool,
    body: Vec<u8>,
}

/// Reads the server's messages until it closes; sends every `onStatus`,
/// and `started` once the publish is accepted.
fn read_statuses(socket: TcpStream, tx: mpsc::SyncSender<Status>, started: mpsc::SyncSender<()>) {
    let mut r = BufReader::new(socket);
    let mut chunk_size = 128usize;
    let mut streams: HashMap<u32, ChunkStream> = HashMap::new();
    let byte = |r: &mut BufReader<TcpStream>| -> Option<u8> {
        let mut b = [0u8];
        r.read_exact(&mut b).ok().map(|()| b[0])
    };
    let read = |r: &mut BufReader<TcpStream>, n: usize| -> Option<Vec<u8>> {
        let mut b = vec![0u8; n];
        r.read_exact(&mut b).ok().map(|()| b)
    };
    loop {
        let Some(b) = byte(&mut r) else { return };
        let fmt = b >> 6;
        let csid = match b & 0x3f {
            0 => 64 + u32::from(byte(&mut r).unwrap_or(0)),
            1 => {
                let Some(x) = read(&mut r, 2) else { return };
                64 + u32::from(x[0]) + 256 * u32::from(x[1])
            }
            n => u32::from(n),
        };
        let cs = streams.entry(csid).or_default();
        let header = match fmt {
            0 => 11,
            1 => 7,
            2 => 3,
            _ => 0,
        };
        let Some(h) = read(&mut r, header) else {
            return;
        };
        if fmt < 3 {
            let ts = u32::from_be_bytes([0, h[0], h[1], h[2]]);
            cs.ext = ts == 0xff_ffff;
            if fmt < 2 {
                cs.len = u32::from_be_bytes([0, h[3], h[4], h[5]]) as usize;
                cs.type_id = h[6];
            }
            cs.ts = ts;
        }
        if cs.ext {
            let Some(_) = read(&mut r, 4) else { return };
        }
        let want = (cs.len - cs.body.len()).min(chunk_size);
        let Some(part) = read(&mut r, want) else {
            return;
        };
        cs.body.extend_from_slice(&part);
        if cs.body.len() < cs.len {
            continue;
        }
        let body = std::mem::take(&mut cs.body);
        match cs.type_id {
            1 if body.len() >= 4 => {
                chunk_size =
                    (u32::from_be_bytes(body[..4].try_into().unwrap()) & 0x7fff_ffff) as usize
            }
            20 => {
                if let Some(status) = on_status(&body) {
                    if status.code == "NetStream.Publish.Start" {
                        let _ = started.try_send(());
                    }
                    if tx.send(status).is_err() {
                        return;
                    }
                }
            }
            _ => {}
        }
    }
}

/// A decoded AMF0 value: strings by name, the rest as nothing.
#[derive(Debug)]
enum Value {
    Str(String),
    Obj(Vec<(String, Value)>),
    Other,
}

/// Decodes one AMF0 value at the start of `b`; returns it and its length.
fn decode(b: &[u8]) -> Option<(Value, usize)> {
    let u16_at = |i: usize| Some(u16::from_be_bytes(b.get(i..i + 2)?.try_into().ok()?) as usize);
    let props = |mut at: usize| -> Option<(Vec<(String, Value)>, usize)> {
        let mut out = Vec::new();
        loop {
            let n = u16_at(at)?;
            if n == 0 && *b.get(at + 2)? == 9 {
                return Some((out, at + 3));
            }
            let key = String::from_utf8_lossy(b.get(at + 2..at + 2 + n)?).into_owned();
            let (v, len) = decode(&b[at + 2 + n..])?;
            out.push((key, v));
            at += 2 + n + len;
        }
    };
    match *b.first()? {
        0 => Some((Value::Other, 9)),
        1 => Some((Value::Other, 2)),
        2 => {
            let n = u16_at(1)?;
            let s = String::from_utf8_lossy(b.get(3..3 + n)?).into_owned();
            Some((Value::Str(s), 3 + n))
        }
        3 => props(1).map(|(p, end)| (Value::Obj(p), end)),
        5 | 6 => Some((Value::Other, 1)),
        8 => props(5).map(|(p, end)| (Value::Obj(p), end)),
        _ => None,
    }
}

/// The info object of an `onStatus` command.
fn on_status(body: &[u8]) -> Option<Status> {
    let mut values = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let (v, len) = decode(&body[at..])?;
        values.push(v);
        at += len;
    }
    if !matches!(values.first(), Some(Value::Str(n)) if n == "onStatus") {
        return None;
    }
    let Some(Value::Obj(info)) = values.get(3) else {
        return None;
    };
    let field = |k: &str| {
        info.iter().find_map(|(key, v)| match v {
            Value::Str(s) if key == k => Some(s.clone()),
            _ => None,
        })
    };
    Some(Status {
        level: field("level")?,
        code: field("code")?,
        description: field("description").unwrap_or_default(),
    })
}
