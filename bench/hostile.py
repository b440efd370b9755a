#!/usr/bin/env python3
"""Benchmark: meshcast under hostile clients (issue 10, defects 1-4).

A benchmark, not a test: it prints figures against their goals and exits
non-zero only when it cannot run (never for missing a goal).

Everything on loopback; attackers connect from other 127.0.0.0/8 addresses
than the well-behaved clients (the server counts connections by address),
each phase against a fresh `meshcast serve` with the default config:

1. RTMP memory before authentication: 64 connections (16 addresses, 4
   each) do the handshake, set a 1 MiB chunk size and send 15 MiB of one
   16 MiB message. Peak RSS (VmHWM) of the server. Goal < 100 MiB.
2. RTMP admission: 300 connections from one address that never send a
   byte, each reopened as soon as it is closed, for the whole phase; 5
   ffmpeg publishes of a 2 s clip from 127.0.0.1 meanwhile. Goal 5/5, and
   the WARN lines about refusals are counted. Then the same with the 300
   spread over 100 addresses (3 each), where the server must evict.
3. HTTP admission: 2,000 slowloris connections from one address (a header
   byte every 5 s, each reopened when closed); a plain client on 127.0.0.1
   GETs the archive playlist of a published stream 50 times. Goal: median
   < 100 ms. Then the same with the 2,000 spread over 100 addresses (20
   each, within the per-address share) against `max_connections = 256`,
   where the server must close waiting connections for newcomers.
4. 400 clients (40 addresses, 10 each, 16 KiB receive buffers) GET a 12 MB
   file and never read. VmRSS of the server after 5 s. Goal < 64 MiB.

Usage: bench/hostile.py [--bin target/release/meshcast] [--keep-tmp]
Without --bin it uses target/release/meshcast, building it first only when
missing or older than the sources. Takes about 2 minutes.
"""

import argparse
import http.client
import os
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "KEYKEYKEY123"
NAME = "cam"
HOST = "127.0.0.1"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def die(msg):
    raise SystemExit(f"bench/hostile.py: {msg}")


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


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


def status_mib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    die(f"no {field} for {pid}")


def connect_from(src, port, rcvbuf=None, timeout=5):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((src, 0))
    s.settimeout(timeout)
    s.connect((HOST, port))
    return s


class Server:
    """One `meshcast serve` in its own data dir, stopped on exit."""

    def __init__(self, binary, tmp, name, config=None):
        self.http, self.rtmp = free_port(), free_port()
        data = os.path.join(tmp, name)
        self.log_path = os.path.join(tmp, name + ".log")
        self.log = open(self.log_path, "wb")
        self.binary, self.data = binary, data
        extra = []
        if config:
            path = os.path.join(tmp, name + ".toml")
            with open(path, "w") as f:
                f.write(config)
            extra = ["--config", path]
        self.proc = subprocess.Popen(
            [binary, "serve", "--data", data, "--http", f"{HOST}:{self.http}",
             "--rtmp", f"{HOST}:{self.rtmp}", "--stream", f"{NAME}={KEY}", "--no-p2p"] + extra,
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, self.rtmp), 0.2).close()
                socket.create_connection((HOST, self.http), 0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    die(f"meshcast exited: see {self.log_path}")
                time.sleep(0.1)
        die("meshcast did not start listening")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def warn_lines(self, word):
        with open(self.log_path, errors="replace") as f:
            return sum(1 for l in f if "WARN" in l and word in l)


def rtmp_handshake(s):
    s.sendall(b"\x03" + b"\x22" * 1536)
    got = b""
    while len(got) < 1 + 2 * 1536:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("closed in the handshake")
        got += chunk
    s.sendall(got[1:1 + 1536])


def phase1(binary, tmp):
    srv = Server(binary, tmp, "p1")
    try:
        before = status_mib(srv.proc.pid, "VmHWM")
        chunk = bytes(1 << 20)

        def attack(i):
            try:
                s = connect_from(f"127.0.2.{1 + i // 4}", srv.rtmp, timeout=20)
                rtmp_handshake(s)
                # Set Chunk Size 1 MiB on chunk stream 2.
                s.sendall(bytes([0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0]) + struct.pack(">I", 1 << 20))
                s.sendall(bytes([0x04, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9]) + struct.pack("<I", 1))
                for k in range(15):
                    if k:
                        s.sendall(b"\xc4")
                    s.sendall(chunk)
                time.sleep(1)
                s.close()
            except OSError:
                pass

        threads = [threading.Thread(target=attack, args=(i,)) for i in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = status_mib(srv.proc.pid, "VmHWM")
        log(f"phase 1: peak RSS {peak:.1f} MiB (before the attack {before:.1f} MiB); goal < 100 MiB")
        return peak
    finally:
        srv.stop()


def make_clip(path, secs):
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=25:duration={secs}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={secs}",
                    "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-t", str(secs), "-f", "flv", path],
                   check=True, stdin=subprocess.DEVNULL)


