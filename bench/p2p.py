#!/usr/bin/env python3
"""Benchmark: a mirror following an origin, on loopback and over a bad link.

A benchmark, not a test: it prints figures, and exits non-zero only when it
cannot run (never for missing a goal).

An origin `meshcast serve` ingests the 60 s 720p 3 Mbit/s clip of
bench/live.py (published with `ffmpeg -re`); a mirror runs `meshcast serve
--follow NAME --peer ORIGIN`. Both live playlists are polled every 20 ms,
and both nodes' copies of the stream's IPNS record every 20 ms.

1. Mirror lag: for each segment, the time it first appears in the mirror's
   live playlist (fetched by Bitswap, pinned, listed) minus the time it first
   appeared in the origin's. Goal: median under 1 s on loopback.
2. Name propagation: for each record sequence number, the time the mirror
   first holds it minus the time the origin first serves it. Goal: under
   1 s (the DHT path of the reference system took about two minutes).
3. Bandwidth: bytes the origin's libp2p TCP sockets sent (kernel tcp_info
   `bytes_sent`, so retransmissions and Noise/Yamux framing count) per byte
   of media (every segment and init segment of the archive). Goal: at most
   1.05.

Run twice: on loopback, then with the mirror in a network namespace behind
tests/interop/badlink.py (5% loss, 40 ms each way, 5 Mbit/s).

Usage (as root; needs ffmpeg and iproute2):
    bench/p2p.py [--bin target/release/meshcast] [--clip clip.flv] [--skip-badlink]
"""

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import live as L  # noqa: E402  (the clip, process and playlist helpers)

HERE = os.path.dirname(os.path.abspath(__file__))
BADLINK = os.path.join(L.ROOT, "tests", "interop", "badlink.py")
POLL_S = 0.020


def http_get(host, port, path, timeout=2):
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def record_seq(body):
    """The sequence number of a protobuf IPNS record (field 5, varint)."""
    i = 0
    while i < len(body):
        key, i = varint(body, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = varint(body, i)
            if field == 5:
                return v
        elif wire == 2:
            n, i = varint(body, i)
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            return None
    return None


def varint(b, i):
    v = shift = 0
    while True:
        x = b[i]
        i += 1
        v |= (x & 0x7F) << shift
        shift += 7
        if x < 0x80:
            return v, i


def poll(host, port, playlist, name, until):
    """Polls a node; prints JSON lines {"seg": seq, "t"} and {"rec": seq, "t"}."""
    seen_seg, seen_rec = set(), set()
    conn = None
    while time.monotonic() < until:
        t_next = time.monotonic() + POLL_S
        for path, kind in ((playlist, "seg"), (f"/ipns/{name}?format=ipns-record", "rec")):
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=2)
                conn.request("GET", path)
                r = conn.getresponse()
                body = r.read()
                now = time.monotonic()
                if r.status != 200:
                    continue
                if kind == "seg":
                    _, segs = L.parse_playlist(body.decode("utf-8", "replace"), path)
                    for seq, _dur, _uri in segs:
                        if seq not in seen_seg:
                            seen_seg.add(seq)
                            print(json.dumps({"seg": seq, "t": now}), flush=True)
                else:
                    seq = record_seq(body)
                    if seq is not None and seq not in seen_rec:
                        seen_rec.add(seq)
                        print(json.dumps({"rec": seq, "t": now}), flush=True)
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
        d = t_next - time.monotonic()
        if d > 0:
            time.sleep(d)


class Watch(threading.Thread):
    """Runs a poller (maybe in a namespace) and collects what it prints."""

    def __init__(self, prefix, host, port, name, until):
        super().__init__(daemon=True)
        self.cmd = prefix + [sys.executable, os.path.abspath(__file__), "poll", host, str(port),
                             f"/live/{L.NAME}.m3u8", name, str(until)]
        self.seg, self.rec = {}, {}

    def run(self):
        p = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, text=True)
        for line in p.stdout:
            m = json.loads(line)
            if "seg" in m:
                self.seg[m["seg"]] = m["t"]
            else:
                self.rec[m["rec"]] = m["t"]
        p.wait()


