#!/usr/bin/env python3
"""Benchmark: what a node keeps when its data directory is a 60 MB disk.

A benchmark, not a test: it prints figures and exits non-zero only when it
cannot run (never for missing a goal).

`meshcast serve` gets its data directory on a 60 MB tmpfs (mounted here;
run as root) with the default low-space watermark off (`min_free_bytes =
0`) for phase 1 and on for phase 2, and a 3 Mbit/s ffmpeg publisher (libx264
ultrafast CBR, GOP 2 s, AAC) in real time:

1. Full disk.  A ballast file leaves 3 MB free; after 20 s of publishing it
   is removed (space returns); 40 s of media in all.  Reported: segments the
   API counts as dropped, gaps (`EXT-X-GAP`) in the archive, whether the
   session ended, and after a `meshcast repo gc`: how many of the archive's
   segments (and its init segments, site and archive) come back hashing to
   their CIDs, how many of the seconds the API lists are fetchable, and the
   files left in tmp/; what `/metrics` said while the disk was full and
   after (`hls_storage_failing`, `hls_segments_dropped_total`) and how many
   log lines said storing failed and works again.  Goal: every second the
   API lists fetchable and pinned, the gap marked, tmp/ empty, one line each.
2. Retention.  No ballast, `min_free_bytes` 16 MB, 180 s of 3 Mbit/s
   (~68 MB, more than the disk).  The free space is sampled every 0.2 s.
   Reported: least free space, segments dropped (0 if the disk never
   filled), how much of the session the archive still lists and whether all
   of it is fetchable after a GC.  Goal: the disk never fills.

Usage:  bench/fulldisk.py [--bin target/debug/meshcast] [--secs 180]
Takes about 4.5 minutes.  Everything it starts is stopped and the tmpfs
unmounted at the end.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

KEY = "bench-key-0123456789"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(base, path):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return r.read()


def api(base):
    streams = json.loads(get(base, "/api/v1/streams"))["streams"]
    return next(s for s in streams if s["name"] == "cam")


def metric(base, series):
    for line in get(base, "/metrics").decode().splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    return None


def storage_metrics(base):
    return {name: metric(base, f'meshcast_{name}{{stream="cam"}}')
            for name in ("hls_storage_failing", "hls_segments_dropped_total")}


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def varint(raw, pos):
    value = shift = 0
    while True:
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def cid_fields(raw, pos=0):
    """Codec, digest and end of a binary CIDv1 (sha2-256) at `pos`."""
    fields = []
    for _ in range(4):  # version, codec, hash function, digest length
        value, pos = varint(raw, pos)
        fields.append(value)
    assert fields[0] == 1 and fields[2] == 0x12, fields
    return fields[1], raw[pos:pos + fields[3]], pos + fields[3]


def cid_bytes(cid):
    """The binary form of a base32 CIDv1."""
    assert cid.startswith("b"), cid
    text = cid[1:].upper()
    return base64.b32decode(text + "=" * (-len(text) % 8))


def verified(base, uri, body):
    """Whether `body` (got for `uri`) is what its CID names: a raw block
    hashes to it; a UnixFS file (dag-pb, e.g. a segment over LL-HLS parts)
    comes as a CAR whose blocks all hash to their CIDs, the root first, and
    whose raw leaves are the body."""
    cid = uri[len("/ipfs/"):].split("?")[0]
    codec, digest, _ = cid_fields(cid_bytes(cid))
    if codec == 0x55:
        return hashlib.sha256(body).digest() == digest
    car = get(base, f"/ipfs/{cid}?format=car")
    length, pos = varint(car, 0)
    pos += length  # the header
    first = None
    leaves = b""
    while pos < len(car):
        length, pos = varint(car, pos)
        end = pos + length
        codec, digest, data_at = cid_fields(car, pos)
        data = car[data_at:end]
        if hashlib.sha256(data).digest() != digest:
            return False
        if first is None:
            first = car[pos:data_at]
        if codec == 0x55:
            leaves += data
        pos = end
    return first == cid_bytes(cid) and leaves == body


def make_clip(path, secs):
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-keyint_min", "50",
         "-sc_threshold", "0", "-b:v", "3M", "-minrate", "3M", "-maxrate", "3M",
         "-bufsize", "1M", "-x264-params", "nal-hrd=cbr:force-cfr=1", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-t", str(secs), "-f", "flv", path],
        check=True)


class Node:
    def __init__(self, binary, data, work, min_free):
        self.binary, self.data = binary, data
        self.http = free_port()
        self.rtmp = free_port()
        cfg = os.path.join(work, "meshcast.toml")
        with open(cfg, "w") as f:
            f.write(f'[rtmp]\nlisten = "127.0.0.1:{self.rtmp}"\n'
                    f'[p2p]\nenabled = false\n'
                    f'[live]\nmin_free_bytes = {min_free}\n'
                    f'[[streams]]\nname = "cam"\nkey = "{KEY}"\n')
        self.log = open(os.path.join(work, f"serve-{min_free}.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "--data", data, "serve", "--config", cfg, "--http", f"127.0.0.1:{self.http}"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.base = f"http://127.0.0.1:{self.http}"
        for _ in range(100):
            try:
                get(self.base, "/api/v1/streams")
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("meshcast did not start")

    def publish(self, clip):
        return subprocess.Popen(
            ["ffmpeg", "-v", "error", "-re", "-i", clip, "-c", "copy", "-f", "flv",
             f"rtmp://127.0.0.1:{self.rtmp}/live/{KEY}"], start_new_session=True)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.log.close()


def wait_ended(node, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        s = api(node.base)
        if s["sessions"] and s["sessions"][-1]["ended"]:
            return s
        time.sleep(0.2)
    raise SystemExit("the session never ended")


def check_kept(node):
    """After a GC: what the API names, fetched and hash-checked."""
    subprocess.run([node.binary, "--data", node.data, "repo", "gc"], check=True,
                   stdout=subprocess.DEVNULL)
    s = api(node.base)
    sess = s["sessions"][-1]
    archive = get(node.base, f"/ipfs/{sess['archive_cid']}").decode()
    get(node.base, f"/ipfs/{s['site_cid']}/stream.json")
    pins = subprocess.run([node.binary, "--data", node.data, "pin", "ls"], check=True,
                          capture_output=True, text=True).stdout
    ok = bad = 0
    ok_secs = 0.0
    dur = None
    for line in archive.splitlines():
        if line.startswith("#EXTINF:"):
            dur = float(line[8:].split(",")[0])
        uri = None
        if line.startswith("#EXT-X-MAP:URI="):
            uri = line.split('"')[1]
        elif line and not line.startswith("#"):
            uri = line
        if uri is None or "?filename=gap-" in uri:
            dur = None if uri else dur
            continue
        try:
            good = verified(node.base, uri, get(node.base, uri))
        except OSError:
            good = False
        if good:
            ok += 1
            if dur is not None:
                ok_secs += dur
        else:
            bad += 1
        dur = None
    return {
        "fetchable": ok,
        "missing": bad,
        "fetchable_s": round(ok_secs, 3),
        "api_s": sess["duration_s"],
        "gap_s": sess["gap_s"],
        "gaps_marked": archive.count("#EXT-X-GAP"),
        "ended": sess["ended"],
        "archive_pinned": sess["archive_cid"] in pins,
        "site_pinned": s["site_cid"] in pins,
        "media_sequence": int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", archive).group(1)),
        "storage": s["storage"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/debug/meshcast")
    ap.add_argument("--secs", type=int, default=180)
    args = ap.parse_args()
    binary = os.path.abspath(args.bin)
    work = tempfile.mkdtemp(prefix="fulldisk-")
    mnt = os.path.join(work, "disk")
    os.makedirs(mnt)
    try:
        clip = os.path.join(work, "clip.flv")
        make_clip(clip, max(args.secs, 40))
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60m", "tmpfs", mnt], check=True)

        # Phase 1: a full disk, then space returns.
        data = os.path.join(mnt, "data1")
        node = Node(binary, data, work, 0)
        ballast = os.path.join(mnt, "ballast")
        with open(ballast, "wb") as f:
            f.write(b"\x5a" * max(0, free_bytes(mnt) - 3_000_000))
        short = os.path.join(work, "clip40.flv")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", clip, "-c", "copy", "-t", "40",
                        short], check=True)
        pub = node.publish(short)
        time.sleep(19)
        while_full = storage_metrics(node.base)
        time.sleep(1)
        os.remove(ballast)
        pub.wait(timeout=60)
        wait_ended(node)
        after = storage_metrics(node.base)
        kept = check_kept(node)
        tmp_left = len(os.listdir(os.path.join(data, "tmp")))
        node.stop()
        with open(node.log.name) as f:
            log = f.read()
        print("phase 1 (full disk, then space returns):")
        print(json.dumps({**kept, "tmp_files_left": tmp_left,
                          "metrics_while_full": while_full, "metrics_after": after,
                          "log_lines_storing_failed": log.count("storing the stream failed"),
                          "log_lines_storing_works_again":
                              log.count("storing the stream works again")}, indent=1))
        shutil.rmtree(data)

        # Phase 2: retention on a disk smaller than the run.
        data = os.path.join(mnt, "data2")
        node = Node(binary, data, work, 16 << 20)
        long_clip = os.path.join(work, f"clip{args.secs}.flv")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", clip, "-c", "copy", "-t",
                        str(args.secs), long_clip], check=True)
        pub = node.publish(long_clip)
        least = free_bytes(mnt)
        while pub.poll() is None:
            least = min(least, free_bytes(mnt))
            time.sleep(0.2)
        wait_ended(node)
        kept = check_kept(node)
        node.stop()
        print(f"phase 2 (retention, {args.secs} s of 3 Mbit/s on 60 MB, min_free_bytes 16 MiB):")
        print(json.dumps({**kept, "least_free_bytes": least}, indent=1))
    finally:
        subprocess.run(["umount", "-l", mnt], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
