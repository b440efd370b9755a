#!/usr/bin/env python3
"""Benchmark: what metrics (and the dashboard, when the build has one) cost.

A benchmark, not a test: it prints figures against the goals and exits
non-zero only when it cannot run (never for missing a goal).

The same load runs against `meshcast serve` with `[metrics] enabled = true`
and with it false (and `[dashboard] enabled` likewise, when the build's
config has a `[dashboard]` section), on loopback:

- ffmpeg publishes a 60 s clip in real time (testsrc2 720p25, libx264
  3 Mbit/s, GOP 50, AAC; bench/live.py's clip, made once);
- from the first segment on, for --secs seconds: 200 HLS clients (raw
  HTTP/1.1 keep-alive, bench/live.py's client) poll the live playlist about
  every second and fetch each new segment; 5 dashboard clients hold
  `GET /api/v1/events` (Server-Sent Events) open and read what it pushes,
  when the route exists (when it answers 404 the script says so and runs
  without them); with metrics on, a scraper reads `/metrics` every 5 s as
  a Prometheus would (more often than the usual 15 s, so the figure is an
  upper bound); and each of the 200 players sends its viewer report
  (`POST /api/v1/viewers`) every 10 s, as player.js does (which stops when
  the node answers 404, as with the dashboard off).

Measured over that window: the server's CPU-seconds (utime + stime from
/proc/PID/stat) and its peak RSS (VmHWM, reset with clear_refs at the
window's start). The runs alternate (on, off, off, on for 2 rounds), since
one run varies by a few percent with the machine; sums over the rounds give
the ratios. Goals: < 3 % more CPU, < 4 MiB more peak RSS with metrics on.

Usage (needs ffmpeg):

    bench/metrics_cost.py [--bin target/release/meshcast] [--clip clip.flv]
                          [--clients 200] [--sse 5] [--secs 40] [--rounds 2]

Without --bin it uses target/release/meshcast (built when missing or older
than the sources). Takes about 4 minutes plus the clip (~40 s) when it is
not given. Everything it starts is stopped at the end.
"""

import argparse
import asyncio
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import live  # noqa: E402  (the clip, the HLS client, /proc readers)

HOST = live.HOST
CPU_GOAL = 0.03
RSS_GOAL_KIB = 4 * 1024
SCRAPE_EVERY_S = 5.0


def log(msg):
    live.log(msg)


def has_dashboard(binary):
    """Whether this build's config has a [dashboard] section."""
    out = subprocess.run([binary, "config", "default"], capture_output=True, text=True)
    if out.returncode != 0:
        live.die(f"{binary} config default: {out.stderr}")
    return "\n[dashboard]" in "\n" + out.stdout


class SseStats:
    def __init__(self):
        self.clients = 0
        self.bytes = 0
        self.events = 0
        self.absent = False
        self.errors = 0


