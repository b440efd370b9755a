#!/usr/bin/env python3
"""Benchmark: meshcast's live pipeline against nginx-rtmp, in one run.

A benchmark, not a test: it prints figures and the anchor's figures, and
exits non-zero only when it cannot run (never for missing a goal).

Three measurements, all on loopback, each bounded in time:

1. Segment-ready lag and time to first segment vs nginx-rtmp.  One 60 s
   clip (testsrc2 1280x720 25 fps + sine, libx264 veryfast 3 Mbit/s, GOP 50,
   AAC 128k, FLV) is published with `ffmpeg -re` to meshcast and to nginx
   (libnginx-mod-rtmp, `hls_fragment 2s`) by two ffmpeg processes started
   together.  Each live playlist is polled over HTTP every 20 ms; the time a
   segment first appears, minus (t0 + the media end time of that segment from
   the summed EXTINF durations), is its lag; t0 is the moment its ffmpeg was
   started (same rule for both).  The final segment (flushed at
   disconnect) is left out.  Goal: meshcast's median lag <= nginx's + 0.15 s.
2. Peak RSS (VmHWM, reset with clear_refs before the phase) of `meshcast
   serve` while it ingests the same stream and 200 HLS clients (asyncio, raw
   HTTP/1.1 keep-alive) poll the live playlist about every 1 s and fetch
   each new segment, 45 s.  Then the same for nginx (sum over master and
   workers) as the reference.  Goal: meshcast under 40 MiB.
3. HLS bytes served per CPU-second with 200 clients: the media segments of
   phase 1's archive (fetched from meshcast's archive playlist) are served by
   meshcast as `/ipfs/<cid>?filename=...` and by nginx as static files (same
   bytes); wrk (200 keep-alive connections, 2 threads, 10 s, a Lua script
   rotating over the segment URLs) drives each, in 3 rounds where the
   servers take turns (the first place rotating), because one run of each
   varies by several percent with the machine; bytes are wrk's count,
   CPU-seconds the server's utime+stime from /proc (nginx: master + its 2
   workers), both summed over the rounds; each round's ratio is printed too.
   wrk runs on the same 2 cores.  Goal: meshcast/nginx >= 1.
   nginx serves them with sendfile (Debian's default); the same files
   served by nginx with `sendfile off` are a second, reference anchor.

Usage (as root; installs nginx, libnginx-mod-rtmp and wrk with apt-get when
missing; needs ffmpeg):

    bench/live.py [--bin target/release/meshcast] [--clip clip.flv]
                  [--clients 200] [--keep-tmp]

Without --bin it uses target/release/meshcast, running `cargo build
--release` first only when that binary is missing or older than the
sources.  --clip reuses (or creates and keeps) the clip (making it takes
~40 s).  Takes about 5 minutes.  Everything it starts is stopped at the
end (process groups); --keep-tmp keeps the logs and nginx.conf.
"""

import argparse
import asyncio
import datetime
import http.client
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "KEYKEYKEY123"
NAME = "cam"
CLIP_SECS = 60
POLL_S = 0.020
LAG_GOAL_S = 0.15
RSS_GOAL_MIB = 40
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def die(msg):
    raise SystemExit(f"bench/live.py: {msg}")


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# setup: packages, binary, clip


def ensure_packages():
    need = []
    if not shutil.which("nginx"):
        need.append("nginx")
    if not rtmp_module_path():
        need.append("libnginx-mod-rtmp")
    if not shutil.which("wrk"):
        need.append("wrk")
    if not shutil.which("ffmpeg"):
        need.append("ffmpeg")
    if not need:
        return
    if os.geteuid() != 0:
        die(f"missing {' '.join(need)}; run as root or install them")
    log(f"installing {' '.join(need)} with apt-get ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + need,
                   check=True, env=env)
    if not (shutil.which("nginx") and rtmp_module_path() and shutil.which("wrk")):
        die("packages installed but nginx/rtmp module/wrk still missing")


def rtmp_module_path():
    for p in ("/usr/lib/nginx/modules/ngx_rtmp_module.so",
              "/usr/lib64/nginx/modules/ngx_rtmp_module.so"):
        if os.path.exists(p):
            return p
    try:
        out = subprocess.run(["dpkg", "-L", "libnginx-mod-rtmp"], capture_output=True,
                             text=True).stdout
        for line in out.splitlines():
            if line.endswith("ngx_rtmp_module.so") and os.path.exists(line):
                return line
    except FileNotFoundError:
        pass
    return None