def publish(port, clip):
    r = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", clip, "-c", "copy",
                        "-f", "flv", f"rtmp://{HOST}:{port}/live/{KEY}"],
                       capture_output=True, timeout=60)
    return r.returncode == 0


def holder(port, sources, total, stop, counter):
    """`total` connections over `sources` that never send; reopened when closed."""
    import selectors
    sel = selectors.DefaultSelector()

    def open_one(src):
        try:
            s = connect_from(src, port, timeout=2)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, src)
        except OSError:
            counter[1] += 1

    for i in range(total):
        open_one(sources[i % len(sources)])
    while not stop.is_set():
        for key, _ in sel.select(0.1):
            s, src = key.fileobj, key.data
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                s.close()
                counter[0] += 1
                open_one(src)
        # Failed connects are retried too.
        while counter[1] > counter[2]:
            counter[2] += 1
            open_one(sources[counter[2] % len(sources)])
            time.sleep(0.001)
    for key in list(sel.get_map().values()):
        key.fileobj.close()


def phase2(binary, tmp, clip, spread):
    srv = Server(binary, tmp, "p2" + ("b" if spread else "a"))
    try:
        sources = [f"127.0.3.{1 + i}" for i in range(100)] if spread else ["127.0.3.1"]
        stop, counter = threading.Event(), [0, 0, 0]
        t = threading.Thread(target=holder, args=(srv.rtmp, sources, 300, stop, counter))
        t.start()
        time.sleep(2)
        ok = sum(publish(srv.rtmp, clip) for _ in range(5))
        stop.set()
        t.join()
        warns = srv.warn_lines("refusing")
        how = "100 addresses" if spread else "one address"
        log(f"phase 2 ({how}): {ok}/5 publishes succeeded; attackers reopened {counter[0]} "
            f"closed connections; {warns} WARN lines of refusals; goal 5/5")
        return ok, warns
    finally:
        srv.stop()


def phase3(binary, tmp, clip, spread):
    # Spread: 100 addresses (20 each) against 256 slots, where the server
    # must evict; else one address against the default 1024 slots.
    config = "[http]\nmax_connections = 256\n" if spread else None
    srv = Server(binary, tmp, "p3b" if spread else "p3", config)
    try:
        if not publish(srv.rtmp, clip):
            die("could not publish the clip for phase 3")
        path = f"/live/{NAME}/archive.m3u8"
        deadline = time.monotonic() + 20
        while True:
            c = http.client.HTTPConnection(HOST, srv.http, timeout=5)
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                break
            if time.monotonic() > deadline:
                die(f"{path}: {r.status}")
            time.sleep(0.2)
        conns, stop = [], threading.Event()
        for i in range(2000):
            try:
                src = f"127.0.4.{1 + i % 100}" if spread else "127.0.4.1"
                s = connect_from(src, srv.http, timeout=2)
                s.sendall(b"GET / HTTP/1.1\r\n")
                conns.append(s)
            except OSError:
                pass

        def trickle():
            # Closed ones are reopened at once, as an attacker would.
            while not stop.wait(5):
                for i, s in enumerate(list(conns)):
                    try:
                        s.sendall(b"X")
                    except OSError:
                        s.close()
                        try:
                            src = f"127.0.4.{1 + i % 100}" if spread else "127.0.4.1"
                            n = connect_from(src, srv.http, timeout=2)
                            n.sendall(b"GET / HTTP/1.1\r\n")
                            conns[i] = n
                        except OSError:
                            pass

        t = threading.Thread(target=trickle)
        t.start()
        time.sleep(1)
        times = []
        for _ in range(50):
            start = time.monotonic()
            c = http.client.HTTPConnection(HOST, srv.http, timeout=60)
            c.request("GET", path)
            c.getresponse().read()
            c.close()
            times.append(time.monotonic() - start)
            time.sleep(0.1)
        stop.set()
        t.join()
        for s in conns:
            s.close()
        med = statistics.median(times) * 1000
        where = "100 addresses, max_connections 256" if spread else "one address"
        log(f"phase 3: playlist latency beside 2,000 slowloris connections ({where}): "
            f"median {med:.1f} ms, max {max(times) * 1000:.1f} ms; goal median < 100 ms")
        return med
    finally:
        srv.stop()