async def sse_client(port, deadline, st):
    """Holds `GET /api/v1/events` open until the deadline, reading events."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5)
        writer.write(f"GET /api/v1/events HTTP/1.1\r\nHost: {HOST}\r\n"
                     "Accept: text/event-stream\r\nUser-Agent: bench-metrics\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = int(head.split(b" ", 2)[1])
        if status == 404:
            st.absent = True
            writer.close()
            return
        if status != 200:
            st.errors += 1
            writer.close()
            return
        st.clients += 1
        while time.monotonic() < deadline:
            left = deadline - time.monotonic()
            try:
                chunk = await asyncio.wait_for(reader.read(65536), max(0.1, left))
            except asyncio.TimeoutError:
                break
            if not chunk:
                break
            st.bytes += len(chunk)
            st.events += chunk.count(b"\n\n")
        writer.close()
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError,
            IndexError):
        st.errors += 1


async def reporter(port, deadline, nplayers, sent):
    """Every player's viewer report every 10 s, spread over the 10 s, as
    player.js sends them; like player.js, it stops once the node answers
    404 (dashboard off)."""
    i = 0
    reader = writer = None
    while time.monotonic() < deadline:
        body = json.dumps({"id": f"bench{i % nplayers}", "stream": live.NAME,
                           "latency_ms": 1200 + i % 500, "stalls": 0, "stall_ms": 0,
                           "errors": 0, "bytes_local": i * 1000, "bytes_remote": 0}).encode()
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5)
            writer.write(f"POST /api/v1/viewers HTTP/1.1\r\nHost: {HOST}\r\n"
                         "Content-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            sent[status] = sent.get(status, 0) + 1
            if status == 404:
                break
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError,
                IndexError):
            sent["error"] = sent.get("error", 0) + 1
            writer = None
        i += 1
        await asyncio.sleep(10 / nplayers)
    if writer is not None:
        writer.close()


async def scraper(port, deadline, counts):
    """Reads /metrics every SCRAPE_EVERY_S, as Prometheus would."""
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5)
            _, body, _, _ = await asyncio.wait_for(
                live.http_get(reader, writer, "/metrics", True), 10)
            counts.append(len(body))
            writer.close()
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            counts.append(-1)
        await asyncio.sleep(min(SCRAPE_EVERY_S, max(0.0, deadline - time.monotonic())))


def load(port, nclients, nsse, seconds, scrape):
    hls = live.ClientStats()
    sse = SseStats()
    scrapes = []
    reports = {}
    deadline = time.monotonic() + seconds

    async def main():
        tasks = [live.hls_client(i, nclients, port, f"/live/{live.NAME}.m3u8", deadline, hls)
                 for i in range(nclients)]
        tasks += [sse_client(port, deadline, sse) for _ in range(nsse)]
        tasks.append(reporter(port, deadline, nclients, reports))
        if scrape:
            tasks.append(scraper(port, deadline, scrapes))
        await asyncio.gather(*tasks)

    asyncio.run(main())
    return hls, sse, scrapes, reports


def wait_first_segment(port, proc, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            live.die("meshcast exited early; see its log")
        try:
            c = http.client.HTTPConnection(HOST, port, timeout=1)
            c.request("GET", f"/live/{live.NAME}.m3u8")
            r = c.getresponse()
            body = r.read().decode("utf-8", "replace")
            c.close()
            if r.status == 200 and "#EXTINF" in body:
                return
        except OSError:
            pass
        time.sleep(0.1)
    live.die(f"no segment within {timeout} s")


def run_once(binary, clip, tmp, on, dashboard, args, n):
    procs = live.Procs()
    try:
        http_port, rtmp_port = live.free_port(), live.free_port()
        data = os.path.join(tmp, f"data-{n}")
        conf = os.path.join(tmp, f"meshcast-{n}.toml")
        flag = "true" if on else "false"
        with open(conf, "w") as f:
            f.write(f'data_dir = "{data}"\n\n[[streams]]\nname = "{live.NAME}"\n'
                    f'key = "{live.KEY}"\n\n[http]\nlisten = "{HOST}:{http_port}"\n'
                    # 200 viewers from one loopback address stand for 200
                    # addresses: past the per-address share they are refused.
                    'max_connections_per_address = 100000\n\n'
                    f'[rtmp]\nlisten = "{HOST}:{rtmp_port}"\n\n[metrics]\nenabled = {flag}\n')
            if dashboard:
                f.write(f"\n[dashboard]\nenabled = {flag}\n")
        logf = open(os.path.join(tmp, f"meshcast-{n}.log"), "wb")
        server = procs.start([binary, "serve", "--config", conf, "--no-p2p"],
                             stdout=logf, stderr=subprocess.STDOUT)
        live.wait_http(http_port, "/api/v1/streams", server, "meshcast", ok=(200,))
        live.wait_tcp(rtmp_port, server, "meshcast rtmp")
        pub = procs.start(live.publish_cmd(clip, rtmp_port), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
        wait_first_segment(http_port, server)
        live.reset_hwm([server.pid])
        cpu0 = live.cpu_seconds([server.pid])
        hls, sse, scrapes, reports = load(http_port, args.clients, args.sse, args.secs, on)
        cpu = live.cpu_seconds([server.pid]) - cpu0
        hwm = live.status_kib(server.pid, "VmHWM")
        if pub.poll() is not None and pub.returncode != 0:
            log(f"warning: ffmpeg ended with {pub.returncode}")
        return {
            "on": on, "cpu": cpu, "hwm": hwm, "hls": hls, "sse": sse, "scrapes": scrapes,
            "reports": reports,
        }
    finally:
        procs.stop_all()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="meshcast binary (default target/release/meshcast)")
    ap.add_argument("--clip", help="use (or create and keep) this FLV clip")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--sse", type=int, default=5)
    ap.add_argument("--secs", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if args.secs > live.CLIP_SECS - 10:
        live.die(f"--secs must leave room in the {live.CLIP_SECS} s clip")
    binary = live.ensure_binary(args.bin)
    dashboard = has_dashboard(binary)
    if not dashboard:
        log("this build has no [dashboard] section: only [metrics] is switched")
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        clip = args.clip or os.path.join(tmp, "clip.flv")
        if not os.path.exists(clip):
            live.make_clip(clip)
        order = []
        for r in range(args.rounds):
            order += [True, False] if r % 2 == 0 else [False, True]
        runs = []
        for n, on in enumerate(order):
            log(f"run {n + 1}/{len(order)}: metrics {'on' if on else 'off'}, "
                f"{args.clients} HLS clients, {args.sse} SSE clients, {args.secs} s ...")
            r = run_once(binary, clip, tmp, on, dashboard, args, n)
            hls, sse = r["hls"], r["sse"]
            if sse.absent:
                sse_note = ("off (404)" if dashboard and not on
                            else "absent (404): no dashboard in this build")
            else:
                sse_note = f"{sse.clients} open, {sse.events} events, {sse.bytes} B"
            ok_scrapes = [s for s in r["scrapes"] if s >= 0]
            log(f"  cpu {r['cpu']:.2f} s, peak RSS {r['hwm'] / 1024:.1f} MiB; "
                f"HLS {hls.playlists} playlists, {hls.segments} segments, "
                f"{hls.seg_bytes / 1e6:.1f} MB, {hls.errors} errors {hls.error_kinds or ''}, "
                f"{hls.non200} non-200; "
                f"SSE {sse_note}; viewer reports {r['reports']}"
                + (f"; {len(ok_scrapes)} scrapes of ~{max(ok_scrapes) // 1024} KiB"
                   if ok_scrapes else ""))
            runs.append(r)
        on = [r for r in runs if r["on"]]
        off = [r for r in runs if not r["on"]]
        cpu_on, cpu_off = sum(r["cpu"] for r in on), sum(r["cpu"] for r in off)
        rss_on = max(r["hwm"] for r in on)
        rss_off = max(r["hwm"] for r in off)
        cpu_ratio = cpu_on / cpu_off if cpu_off else float("nan")
        print()
        print(f"CPU-seconds, metrics on / off (sum of {len(on)} runs each): "
              f"{cpu_on:.2f} / {cpu_off:.2f} = {cpu_ratio:.3f} "
              f"({(cpu_ratio - 1) * 100:+.1f} %; goal < +{CPU_GOAL * 100:.0f} %) "
              f"{'OK' if cpu_ratio - 1 < CPU_GOAL else 'MISSED'}")
        print(f"peak RSS, metrics on / off (max over runs): {rss_on / 1024:.1f} / "
              f"{rss_off / 1024:.1f} MiB = {rss_on / rss_off:.3f} "
              f"({(rss_on - rss_off) / 1024:+.2f} MiB; goal < +{RSS_GOAL_KIB / 1024:.0f} MiB) "
              f"{'OK' if rss_on - rss_off < RSS_GOAL_KIB else 'MISSED'}")
        per_run = ", ".join(f"{'on' if r['on'] else 'off'} {r['cpu']:.2f}s/{r['hwm'] / 1024:.1f}MiB"
                            for r in runs)
        print(f"per run: {per_run}")
        if any(r["sse"].absent for r in runs if r["on"]):
            print("dashboard clients: /api/v1/events answered 404 (no dashboard in this build)")


if __name__ == "__main__":
    main()