def newest_source_mtime():
    newest = 0.0
    for top in ("src", "Cargo.toml", "Cargo.lock"):
        p = os.path.join(ROOT, top)
        if os.path.isfile(p):
            newest = max(newest, os.path.getmtime(p))
        for dirpath, _, files in os.walk(p):
            for f in files:
                newest = max(newest, os.path.getmtime(os.path.join(dirpath, f)))
    return newest


def ensure_binary(arg):
    if arg:
        if not os.access(arg, os.X_OK):
            die(f"--bin {arg} is not executable")
        return os.path.abspath(arg)
    binary = os.path.join(ROOT, "target", "release", "meshcast")
    if not os.path.exists(binary) or os.path.getmtime(binary) < newest_source_mtime():
        log("target/release/meshcast missing or older than the sources: cargo build --release")
        subprocess.run(["cargo", "build", "--release", "--bin", "meshcast"], cwd=ROOT, check=True)
    return binary


def make_clip(path):
    log(f"making the {CLIP_SECS} s 720p25 3 Mbit/s clip {path} ...")
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=25:duration={CLIP_SECS}",
           "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={CLIP_SECS}",
           "-c:v", "libx264", "-preset", "veryfast", "-b:v", "3M", "-maxrate", "3M",
           "-bufsize", "6M", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0",
           "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2",
           "-t", str(CLIP_SECS), "-f", "flv", path + ".part"]
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
    os.replace(path + ".part", path)


# --------------------------------------------------------------------------
# processes


class Procs:
    """Every process we start, each in its own session (process group)."""

    def __init__(self):
        self.procs = []

    def start(self, cmd, **kw):
        p = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    @staticmethod
    def stop(p, sig=signal.SIGTERM, timeout=5):
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the group (nginx workers, ...).
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            p.wait(2)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)


def wait_http(port, path, proc, what, timeout=20, ok=(200, 404)):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            die(f"{what} exited early ({proc.returncode}); see its log")
        try:
            c = http.client.HTTPConnection(HOST, port, timeout=1)
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            c.close()
            if r.status in ok:
                return
        except OSError:
            pass
        time.sleep(0.1)
    die(f"{what} did not answer on {HOST}:{port} within {timeout} s")


