#!/usr/bin/env python3
"""A cjdroute admin interface for tests: InterfaceController_peerStats over UDP.

    cjdns-admin.py PEERS [PASSWORD]

Binds 127.0.0.1 on a free UDP port, prints the port on stdout, and answers
as cjdroute's admin does (admin/Admin.c, net/InterfaceController_admin.c):
one bencoded dictionary per datagram, replies echo the request's txid.

- {"q": "cookie"} -> {"cookie": "<seconds>"}
- {"q": "InterfaceController_peerStats", "args": {"page": N}}: six peers a
  page, "more": 1 when another page follows, "total". With a PASSWORD the
  call must be authenticated: {"q": "auth", "aq": <function>, "cookie",
  "hash"}, hash = sha256hex(bencode(request with hash =
  sha256hex(password + cookie))); otherwise {"error": "Auth failed."}.
- {"q": "Core_nodeInfo"} (no password needed, as cjdroute registers it,
  admin/angel/Core.c): "myAddr" (this node's own `v<version>.<label>.<key>.k`),
  "version", "encodingScheme", "compressedSchemeHex", "error": "none".
- Peers have real cjdns keys (an address in fc00::/8), lladdr, state and the
  counters; bytes and packets grow with every call, one peer loses 5%.

Lines on stderr name each peer's key and address as `peer <addr> <ipv6>`,
and this node's as `self <addr> <ipv6>`, for the test to compare.
"""

import hashlib
import os
import socket
import sys
import time

ALPHABET = "0123456789bcdfghjklmnpqrstuvwxyz"


def benc(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(benc(x) for x in v) + b"e"
    if isinstance(v, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, x) for k, x in v.items())
        return b"d" + b"".join(benc(k) + benc(x) for k, x in items) + b"e"
    raise TypeError(type(v))


def bdec(data, i=0):
    c = data[i:i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1:end]), end + 1
    if c == b"l":
        out, i = [], i + 1
        while data[i:i + 1] != b"e":
            x, i = bdec(data, i)
            out.append(x)
        return out, i + 1
    if c == b"d":
        out, i = {}, i + 1
        while data[i:i + 1] != b"e":
            k, i = bdec(data, i)
            out[k.decode()], i = bdec(data, i)
        return out, i + 1
    colon = data.index(b":", i)
    n = int(data[i:colon])
    return data[colon + 1:colon + 1 + n], colon + 1 + n


def b32(raw):
    """cjdns' base32: least significant bits first."""
    out, acc, bits = [], 0, 0
    for byte in raw:
        acc |= byte << bits
        bits += 8
        while bits >= 5:
            out.append(ALPHABET[acc & 31])
            acc >>= 5
            bits -= 5
    if bits:
        out.append(ALPHABET[acc & 31])
    return "".join(out)


def keypair():
    """A public key whose address is in fc00::/8, as cjdroute makes them."""
    while True:
        key = os.urandom(32)
        h = hashlib.sha512(hashlib.sha512(key).digest()).digest()
        if h[0] == 0xFC:
            ip = ":".join(h[i:i + 2].hex() for i in range(0, 16, 2))
            return b32(key) + ".k", ip


def main():
    count = int(sys.argv[1])
    password = sys.argv[2] if len(sys.argv) > 2 else None
    peers = []
    for n in range(count):
        key, ip = keypair()
        addr = "v20.0000.0000.0000.%04x.%s" % (0x13 + 2 * n, key)
        peers.append({"addr": addr, "ip": ip, "lladdr": "10.66.0.%d:11234" % (n + 2),
                      "incoming": n % 2, "lossy": n == 0})
        print("peer %s %s" % (addr, ip), file=sys.stderr, flush=True)
    my_key, my_ip = keypair()
    my_addr = "v21.0000.0000.0000.0001.%s" % my_key
    print("self %s %s" % (my_addr, my_ip), file=sys.stderr, flush=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    calls = 0
    while True:
        data, src = sock.recvfrom(65536)
        try:
            req, _ = bdec(data)
        except (ValueError, IndexError):
            continue
        txid = req.get("txid", b"")
        q = req.get("q", b"").decode()
        if q == "cookie":
            reply = {"cookie": str(int(time.time()))}
        elif q == "Core_nodeInfo":
            reply = {"myAddr": my_addr, "version": 21, "compressedSchemeHex": "0014a0",
                     "encodingScheme": [{"bitCount": 4, "prefix": "01", "prefixLen": 1},
                                        {"bitCount": 7, "prefix": "02", "prefixLen": 2},
                                        {"bitCount": 10, "prefix": "00", "prefixLen": 2}],
                     "error": "none"}
        elif q in ("auth", "InterfaceController_peerStats"):
            fn = req.get("aq", b"").decode() if q == "auth" else q
            if password is not None:
                ok = False
                if q == "auth":
                    sent = req["hash"]
                    first = hashlib.sha256((password + req["cookie"].decode()).encode()).hexdigest()
                    req["hash"] = first
                    ok = hashlib.sha256(benc(req)).hexdigest().encode() == sent
                if not ok:
                    sock.sendto(benc({"error": "Auth failed.", "txid": txid}), src)
                    continue
            if fn != "InterfaceController_peerStats":
                reply = {"error": "no such function"}
            else:
                calls += 1
                page = req.get("args", {}).get("page", 0)
                chunk = peers[page * 6:page * 6 + 6]
                out = []
                for i, p in enumerate(chunk):
                    received = 1000 * calls + i
                    lost = received // 19 if p["lossy"] else 0
                    out.append({
                        "addr": p["addr"], "lladdr": p["lladdr"], "state": "ESTABLISHED",
                        "bytesIn": 150_000 * calls, "bytesOut": 90_000 * calls,
                        "recvKbps": 800, "sendKbps": 480, "duplicates": 0,
                        "lostPackets": lost, "receivedPackets": received,
                        "receivedOutOfRange": 0, "isIncoming": p["incoming"],
                        "last": int(time.time() * 1000), "ifNum": 1, "noiseProto": 0,
                    })
                reply = {"peers": out, "total": len(peers)}
                if page * 6 + 6 < len(peers):
                    reply["more"] = 1
        else:
            reply = {"error": "no such function"}
        reply["txid"] = txid
        sock.sendto(benc(reply), src)


if __name__ == "__main__":
    main()
