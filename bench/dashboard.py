#!/usr/bin/env python3
"""Benchmark: what the dashboard costs a node that serves a live stream.

A benchmark, not a test: it prints figures and exits non-zero only when it
cannot run (never for missing a goal).

Two runs of `meshcast serve` on loopback, one with `[dashboard] enabled =
false` and one with it on, each: the 60 s 720p25 3 Mbit/s clip of
bench/live.py published with `ffmpeg -re`, 200 HLS clients (bench/live.py's
asyncio clients: the live playlist about every 1 s, each new segment), and,
in the run with the dashboard, 5 dashboard clients reading
`/api/v1/events` and 200 players' reports (`POST /api/v1/viewers`, each
player every 10 s, as player.js sends them). Measured over the same 45 s
window in each run: CPU-seconds of meshcast (utime + stime from /proc) and
its peak RSS (VmHWM, reset with clear_refs when the window opens).
Goals (issue 9): under 3 % more CPU and under 4 MiB more RSS.

Usage (as root, for clear_refs; needs ffmpeg):

    bench/dashboard.py [--bin target/release/meshcast] [--clip clip.flv]
                       [--clients 200] [--dashboards 5]

--bin defaults to target/release/meshcast, built when missing or stale, as
bench/live.py does. Takes about 3 minutes.
"""

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import live  # noqa: E402  (bench/live.py: clip, processes, HLS clients)

WINDOW_S = 45
CPU_GOAL = 1.03
RSS_GOAL_KIB = 4 * 1024


def sse_reader(port, stop, counts, idx):
    """One dashboard: reads the event stream until `stop`, counting events."""
    s = socket.create_connection((live.HOST, port), 5)
    s.sendall(f"GET /api/v1/events HTTP/1.1\r\nHost: {live.HOST}\r\n\r\n".encode())
    s.settimeout(1)
    buf = b""
    while not stop.is_set():
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        if not data:
            break
        buf += data
        counts[idx] += buf.count(b"event: snapshot")
        buf = buf[buf.rfind(b"\n\n") + 2:] if b"\n\n" in buf else buf[-64:]
    s.close()


def reporter(port, stop, nplayers, sent):
    """Every player's report every 10 s, spread over the 10 s."""
    conn = None
    i = 0
    while not stop.is_set():
        body = json.dumps({"id": f"bench{i % nplayers}", "stream": live.NAME,
                           "latency_ms": 6000 + i % 500, "stalls": 0, "errors": 0,
                           "bytes_local": i * 1000}).encode()
        try:
            if conn is None:
                conn = live.http.client.HTTPConnection(live.HOST, port, timeout=5)
            conn.request("POST", "/api/v1/viewers", body,
                         {"content-type": "application/json"})
            r = conn.getresponse()
            r.read()
            sent[r.status] = sent.get(r.status, 0) + 1
        except OSError:
            conn = None
        i += 1
        stop.wait(10 / nplayers)


def run(binary, clip, tmp, dashboard, clients, dashboards):
    procs = live.Procs()
    label = "on" if dashboard else "off"
    try:
        http_port, rtmp_port = live.free_port(), live.free_port()
        conf = os.path.join(tmp, f"dash-{label}.toml")
        with open(conf, "w") as f:
            f.write(f"[dashboard]\nenabled = {'true' if dashboard else 'false'}\n")
        log = open(os.path.join(tmp, f"meshcast-{label}.log"), "wb")
        m = procs.start([binary, "serve", "--config", conf,
                         "--data", os.path.join(tmp, f"data-{label}"),
                         "--http", f"{live.HOST}:{http_port}",
                         "--rtmp", f"{live.HOST}:{rtmp_port}",
                         "--stream", f"{live.NAME}={live.KEY}", "--no-mdns"],
                        stdout=log, stderr=live.subprocess.STDOUT)
        live.wait_http(http_port, "/api/v1/streams", m, "meshcast", ok=(200,))
        live.wait_tcp(rtmp_port, m, "meshcast rtmp")
        procs.start(live.publish_cmd(clip, rtmp_port))
        # The window opens once the stream is live (the first segments out).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if live.fetch(http_port, f"/live/{live.NAME}.m3u8")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        stop = threading.Event()
        threads, counts, sent = [], [0] * dashboards, {}
        if dashboard:
            for i in range(dashboards):
                threads.append(threading.Thread(target=sse_reader,
                                                args=(http_port, stop, counts, i), daemon=True))
            threads.append(threading.Thread(target=reporter,
                                            args=(http_port, stop, clients, sent), daemon=True))
        for t in threads:
            t.start()
        live.reset_hwm([m.pid])
        cpu0 = live.cpu_seconds([m.pid])
        st = live.run_clients(clients, http_port, f"/live/{live.NAME}.m3u8", WINDOW_S)
        cpu = live.cpu_seconds([m.pid]) - cpu0
        hwm = live.status_kib(m.pid, "VmHWM")
        stop.set()
        for t in threads:
            t.join(3)
        return {"cpu_s": cpu, "hwm_kib": hwm, "segments": st.segments,
                "seg_bytes": st.seg_bytes, "errors": st.errors + st.non200,
                "snapshots": counts, "reports": sent}
    finally:
        procs.stop_all()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="meshcast binary (default target/release/meshcast)")
    ap.add_argument("--clip", help="use (or create and keep) this FLV clip")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--dashboards", type=int, default=5)
    args = ap.parse_args()
    binary = live.ensure_binary(args.bin)
    tmp = tempfile.mkdtemp(prefix="meshcast-bench-dash-")
    clip = args.clip or os.path.join(tmp, "clip.flv")
    if not os.path.exists(clip):
        live.make_clip(clip)
    off = run(binary, clip, tmp, False, args.clients, args.dashboards)
    live.log(f"dashboard off: {off}")
    on = run(binary, clip, tmp, True, args.clients, args.dashboards)
    live.log(f"dashboard on:  {on}")
    if min(on["snapshots"], default=0) < WINDOW_S // 3:
        live.die(f"the dashboard clients saw too few snapshots: {on['snapshots']}")
    cpu = on["cpu_s"] / off["cpu_s"] if off["cpu_s"] else float("nan")
    rss = on["hwm_kib"] - off["hwm_kib"]
    print(f"CPU over {WINDOW_S} s: off {off['cpu_s']:.2f} s, on {on['cpu_s']:.2f} s, "
          f"ratio {cpu:.3f} (goal < {CPU_GOAL})")
    print(f"peak RSS: off {off['hwm_kib'] / 1024:.1f} MiB, on {on['hwm_kib'] / 1024:.1f} MiB, "
          f"+{rss / 1024:.2f} MiB (goal < {RSS_GOAL_KIB / 1024:.0f} MiB)")
    print(f"HLS segments served: off {off['segments']}, on {on['segments']}; "
          f"dashboard snapshots per client: {on['snapshots']}; reports: {on['reports']}")


if __name__ == "__main__":
    main()