def wait_tcp(port, proc, what, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            die(f"{what} exited early ({proc.returncode})")
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    die(f"{what} did not listen on {HOST}:{port} within {timeout} s")


def children_of(pid):
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            kids.append(int(d))
    return kids


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_hwm(pids):
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError as e:
            log(f"warning: cannot reset VmHWM of {pid}: {e}")


class RssSampler(threading.Thread):
    """Samples the summed VmRSS of a set of pids every 0.25 s."""

    def __init__(self, pids_fn):
        super().__init__(daemon=True)
        self.pids_fn = pids_fn
        self.stop_ev = threading.Event()
        self.peak = 0
        self.pss_peak = 0
        self.samples = []

    def run(self):
        while not self.stop_ev.wait(0.25):
            pids = self.pids_fn()
            v = sum(status_kib(p, "VmRSS") for p in pids)
            self.samples.append(v)
            self.peak = max(self.peak, v)
            self.pss_peak = max(self.pss_peak, sum(pss_kib(p) for p in pids))


def pss_kib(pid):
    """Proportional set size: shared pages split among the processes sharing them."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# --------------------------------------------------------------------------
# playlists


def parse_playlist(text, base):
    """Returns (map_uri, [(seq, duration, uri)]) with URIs made absolute paths."""
    seq = 0
    segs = []
    dur = None
    map_uri = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            seq = int(line.split(":", 1)[1])
        elif line.startswith("#EXTINF:"):
            dur = float(line.split(":", 1)[1].split(",", 1)[0])
        elif line.startswith("#EXT-X-MAP:"):
            m = re.search(r'URI="([^"]+)"', line)
            if m:
                map_uri = urllib.parse.urljoin(base, m.group(1))
        elif line and not line.startswith("#"):
            segs.append((seq, dur, urllib.parse.urljoin(base, line)))
            seq += 1
            dur = None
    return map_uri, segs


class Poller(threading.Thread):
    """Polls one live playlist every 20 ms; records each segment's first appearance."""

    def __init__(self, label, port, path, deadline):
        super().__init__(daemon=True)
        self.label, self.port, self.path, self.deadline = label, port, path, deadline
        self.first_seen = {}  # seq -> (monotonic time, duration, uri)
        self.polls = 0
        self.errors = 0
        self.stop_ev = threading.Event()

    def run(self):
        conn = None
        while not self.stop_ev.is_set() and time.monotonic() < self.deadline:
            t_next = time.monotonic() + POLL_S
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
                conn.request("GET", self.path)
                r = conn.getresponse()
                body = r.read()
                now = time.monotonic()
                self.polls += 1
                if r.status == 200:
                    _, segs = parse_playlist(body.decode("utf-8", "replace"), self.path)
                    for seq, dur, uri in segs:
                        if seq not in self.first_seen:
                            self.first_seen[seq] = (now, dur, uri)
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                self.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
            delay = t_next - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def lags(poller, t0, drop_last=True):
    seqs = sorted(poller.first_seen)
    if drop_last and seqs:
        seqs = seqs[:-1]
    out = []
    end = 0.0
    prev = None
    gaps = 0
    for s in seqs:
        if prev is not None and s != prev + 1:
            gaps += 1
        prev = s
        t, dur, _ = poller.first_seen[s]
        end += dur or 0.0
        out.append((s, t - t0, end, t - (t0 + end)))
    return out, gaps


def pct(vals, p):
    if not vals:
        return float("nan")
    v = sorted(vals)
    k = (len(v) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


# --------------------------------------------------------------------------
# asyncio HLS clients (phase 2)


class ClientStats:
    def __init__(self):
        self.playlists = 0
        self.segments = 0
        self.seg_bytes = 0
        self.non200 = 0
        self.errors = 0
        self.seg_times = []
        self.error_kinds = {}


async def http_get(reader, writer, path, keep_body):
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: bench-live\r\n\r\n"
                 .encode())
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed before status line")
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n"):
            break
        if not line:
            raise ConnectionError("closed in headers")
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    chunks = []
    n = 0
    if "content-length" in headers:
        rem = int(headers["content-length"])
        while rem > 0:
            b = await reader.read(min(rem, 1 << 18))
            if not b:
                raise ConnectionError("closed in body")
            rem -= len(b)
            n += len(b)
            if keep_body:
                chunks.append(b)
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            b = await reader.readexactly(size)
            await reader.readexactly(2)
            n += size
            if keep_body:
                chunks.append(b)
    else:
        b = await reader.read()
        n = len(b)
        chunks.append(b)
        headers["connection"] = "close"
    close = headers.get("connection", "").lower() == "close"
    return status, b"".join(chunks), n, close


async def hls_client(idx, nclients, port, playlist_path, deadline, st):
    await asyncio.sleep(idx / nclients)  # spread the polls over the second
    conn = None
    seen = set()
    maps = set()
    first = True
    while time.monotonic() < deadline:
        start = time.monotonic()
        try:
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5)
            reader, writer = conn
            status, body, _, close = await asyncio.wait_for(
                http_get(reader, writer, playlist_path, True), 10)
            st.playlists += 1
            if status == 200:
                map_uri, segs = parse_playlist(body.decode("utf-8", "replace"), playlist_path)
                uris = [u for _, _, u in segs if u not in seen]
                if first and uris:
                    # Join at the live edge: only the newest segment.
                    seen.update(uris[:-1])
                    uris = uris[-1:]
                    first = False
                todo = []
                if map_uri and map_uri not in maps:
                    maps.add(map_uri)
                    todo.append(map_uri)
                todo += uris
                for u in todo:
                    if close or time.monotonic() >= deadline:
                        break
                    t = time.monotonic()
                    s2, _, n, close = await asyncio.wait_for(http_get(reader, writer, u, False), 20)
                    if s2 == 200:
                        seen.add(u)
                        if u != map_uri:
                            st.segments += 1
                            st.seg_times.append(time.monotonic() - t)
                        st.seg_bytes += n
                    else:
                        st.non200 += 1
            elif status != 404:  # 404 before the stream starts is expected
                st.non200 += 1
            if close:
                writer.close()
                conn = None
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError,
                IndexError) as e:
            st.errors += 1
            kind = type(e).__name__
            st.error_kinds[kind] = st.error_kinds.get(kind, 0) + 1
            if conn is not None:
                conn[1].close()
            conn = None
        delay = start + 1.0 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
    if conn is not None:
        conn[1].close()


