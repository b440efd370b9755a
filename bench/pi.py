#!/usr/bin/env python3
"""Benchmark: what a Raspberry Pi would need, measured on this machine.

A benchmark, not a test: it prints figures and exits non-zero only when it
cannot run. The figures are for judging a Pi 3 (4 Cortex-A53 cores at
1.2 GHz, 1 GB): CPU per Mbit/s ingested and served, peak RSS, and
instructions per segment (which, unlike seconds, carry over between CPUs
give or take the instruction set).

One `meshcast serve` (release build, libp2p on loopback, no mDNS), the
60 s 720p25 3 Mbit/s clip of bench/live.py:

1. Ingest. ffmpeg publishes the clip in real time (`-re`). meshcast's
   utime+stime from /proc over the publish, minus its idle CPU for the
   same time (measured before), over the megabits ingested (the FLV's
   size): CPU-seconds per megabit, which is also the share of a core one
   Mbit/s takes. Peak RSS (VmHWM).
2. Serving. The clip again, with N HLS clients (bench/live.py's asyncio
   clients: poll the live playlist every second, fetch each new segment)
   joining at the live edge. The CPU beyond phase 1's over the megabits
   the clients fetched: CPU-seconds per megabit served. Peak RSS.
3. Instructions. `valgrind --tool=callgrind` runs the same node; counting
   starts once it listens (callgrind_control --zero) and is dumped once a
   publish of the clip's first S seconds (as fast as ffmpeg goes) has
   ended. Instructions over the segments cut. `perf stat -e instructions`
   would do instead where the kernel exposes the counter; this VM's does
   not, so callgrind it is.

Usage: bench/pi.py [--bin target/release/meshcast] [--clip clip.flv]
                   [--clients 20] [--callgrind-secs 20] [--keep-tmp]

Without --bin it uses target/release/meshcast (built when missing or older
than the sources). Needs ffmpeg and valgrind. Takes about 4 minutes.
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import live  # noqa: E402  (the helpers of bench/live.py)
from live import HOST, KEY, NAME, log, die  # noqa: E402

IDLE_SECS = 10


def serve_cmd(binary, tmp, label, http, rtmp):
    return [binary, "serve", "--data", os.path.join(tmp, f"data-{label}"),
            "--http", f"{HOST}:{http}", "--rtmp", f"{HOST}:{rtmp}",
            "--p2p", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--stream", f"{NAME}={KEY}"]


def start_node(procs, binary, tmp, label, prefix=(), timeout=20):
    http, rtmp = live.free_port(), live.free_port()
    out = open(os.path.join(tmp, f"{label}.log"), "wb")
    p = procs.start(list(prefix) + serve_cmd(binary, tmp, label, http, rtmp),
                    stdout=out, stderr=subprocess.STDOUT)
    live.wait_http(http, "/api/v1/streams", p, label, timeout=timeout, ok=(200,))
    live.wait_tcp(rtmp, p, f"{label} rtmp", timeout=timeout)
    return p, http, rtmp


def session_ended(http, sessions):
    """True once the stream has `sessions` sessions and the last has ended."""
    status, body = live.fetch(http, "/api/v1/streams")
    if status != 200:
        return False
    for s in json.loads(body)["streams"]:
        if s["name"] == NAME:
            ss = s.get("sessions") or []
            return len(ss) >= sessions and ss[-1].get("ended") is True
    return False


def wait_ended(http, sessions, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if session_ended(http, sessions):
            return
        time.sleep(0.5)
    die(f"session {sessions} did not end within {timeout} s")


def archive_segments(http):
    status, body = live.fetch(http, f"/live/{NAME}/archive.m3u8")
    if status != 200:
        die(f"archive playlist: {status}")
    _, segs = live.parse_playlist(body.decode(), f"/live/{NAME}/archive.m3u8")
    return len(segs)


def publish(procs, clip, rtmp, realtime=True, seconds=None):
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin"]
    if realtime:
        cmd.append("-re")
    cmd += ["-i", clip]
    if seconds:
        cmd += ["-t", str(seconds)]
    cmd += ["-c", "copy", "-f", "flv", f"rtmp://{HOST}:{rtmp}/live/{KEY}"]
    p = procs.start(cmd)
    rc = p.wait()
    if rc != 0:
        die(f"ffmpeg publishing ended with {rc}")


def callgrind_total(path):
    with open(path) as f:
        for line in f:
            m = re.match(r"(?:summary|totals):\s+(\d+)", line)
            if m:
                return int(m.group(1))
    die(f"no instruction total in {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="meshcast binary (default target/release/meshcast, built if stale)")
    ap.add_argument("--clip", help="use (or create and keep) this FLV clip")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--callgrind-secs", type=int, default=20)
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args()
    for tool in ("ffmpeg", "valgrind", "callgrind_control"):
        if not shutil.which(tool):
            die(f"{tool} is missing (Debian packages ffmpeg, valgrind)")
    binary = live.ensure_binary(args.bin)
    tmp = tempfile.mkdtemp(prefix="meshcast-bench-pi-")
    procs = live.Procs()
    try:
        clip = args.clip or os.path.join(tmp, "clip.flv")
        if not os.path.exists(clip):
            live.make_clip(clip)
        clip_mbit = os.path.getsize(clip) * 8 / 1e6
        clip_secs = live.CLIP_SECS

        node, http, rtmp = start_node(procs, binary, tmp, "meshcast")
        pids = lambda: [node.pid]  # noqa: E731
        time.sleep(2)
        c0 = live.cpu_seconds(pids())
        time.sleep(IDLE_SECS)
        idle_rate = (live.cpu_seconds(pids()) - c0) / IDLE_SECS
        log(f"idle: {idle_rate * 100:.2f} % of a core")

        # ---- phase 1: ingest alone
        log(f"phase 1: publishing the {clip_mbit:.0f} Mbit clip in real time ...")
        c0, t0 = live.cpu_seconds(pids()), time.monotonic()
        publish(procs, clip, rtmp)
        wait_ended(http, 1, 30)
        c1, t1 = live.cpu_seconds(pids()), time.monotonic()
        ingest_cpu = (c1 - c0) - idle_rate * (t1 - t0)
        hwm1 = live.status_kib(node.pid, "VmHWM")
        segs1 = archive_segments(http)

        # ---- phase 2: ingest with HLS clients
        log(f"phase 2: the clip again with {args.clients} HLS clients ...")
        st = {}

        def clients():
            st["r"] = live.run_clients(args.clients, http, f"/live/{NAME}.m3u8", clip_secs + 4)

        c0, t0 = live.cpu_seconds(pids()), time.monotonic()
        th = threading.Thread(target=clients)
        th.start()
        publish(procs, clip, rtmp)
        th.join()
        wait_ended(http, 2, 30)
        c2, t2 = live.cpu_seconds(pids()), time.monotonic()
        cs = st["r"]
        served_mbit = cs.seg_bytes * 8 / 1e6
        serve_cpu = (c2 - c0) - idle_rate * (t2 - t0) - ingest_cpu
        hwm2 = live.status_kib(node.pid, "VmHWM")
        live.Procs.stop(node)

        # ---- phase 3: instructions per segment
        log(f"phase 3: callgrind over a {args.callgrind_secs} s publish ...")
        out = os.path.join(tmp, "callgrind.out.%p")
        cg, cg_http, cg_rtmp = start_node(
            procs, binary, tmp, "callgrind",
            prefix=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"],
            timeout=180)
        time.sleep(3)
        subprocess.run(["callgrind_control", "--zero", str(cg.pid)], check=True,
                       capture_output=True)
        publish(procs, clip, cg_rtmp, realtime=False, seconds=args.callgrind_secs)
        wait_ended(cg_http, 1, 300)
        segs3 = archive_segments(cg_http)
        subprocess.run(["callgrind_control", "--dump=bench", str(cg.pid)], check=True,
                       capture_output=True)
        live.Procs.stop(cg, timeout=60)
        dumps = sorted(glob.glob(os.path.join(tmp, f"callgrind.out.{cg.pid}.*")))
        if not dumps:
            die("callgrind wrote no dump")
        instr = callgrind_total(dumps[0])

        ingest_rate = clip_mbit / clip_secs
        print()
        print(f"clip: {clip_mbit:.1f} Mbit over {clip_secs} s = {ingest_rate:.2f} Mbit/s; "
              f"{segs1} segments")
        print(f"idle: {idle_rate:.4f} CPU-s/s")
        print(f"ingest: {ingest_cpu:.2f} CPU-s over {clip_mbit:.0f} Mbit = "
              f"{ingest_cpu / clip_mbit * 1000:.2f} ms CPU per Mbit "
              f"({ingest_cpu / clip_mbit * 100:.3f} % of a core per Mbit/s)")
        print(f"serve: {args.clients} clients fetched {cs.segments} segments, "
              f"{served_mbit:.0f} Mbit ({served_mbit / clip_secs:.1f} Mbit/s), "
              f"{cs.non200} non-200, {cs.errors} errors; {serve_cpu:.2f} CPU-s = "
              f"{serve_cpu / served_mbit * 1000:.2f} ms CPU per Mbit "
              f"({serve_cpu / served_mbit * 100:.3f} % of a core per Mbit/s)")
        print(f"peak RSS (VmHWM): {hwm1 / 1024:.1f} MiB ingesting, "
              f"{hwm2 / 1024:.1f} MiB ingesting with {args.clients} clients")
        print(f"callgrind: {instr / 1e6:.0f} M instructions over {segs3} segments "
              f"({args.callgrind_secs} s at {ingest_rate:.1f} Mbit/s) = "
              f"{instr / segs3 / 1e6:.1f} M instructions per 2 s segment, "
              f"{instr / (clip_mbit * args.callgrind_secs / clip_secs) / 1e6:.2f} M per Mbit")
    finally:
        procs.stop_all()
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