def sent_bytes(port):
    """Bytes sent by established TCP sockets with local port `port` (all namespaces
    see their own sockets: run in the origin's)."""
    out = subprocess.run(["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True).stdout
    return sum(int(m) for m in re.findall(r"bytes_sent:(\d+)", out))


def media_bytes(port, host="127.0.0.1"):
    status, body = http_get(host, port, f"/live/{L.NAME}/archive.m3u8")
    if status != 200:
        return 0
    text = body.decode()
    map_uri, segs = L.parse_playlist(text, "/")
    total = 0
    for uri in ([map_uri] if map_uri else []) + [u for _, _, u in segs]:
        s, b = http_get(host, port, uri, timeout=10)
        total += len(b)
    return total


def wait_api(prefix, host, port, proc, what, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            L.die(f"{what} exited early; see its log")
        r = subprocess.run(list(prefix) + ["curl", "-sf", f"http://{host}:{port}/api/v1/node"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            return json.loads(r.stdout)
        time.sleep(0.2)
    L.die(f"{what} did not answer within {timeout} s")


def rtmp_port_of(data_dir):
    """The RTMP port a running node bound, from the <data>/rtmp file it writes."""
    path = os.path.join(data_dir, "rtmp")
    for _ in range(100):
        try:
            addr = open(path).read().strip()
        except FileNotFoundError:
            addr = ""
        if addr:
            return int(addr.rsplit(":", 1)[1])
        time.sleep(0.1)
    L.die(f"no RTMP address in {path}")


def run_once(binary, clip, tmp, label, badlink):
    procs = L.Procs()
    link = None
    try:
        prefix = []
        origin_p2p_host = "127.0.0.1"
        if badlink:
            ns = f"mcbench{os.getpid()}"
            link = subprocess.Popen([sys.executable, BADLINK, "--ns", ns, "--subnet", "10.97"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            info = json.loads(link.stdout.readline())
            prefix = ["ip", "netns", "exec", ns]
            origin_p2p_host = info["root_addr"]
        p2p_port = L.free_port()
        o_label = f"{label}-origin"
        origin = procs.start([binary, "serve", "--data", os.path.join(tmp, f"{o_label}-data"),
                              "--http", f"127.0.0.1:{(o_http := L.free_port())}",
                              "--rtmp", "127.0.0.1:0", "--no-mdns",
                              "--p2p", f"/ip4/{origin_p2p_host}/tcp/{p2p_port}",
                              "--stream", f"{L.NAME}={L.KEY}"],
                             stdout=open(os.path.join(tmp, f"{o_label}.log"), "wb"),
                             stderr=subprocess.STDOUT)
        oinfo = wait_api([], "127.0.0.1", o_http, origin, "origin")
        rtmp = rtmp_port_of(os.path.join(tmp, f"{o_label}-data"))
        _, body = http_get("127.0.0.1", o_http, "/api/v1/streams")
        name = next(s["ipns"] for s in json.loads(body)["streams"] if s["name"] == L.NAME)
        peer = f"/ip4/{origin_p2p_host}/tcp/{p2p_port}/p2p/{oinfo['peer_id']}"
        m_label = f"{label}-mirror"
        m_http = L.free_port()
        mirror = procs.start(prefix + [binary, "serve", "--data", os.path.join(tmp, f"{m_label}-data"),
                                       "--http", f"127.0.0.1:{m_http}", "--rtmp", "127.0.0.1:0",
                                       "--no-mdns", "--p2p", "/ip4/0.0.0.0/tcp/0",
                                       "--peer", peer, "--follow", name],
                             stdout=open(os.path.join(tmp, f"{m_label}.log"), "wb"),
                             stderr=subprocess.STDOUT)
        wait_api(prefix, "127.0.0.1", m_http, mirror, "mirror")
        until = time.monotonic() + L.CLIP_SECS + 25
        wo = Watch([], "127.0.0.1", o_http, name, until)
        wm = Watch(prefix, "127.0.0.1", m_http, name, until)
        wo.start()
        wm.start()
        L.log(f"[{label}] publishing {L.CLIP_SECS} s in real time ...")
        pub = procs.start(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
                           "-i", clip, "-c", "copy", "-f", "flv",
                           f"rtmp://127.0.0.1:{rtmp}/live/{L.KEY}"])
        pub.wait()
        time.sleep(8)
        sent = sent_bytes(p2p_port)
        media = media_bytes(o_http)
        wo.join()
        wm.join()
        seg_lags = [wm.seg[s] - wo.seg[s] for s in wo.seg if s in wm.seg]
        rec_lags = [wm.rec[s] - wo.rec[s] for s in wo.rec if s in wm.rec]
        missing = sorted(set(wo.seg) - set(wm.seg))
        return {
            "label": label,
            "segments": len(wo.seg),
            "mirrored": len(seg_lags),
            "missing": missing,
            "seg_lag_median": statistics.median(seg_lags) if seg_lags else None,
            "seg_lag_p95": L.pct(seg_lags, 95) if seg_lags else None,
            "seg_lag_max": max(seg_lags) if seg_lags else None,
            "records": len(wo.rec),
            "rec_lag_median": statistics.median(rec_lags) if rec_lags else None,
            "rec_lag_p95": L.pct(rec_lags, 95) if rec_lags else None,
            "origin_sent": sent,
            "media_bytes": media,
            "sent_per_media_byte": sent / media if media else None,
        }
    finally:
        procs.stop_all()
        if link is not None:
            link.stdin.close()
            try:
                link.wait(10)
            except subprocess.TimeoutExpired:
                link.kill()


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "poll":
        _, _, host, port, playlist, name, until = sys.argv
        # `until` is on the shared monotonic clock.
        poll(host, int(port), playlist, name, float(until))
        return
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin")
    ap.add_argument("--clip")
    ap.add_argument("--skip-badlink", action="store_true")
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args()
    binary = L.ensure_binary(args.bin)
    tmp = tempfile.mkdtemp(prefix="meshcast-bench-p2p-")
    clip = args.clip or os.path.join(tmp, "clip.flv")
    if not os.path.exists(clip):
        L.make_clip(clip)
    results = [run_once(binary, clip, tmp, "loopback", False)]
    if not args.skip_badlink:
        results.append(run_once(binary, clip, tmp, "badlink", True))
    for r in results:
        print(json.dumps(r, indent=1))
    print("\n| link | mirror lag median / p95 / max | name propagation median / p95 "
          "| origin bytes per media byte | segments mirrored |")
    print("|---|---|---|---|---|")
    for r in results:
        f = lambda v: "n/a" if v is None else f"{v:.3f}"
        print(f"| {r['label']} | {f(r['seg_lag_median'])} / {f(r['seg_lag_p95'])} / "
              f"{f(r['seg_lag_max'])} s | {f(r['rec_lag_median'])} / {f(r['rec_lag_p95'])} s | "
              f"{f(r['sent_per_media_byte'])} | {r['mirrored']}/{r['segments']} |")
    if not args.keep_tmp:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"logs in {tmp}")


if __name__ == "__main__":
    main()