def run_clients(nclients, port, playlist_path, seconds):
    st = ClientStats()
    deadline = time.monotonic() + seconds

    async def main():
        await asyncio.gather(*(hls_client(i, nclients, port, playlist_path, deadline, st)
                               for i in range(nclients)))

    asyncio.run(main())
    return st


# --------------------------------------------------------------------------
# nginx


NGINX_CONF = """\
load_module {module};
daemon off;
master_process on;
user root;
worker_processes 2;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
rtmp {{
    server {{
        listen 127.0.0.1:{rtmp};
        chunk_size 4096;
        application live {{
            live on;
            hls on;
            hls_path {tmp}/hls;
            hls_fragment 2s;
            hls_playlist_length 12s;
        }}
    }}
}}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    log_not_found off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{http};
        location /hls/ {{
            alias {tmp}/hls/;
            types {{
                application/vnd.apple.mpegurl m3u8;
                video/mp2t ts;
            }}
            add_header Cache-Control no-cache;
        }}
        location /seg/ {{
            alias {tmp}/seg/;
            types {{
                video/mp4 m4s mp4;
            }}
        }}
        # The same files without sendfile: a second anchor that copies
        # through user space, as meshcast must.
        location /seg-nosendfile/ {{
            alias {tmp}/seg/;
            sendfile off;
            types {{
                video/mp4 m4s mp4;
            }}
        }}
    }}
}}
"""


# --------------------------------------------------------------------------
# wrk (phase 3)


