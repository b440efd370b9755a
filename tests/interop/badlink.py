#!/usr/bin/env python3
"""A bad network link between the root network namespace and a new one.

    root namespace                         namespace NS
    10.X.0.1 (tun mcaN) <== this relay ==> (tun mcbN) 10.X.0.2   the bad link
    10.X.1.1 (veth mcmN) <---------------> (veth mcnN) 10.X.1.2  a clean one

The clean veth pair is for watching the namespace (HTTP to its API)
without using up the bad link.

Every IP packet crossing the link, either way, is dropped with probability
LOSS, queued behind the packets before it at RATE bits per second (a drop-
tail queue of QUEUE seconds), and delivered DELAY later: what `tc netem
delay 40ms loss 5% rate 5mbit` does on a veth pair, done in user space
because this kernel has no netem qdisc. TCP sees real loss, delay and a
real bottleneck, and runs its own congestion control over them.

Usage (root):
    badlink.py --ns NAME --subnet 10.99 [--delay 0.04] [--loss 0.05]
               [--rate 5e6] [--queue 0.2] [--seed 1]

Prints one JSON line when the link is up ({"ns", "root_addr", "ns_addr",
"mgmt_root_addr", "mgmt_ns_addr"}),
then relays until stdin closes or it gets SIGTERM, and then removes the
namespace. Counters go to stderr at exit.
"""

import argparse
import fcntl
import heapq
import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


class Direction:
    """One way of the link: loss, then a rate-limited drop-tail queue, then delay."""

    def __init__(self, args, rng):
        self.args = args
        self.rng = rng
        self.busy_until = 0.0  # when the link finishes sending what is queued
        self.sent = self.lost = self.overflow = 0

    def admit(self, now, size):
        """The delivery time of a packet entering now, or None if dropped."""
        if self.rng.random() < self.args.loss:
            self.lost += 1
            return None
        start = max(now, self.busy_until)
        if start - now > self.args.queue:
            self.overflow += 1
            return None
        self.busy_until = start + size * 8 / self.args.rate
        self.sent += 1
        return self.busy_until + self.args.delay


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ns", required=True)
    p.add_argument("--subnet", default="10.99")
    p.add_argument("--delay", type=float, default=0.040)
    p.add_argument("--loss", type=float, default=0.05)
    p.add_argument("--rate", type=float, default=5e6)
    p.add_argument("--queue", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    tag = str(os.getpid() % 100000)
    a_name, b_name = "mca" + tag, "mcb" + tag
    root_addr, ns_addr = args.subnet + ".0.1", args.subnet + ".0.2"
    m_root, m_ns = "mcm" + tag, "mcn" + tag
    run("ip", "netns", "add", args.ns)
    try:
        fa = open_tun(a_name)
        fb = open_tun(b_name)
        # The tun keeps working from this fd after its device moves.
        run("ip", "link", "set", b_name, "netns", args.ns)
        run("ip", "addr", "add", root_addr, "peer", ns_addr, "dev", a_name)
        run("ip", "link", "set", a_name, "up")
        run("ip", "-n", args.ns, "addr", "add", ns_addr, "peer", root_addr, "dev", b_name)
        run("ip", "-n", args.ns, "link", "set", b_name, "up")
        run("ip", "-n", args.ns, "link", "set", "lo", "up")
        mgmt_root, mgmt_ns = args.subnet + ".1.1", args.subnet + ".1.2"
        run("ip", "link", "add", m_root, "type", "veth", "peer", "name", m_ns, "netns", args.ns)
        run("ip", "addr", "add", mgmt_root + "/24", "dev", m_root)
        run("ip", "link", "set", m_root, "up")
        run("ip", "-n", args.ns, "addr", "add", mgmt_ns + "/24", "dev", m_ns)
        run("ip", "-n", args.ns, "link", "set", m_ns, "up")
        print(json.dumps({"ns": args.ns, "root_addr": root_addr, "ns_addr": ns_addr,
                          "mgmt_root_addr": mgmt_root, "mgmt_ns_addr": mgmt_ns}), flush=True)
        relay(args, fa, fb)
    finally:
        # A deleted namespace can live on in the kernel for minutes, and
        # with it the veth pair whose address the next run wants: delete
        # the pair itself.
        subprocess.run(["ip", "link", "del", m_root], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", args.ns], stderr=subprocess.DEVNULL)


def relay(args, fa, fb):
    rng = random.Random(args.seed)
    ways = {fa: (fb, Direction(args, rng)), fb: (fa, Direction(args, rng))}
    pending = []  # (deliver_at, seq, fd, packet)
    seq = 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    stdin = sys.stdin.fileno()
    while not stop:
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, out, pkt = heapq.heappop(pending)
            try:
                os.write(out, pkt)
            except OSError:
                pass
        timeout = max(0.0, pending[0][0] - now) if pending else 0.5
        try:
            ready, _, _ = select.select([fa, fb, stdin], [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd in ready:
            if fd == stdin:
                if not os.read(stdin, 4096):
                    stop.append(1)
                continue
            out, way = ways[fd]
            for _ in range(64):
                try:
                    pkt = os.read(fd, 65536)
                except BlockingIOError:
                    break
                at = way.admit(now, len(pkt))
                if at is not None:
                    seq += 1
                    heapq.heappush(pending, (at, seq, out, pkt))
    a, b = ways[fa][1], ways[fb][1]
    print(json.dumps({"to_ns": vars_of(a), "from_ns": vars_of(b)}), file=sys.stderr)


def vars_of(d):
    return {"sent": d.sent, "lost": d.lost, "overflow": d.overflow}


if __name__ == "__main__":
    main()