def phase4(binary, tmp):
    src = os.path.join(tmp, "big.bin")
    with open(src, "wb") as f:
        f.write(os.urandom(12_000_000))
    data = os.path.join(tmp, "p4")
    out = subprocess.run([binary, "--data", data, "add", "-Q", src], capture_output=True,
                         text=True, check=True).stdout.split()
    cid = out[-1]
    srv = Server(binary, tmp, "p4")
    try:
        c = http.client.HTTPConnection(HOST, srv.http, timeout=30)
        c.request("GET", f"/ipfs/{cid}")
        body = c.getresponse().read()
        c.close()
        if len(body) != 12_000_000:
            die(f"GET /ipfs/{cid}: {len(body)} bytes")
        before = status_mib(srv.proc.pid, "VmRSS")
        readers = []
        for i in range(400):
            s = connect_from(f"127.0.5.{1 + i // 10}", srv.http, rcvbuf=16384)
            s.sendall(f"GET /ipfs/{cid} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            readers.append(s)
        time.sleep(5)
        rss = status_mib(srv.proc.pid, "VmRSS")
        for s in readers:
            s.close()
        log(f"phase 4: RSS with 400 stalled readers of a 12 MB file {rss:.1f} MiB "
            f"(before {before:.1f} MiB); goal < 64 MiB")
        return rss
    finally:
        srv.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin")
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args()
    if not shutil.which("ffmpeg"):
        die("needs ffmpeg (scripts/test installs it)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    binary = ensure_binary(args.bin)
    tmp = tempfile.mkdtemp(prefix="meshcast-hostile-")
    try:
        clip = os.path.join(tmp, "clip.flv")
        make_clip(clip, 2)
        p1 = phase1(binary, tmp)
        p2a = phase2(binary, tmp, clip, spread=False)
        p2b = phase2(binary, tmp, clip, spread=True)
        p3 = phase3(binary, tmp, clip, spread=False)
        p3b = phase3(binary, tmp, clip, spread=True)
        p4 = phase4(binary, tmp)
        print()
        print("figure                                             value      goal")
        print(f"peak RSS, 64 x 15 MiB unauthenticated messages     {p1:6.1f} MiB  < 100 MiB")
        print(f"publishes during 300 never-handshaking (1 addr)    {p2a[0]}/5        5/5")
        print(f"publishes during 300 never-handshaking (100 addr)  {p2b[0]}/5        5/5")
        print(f"WARN refusal lines (1 addr, 100 addr)              {p2a[1]}, {p2b[1]}")
        print(f"playlist median beside 2,000 slowloris (1 addr)    {p3:6.1f} ms   < 100 ms")
        print(f"  (100 addr, max_connections 256)                  {p3b:6.1f} ms   < 100 ms")
        print(f"RSS with 400 stalled readers of 12 MB              {p4:6.1f} MiB  < 64 MiB")
    finally:
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