WRK_LUA = """\
local paths = {{
{paths}
}}
local counter = 1
local threads = {{}}
function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  counter = (id or 1) * 7 % #paths + 1
end
function request()
  local p = paths[counter]
  counter = counter % #paths + 1
  return wrk.format("GET", p)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH bytes=%d requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d\\n",
    summary.bytes, summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def run_wrk(tmp, label, port, paths, pids_fn, seconds, conns):
    lua = os.path.join(tmp, f"wrk-{label}.lua")
    with open(lua, "w") as f:
        f.write(WRK_LUA.format(paths=",\n".join(f'  "{p}"' for p in paths)))
    pids = pids_fn()
    cpu0 = cpu_seconds(pids)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = subprocess.run(["wrk", "-t", "2", "-c", str(conns), "-d", f"{seconds}s",
                        "--timeout", "10s", "-s", lua, f"http://{HOST}:{port}"],
                       capture_output=True, text=True, timeout=seconds + 60,
                       start_new_session=True)
    wall = time.monotonic() - t0
    cpu1 = cpu_seconds(pids)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(os.path.join(tmp, f"wrk-{label}.out"), "w") as f:
        f.write(r.stdout + r.stderr)
    m = re.search(r"BENCH (.*)", r.stdout)
    if r.returncode != 0 or not m:
        die(f"wrk against {label} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    res = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    res["server_cpu"] = cpu1 - cpu0
    res["wrk_cpu"] = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    res["wall"] = wall
    res["stdout"] = r.stdout
    return res


# --------------------------------------------------------------------------


def fetch(port, path, timeout=30):
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def publish_cmd(clip, rtmp_port):
    return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", clip,
            "-c", "copy", "-f", "flv", f"rtmp://{HOST}:{rtmp_port}/live/{KEY}"]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="meshcast binary (default target/release/meshcast, built if stale)")
    ap.add_argument("--clip", help="use (or create and keep) this FLV clip")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--rss-secs", type=int, default=45)
    ap.add_argument("--wrk-secs", type=int, default=10)
    ap.add_argument("--wrk-rounds", type=int, default=3)
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, conf)")
    args = ap.parse_args()

    ensure_packages()
    binary = ensure_binary(args.bin)
    module = rtmp_module_path()

    tmp = tempfile.mkdtemp(prefix="meshcast-bench-live-")
    procs = Procs()
    ok = False
    try:
        clip = args.clip or os.path.join(tmp, "clip.flv")
        if not os.path.exists(clip):
            make_clip(clip)

        # ---- servers
        m_http, m_rtmp, n_http, n_rtmp = (free_port() for _ in range(4))
        m_log = open(os.path.join(tmp, "meshcast.log"), "wb")
        # Every client here comes from 127.0.0.1: lift the per-address
        # share, which is for strangers, not for a load generator.
        m_conf = os.path.join(tmp, "meshcast.toml")
        with open(m_conf, "w") as f:
            f.write("[http]\nmax_connections_per_address = 100000\n")
        meshcast = procs.start([binary, "serve", "--data", os.path.join(tmp, "meshcast-data"),
                                "--config", m_conf,
                                "--http", f"{HOST}:{m_http}", "--rtmp", f"{HOST}:{m_rtmp}",
                                "--stream", f"{NAME}={KEY}",
                                # The p2p node runs, on a port of its own
                                # (4001 may be another node's), without mDNS.
                                "--p2p", f"/ip4/{HOST}/tcp/0", "--no-mdns"],
                               stdout=m_log, stderr=subprocess.STDOUT)
        for d in ("hls", "seg", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(tmp, d), exist_ok=True)
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(module=module, tmp=tmp, rtmp=n_rtmp, http=n_http))
        n_log = open(os.path.join(tmp, "nginx.stderr"), "wb")
        nginx = procs.start(["nginx", "-p", tmp, "-c", conf], stdout=n_log,
                            stderr=subprocess.STDOUT)
        wait_http(m_http, "/api/v1/streams", meshcast, "meshcast", ok=(200,))
        wait_tcp(m_rtmp, meshcast, "meshcast rtmp")
        wait_http(n_http, "/hls/none.m3u8", nginx, "nginx")
        wait_tcp(n_rtmp, nginx, "nginx rtmp")
        nginx_pids = lambda: [nginx.pid] + children_of(nginx.pid)
        meshcast_pids = lambda: [meshcast.pid]
        log(f"meshcast pid {meshcast.pid} http :{m_http} rtmp :{m_rtmp}; "
            f"nginx pid {nginx.pid} (workers {children_of(nginx.pid)}) http :{n_http} rtmp :{n_rtmp}")

        # ---- phase 1: lag
        log(f"phase 1: publishing the clip to both ({CLIP_SECS} s) and polling every 20 ms ...")
        deadline = time.monotonic() + CLIP_SECS + 30
        pm = Poller("meshcast", m_http, f"/live/{NAME}.m3u8", deadline)
        pn = Poller("nginx", n_http, f"/hls/{KEY}.m3u8", deadline)
        pm.start()
        pn.start()
        t0_m = time.monotonic()
        t0_m_wall = time.time()
        pub_m = procs.start(publish_cmd(clip, m_rtmp))
        t0_n = time.monotonic()
        pub_n = procs.start(publish_cmd(clip, n_rtmp))
        rss1 = RssSampler(meshcast_pids)
        rss1.start()
        for p, what in ((pub_m, "meshcast"), (pub_n, "nginx")):
            try:
                rc = p.wait(max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                rc = "timeout"
            if rc != 0:
                log(f"warning: ffmpeg publishing to {what} ended with {rc}")
        time.sleep(4)  # let the final segments land
        pm.stop_ev.set()
        pn.stop_ev.set()
        pm.join(5)
        pn.join(5)
        rss1.stop_ev.set()
        hwm1_m = status_kib(meshcast.pid, "VmHWM")
        hwm1_n = sum(status_kib(p, "VmHWM") for p in nginx_pids())
        m_log.flush()
        publish_delay = float("nan")
        with open(os.path.join(tmp, "meshcast.log"), "rb") as f:
            for line in f.read().decode("utf-8", "replace").splitlines():
                mt = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z.*publishing started",
                              line)
                if mt:
                    ts = mt.group(1) if "." in mt.group(1) else mt.group(1) + ".0"
                    stamp = datetime.datetime.strptime(ts[:26], "%Y-%m-%dT%H:%M:%S.%f")
                    publish_delay = (stamp.replace(tzinfo=datetime.timezone.utc).timestamp()
                                     - t0_m_wall)
                    break
        lag_m, gaps_m = lags(pm, t0_m)
        lag_n, gaps_n = lags(pn, t0_n)
        if len(lag_m) < 3 or len(lag_n) < 3:
            die(f"too few segments seen (meshcast {len(pm.first_seen)}, nginx "
                f"{len(pn.first_seen)}; poll errors {pm.errors}/{pn.errors}); logs in {tmp}")
        for label, lg, p, gaps in (("meshcast", lag_m, pm, gaps_m), ("nginx", lag_n, pn, gaps_n)):
            log(f"  {label}: {len(p.first_seen)} segments, {p.polls} polls, {p.errors} poll errors, "
                f"{gaps} sequence gaps; lags (s): "
                + " ".join(f"{x[3]:.2f}" for x in lg))
            log(f"  {label}: EXTINF: "
                + " ".join(f"{p.first_seen[s][1]:.2f}" for s in sorted(p.first_seen)))

        # archive of phase 1, for phase 3
        st, body = fetch(m_http, f"/live/{NAME}/archive.m3u8")
        if st != 200:
            die(f"archive playlist: HTTP {st}")
        map_uri, segs = parse_playlist(body.decode(), f"/live/{NAME}/archive.m3u8")
        seg_paths_m, seg_paths_n, seg_sizes = [], [], []
        for i, (_, _, uri) in enumerate(segs):
            st, data = fetch(m_http, uri)
            if st != 200:
                die(f"segment {uri}: HTTP {st}")
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
            fname = q.get("filename", [f"{i:06d}.m4s"])[0]
            with open(os.path.join(tmp, "seg", fname), "wb") as f:
                f.write(data)
            seg_paths_m.append(uri)
            seg_paths_n.append(f"/seg/{fname}")
            seg_sizes.append(len(data))
        log(f"  archive: {len(segs)} media segments, mean {statistics.mean(seg_sizes) / 1e3:.0f} kB"
            f" (init {map_uri})")

        # ---- phase 2: RSS under 200 HLS clients, meshcast then nginx
        rss = {}
        for label, srv, port, rtmp, path, pids_fn in (
                ("meshcast", meshcast, m_http, m_rtmp, f"/live/{NAME}.m3u8", meshcast_pids),
                ("nginx", nginx, n_http, n_rtmp, f"/hls/{KEY}.m3u8", nginx_pids)):
            log(f"phase 2 ({label}): ingest + {args.clients} HLS clients for {args.rss_secs} s ...")
            time.sleep(3)
            pids = pids_fn()
            reset_hwm(pids)
            sampler = RssSampler(pids_fn)
            sampler.start()
            cpu0 = cpu_seconds(pids)
            pub = procs.start(publish_cmd(clip, rtmp))
            try:
                cst = run_clients(args.clients, port, path, args.rss_secs)
            finally:
                Procs.stop(pub)
            cpu1 = cpu_seconds(pids)
            sampler.stop_ev.set()
            sampler.join(2)
            hwm = sum(status_kib(p, "VmHWM") for p in pids_fn())
            rss[label] = dict(hwm=hwm, peak_sampled=sampler.peak, pss=sampler.pss_peak,
                              end=sum(status_kib(p, "VmRSS") for p in pids_fn()),
                              cpu=cpu1 - cpu0, st=cst)
            log(f"  {label}: VmHWM {hwm / 1024:.1f} MiB, sampled VmRSS peak "
                f"{sampler.peak / 1024:.1f} MiB, CPU {cpu1 - cpu0:.1f} s, "
                f"PSS peak {sampler.pss_peak / 1024:.1f} MiB; clients: {cst.playlists} playlists, {cst.segments} segments "
                f"({cst.seg_bytes / 1e6:.0f} MB), non-200 {cst.non200}, errors {cst.errors} "
                f"{cst.error_kinds or ''}; segment fetch p50 {pct(cst.seg_times, 50) * 1e3:.0f} ms"
                f" p99 {pct(cst.seg_times, 99) * 1e3:.0f} ms")
            if srv.poll() is not None:
                die(f"{label} exited during phase 2; logs in {tmp}")

        # ---- phase 3: bytes per CPU-second
        time.sleep(2)
        wrk_res = {}
        rounds = {}
        seg_paths_nsf = [p.replace("/seg/", "/seg-nosendfile/", 1) for p in seg_paths_n]
        targets = [("meshcast", m_http, seg_paths_m, meshcast_pids),
                   ("nginx", n_http, seg_paths_n, nginx_pids),
                   ("nginx-nosendfile", n_http, seg_paths_nsf, nginx_pids)]
        # Several short rounds, the servers taking turns (first place
        # rotating), so a drift in the machine's speed hits all alike.
        for rnd in range(args.wrk_rounds):
            k = rnd % len(targets)
            for label, port, paths, pids_fn in targets[k:] + targets[:k]:
                log(f"phase 3 round {rnd + 1}/{args.wrk_rounds} ({label}): wrk -t2 "
                    f"-c{args.clients} -d{args.wrk_secs}s over {len(paths)} segments ...")
                r = run_wrk(tmp, f"{label}-{rnd}", port, paths, pids_fn, args.wrk_secs, args.clients)
                rounds.setdefault(label, []).append(r)
                errs = {k: r[k] for k in ("connect", "read", "write", "status", "timeout") if r[k]}
                log(f"  {label}: {r['bytes'] / 1e9:.2f} GB in {r['requests']} requests, server CPU "
                    f"{r['server_cpu']:.1f} s, wrk CPU {r['wrk_cpu']:.1f} s, wall {r['wall']:.1f} s"
                    f"{', errors ' + str(errs) if errs else ''}")
                time.sleep(2)
        # Totals over the rounds.
        for label, rs in rounds.items():
            wrk_res[label] = {key: sum(r[key] for r in rs)
                              for key in ("bytes", "requests", "server_cpu", "wrk_cpu", "duration_us")}
        round_ratios = [
            (m["bytes"] / m["server_cpu"]) / (n["bytes"] / n["server_cpu"])
            for m, n in zip(rounds["meshcast"], rounds["nginx"])
            if m["server_cpu"] > 0 and n["server_cpu"] > 0
        ]

        # ---- log check
        m_log.flush()
        with open(os.path.join(tmp, "meshcast.log"), "rb") as f:
            mlog = f.read().decode("utf-8", "replace").splitlines()
        bad = [l for l in mlog if re.search(r"\b(ERROR|WARN|panick)", l)]
        with open(os.path.join(tmp, "nginx-error.log"), "rb") as f:
            nlog = [l for l in f.read().decode("utf-8", "replace").splitlines()
                    if re.search(r"\[(error|crit|alert|emerg)\]", l)]

        # ---- summary
        def lagvals(lg):
            return [x[3] for x in lg]

        med_m, med_n = statistics.median(lagvals(lag_m)), statistics.median(lagvals(lag_n))
        p90_m, p90_n = pct(lagvals(lag_m), 90), pct(lagvals(lag_n), 90)
        ttf_m = pm.first_seen[min(pm.first_seen)][0] - t0_m
        ttf_n = pn.first_seen[min(pn.first_seen)][0] - t0_n
        hwm_m, hwm_n = rss["meshcast"]["hwm"] / 1024, rss["nginx"]["hwm"] / 1024
        bpc = {k: v["bytes"] / v["server_cpu"] if v["server_cpu"] > 0 else float("nan")
               for k, v in wrk_res.items()}

        def verdict(b):
            return "met" if b else "MISSED"

        rows = [
            ("segment-ready lag, median (s)", f"{med_m:.3f}", f"{med_n:.3f}",
             f"{med_m - med_n:+.3f} s", f"<= +{LAG_GOAL_S} s: {verdict(med_m - med_n <= LAG_GOAL_S)}"),
            ("segment-ready lag, p90 (s)", f"{p90_m:.3f}", f"{p90_n:.3f}", f"{p90_m - p90_n:+.3f} s", ""),
            ("time to first segment (s)", f"{ttf_m:.3f}", f"{ttf_n:.3f}", f"{ttf_m - ttf_n:+.3f} s", ""),
            (f"peak RSS, ingest + {args.clients} HLS clients (MiB)", f"{hwm_m:.1f}", f"{hwm_n:.1f}",
             f"x{hwm_m / hwm_n:.2f}" if hwm_n else "-",
             f"< {RSS_GOAL_MIB} MiB: {verdict(hwm_m < RSS_GOAL_MIB)}"),
            ("  sampled VmRSS peak (MiB)", f"{rss['meshcast']['peak_sampled'] / 1024:.1f}",
             f"{rss['nginx']['peak_sampled'] / 1024:.1f}", "", ""),
            ("  sampled PSS peak (MiB)", f"{rss['meshcast']['pss'] / 1024:.1f}",
             f"{rss['nginx']['pss'] / 1024:.1f}", "", ""),
            ("  peak RSS, phase 1 ingest only (MiB)", f"{hwm1_m / 1024:.1f}", f"{hwm1_n / 1024:.1f}", "", ""),
            ("  server CPU in phase 2 (s)", f"{rss['meshcast']['cpu']:.1f}",
             f"{rss['nginx']['cpu']:.1f}", "", ""),
            (f"HLS bytes per CPU-second, {args.clients} conns (MB/cpu-s)",
             f"{bpc['meshcast'] / 1e6:.0f}", f"{bpc['nginx'] / 1e6:.0f}",
             f"x{bpc['meshcast'] / bpc['nginx']:.2f}",
             f">= x1: {verdict(bpc['meshcast'] / bpc['nginx'] >= 1)}"),
            ("  per round (meshcast:nginx)", "", "", "",
             " ".join(f"x{x:.2f}" for x in round_ratios)),
            ("  vs nginx with sendfile off (MB/cpu-s)", f"{bpc['meshcast'] / 1e6:.0f}",
             f"{bpc['nginx-nosendfile'] / 1e6:.0f}", f"x{bpc['meshcast'] / bpc['nginx-nosendfile']:.2f}",
             "(second anchor, for reference)"),
            ("  bytes served in the run (GB)", f"{wrk_res['meshcast']['bytes'] / 1e9:.2f}",
             f"{wrk_res['nginx']['bytes'] / 1e9:.2f}", "", ""),
            ("  throughput (MB/s)", f"{wrk_res['meshcast']['bytes'] / wrk_res['meshcast']['duration_us']:.0f}",
             f"{wrk_res['nginx']['bytes'] / wrk_res['nginx']['duration_us']:.0f}", "", ""),
            ("  server CPU-s / wrk CPU-s", f"{wrk_res['meshcast']['server_cpu']:.1f} / {wrk_res['meshcast']['wrk_cpu']:.1f}",
             f"{wrk_res['nginx']['server_cpu']:.1f} / {wrk_res['nginx']['wrk_cpu']:.1f}", "", ""),
        ]
        w0 = max(len(r[0]) for r in rows)
        print()
        print("=" * 100)
        print(f"{'figure':<{w0}}  {'meshcast':>10}  {'nginx':>10}  {'m - n / m:n':>12}  goal")
        print("-" * 100)
        for r in rows:
            print(f"{r[0]:<{w0}}  {r[1]:>10}  {r[2]:>10}  {r[3]:>12}  {r[4]}")
        print("=" * 100)
        print(f"lag = first time the segment is in the live playlist (20 ms polls) - (ffmpeg start"
              f" + segment's media end); {len(lag_m)}/{len(lag_n)} segments, last one left out.")
        print(f"  of which ffmpeg start-up + RTMP handshake (ffmpeg start -> meshcast logs 'publishing"
              f" started'): {publish_delay:.3f} s, the same for both servers.")
        print("peak RSS = VmHWM after clear_refs at the phase's start; nginx = master + 2 workers +"
              " cache manager (nginx-rtmp's HLS cleanup), the sum of each VmHWM, which counts"
              " shared pages once per process (PSS, sampled every 0.25 s, does not).")
        print(f"bytes per CPU-second: wrk's byte count (headers included) / server utime+stime;"
              f" wrk and the server share the machine's {os.cpu_count()} cores.")
        if bad:
            print(f"meshcast log: {len(bad)} WARN/ERROR lines, e.g.:")
            for l in bad[:8]:
                print("   ", l[:200])
        else:
            print("meshcast log: no WARN/ERROR lines")
        if nlog:
            print(f"nginx error log: {len(nlog)} error lines, e.g.:")
            for l in nlog[:5]:
                print("   ", l[:200])
        ok = True
    finally:
        procs.stop_all()
        if args.keep_tmp or not ok:
            print(f"temp dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
