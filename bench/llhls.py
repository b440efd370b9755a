#!/usr/bin/env python3
"""Benchmark: LL-HLS glass-to-glass latency on the origin, by part target.

A benchmark, not a test: it prints a table and exits non-zero only when it
cannot run (never for missing a goal).

For each part target (default 200 ms, 300 ms, 500 ms and "0s", plain HLS),
a fresh `meshcast serve` (its own data directory, loopback ports, no p2p)
takes a 720p25 3 Mbit/s clip (GOP 50, 2 s) from `ffmpeg -re`, and headless
Chromium (tests/interop/page-state.mjs, the player of /watch/NAME with
hls.js in low-latency mode) watches it for --seconds.  Every 500 ms the page
reports `now - EXT-X-PROGRAM-DATE-TIME` of the frame on screen
(hls.js `playingDate`) and the video position; latency is the median after
the first 5 s, a stall a sample where playback advanced less than 0.1 s
while it should have played 0.5 s.  Goal (issue 8): median <= 1.5 s with
no stall on the origin.

The anchor, in the same run: nginx-rtmp (libnginx-mod-rtmp, `hls_fragment
2s`, the same clip from its own `ffmpeg -re`) played by the same hls.js in
the same Chromium, configured as meshcast's player configures it for a
playlist without parts (low-latency mode, live sync 6 s, catch-up at 1.5x
past 14 s), from a page nginx serves next to its playlists.  nginx's
playlists carry no PROGRAM-DATE-TIME, so for it, and beside the
glass-to-glass figure for meshcast, the table gives hls.js's `latency`:
the distance of the frame on screen to the live edge of the playlist.
--no-nginx leaves the anchor out (it needs nginx and libnginx-mod-rtmp,
installed with apt-get when missing, as bench/live.py does).

Mirrors, in the same run (--no-mirrors leaves them out): an origin with
the default part target and p2p on, and a second `meshcast serve --follow
NAME --peer ORIGIN` that learns of each part from the origin's signed
announcements and fetches it by Bitswap; the same Chromium watches
/watch/cam on the mirror.  Once on loopback, once with the mirror in a
network namespace behind tests/interop/badlink.py (5% loss, 40 ms each
way, 5 Mbit/s; Chromium runs in the namespace too; needs root,
--no-badlink leaves it out).  After the whole clip has played out, the
table gives the origin's bytes sent on its libp2p TCP sockets (kernel
tcp_info `bytes_sent`: retransmissions, Noise and Yamux framing, pubsub and
DHT traffic included) per byte of media in its archive (init segments
included), and the same less the site's files that never change (the
player page and hls.js, about 0.66 MB, which a mirror of another version
fetches once however long the stream; one of the same version holds them
already).  Goal: at most 1.05, parts are not sent twice.  Segment-ready lag
against nginx-rtmp and peak RSS with 200 polling clients are bench/live.py's
phases 1 and 2 (the default part target applies there).

Usage:

    bench/llhls.py [--bin target/debug/meshcast] [--seconds 30]
                   [--targets 200ms,300ms,500ms,0s] [--no-nginx]
                   [--no-mirrors] [--no-badlink]

Needs ffmpeg, node and Chromium as `scripts/test` installs them.  Takes
about (seconds + 15) s per target, and (seconds + 35) s per mirror row.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "bench-key-0123456789"
# Each sample: glass-to-glass (now - PROGRAM-DATE-TIME of the frame on
# screen, when the playlist has it) and hls.js's latency to its live edge.
LATENCY = ("(() => { const h = window.meshcastPlayer && window.meshcastPlayer.hls; "
           "if (!h) return null; "
           "return {pdt: h.playingDate ? (Date.now() - h.playingDate.getTime()) / 1000 : null, "
           "edge: isFinite(h.latency) && h.latency > 0 ? h.latency : null}; })()")

# The anchor's page: the embedded hls.js, configured as src/assets/player.js
# configures it for a live playlist without parts, and the same
# window.meshcastPlayer shape tests/interop/page-state.mjs reads.
NGINX_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>nginx-rtmp anchor</title>
<script src="hls.min.js"></script></head>
<body><video id="v" muted autoplay playsinline></video>
<script>
const video = document.getElementById("v");
const hls = new Hls({lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5,
                     liveSyncDuration: 6, liveMaxLatencyDuration: 14});
window.meshcastPlayer = {video, hls, live: true, offline: false, errors: []};
hls.on(Hls.Events.ERROR, (_e, d) => { if (d.fatal) window.meshcastPlayer.errors.push(d.details); });
hls.loadSource("/hls/STREAM.m3u8");
hls.attachMedia(video);
</script></body></html>
"""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_clip(path, secs):
    log(f"making the {secs} s 720p25 3 Mbit/s clip {path} ...")
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=25:duration={secs}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={secs}",
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", "3M", "-maxrate", "3M",
         "-bufsize", "6M", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-ar", "48000",
         "-t", str(secs), "-f", "flv", path],
        check=True, stdin=subprocess.DEVNULL)


def wait_live(url, timeout=30):
    start = time.time()
    while time.time() - start < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if b"#EXTINF" in r.read():
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the stream never went live")


def watch(url, seconds, prefix=()):
    """Chromium on `url` for `seconds` (in the namespace `prefix` enters):
    (glass-to-glass samples, edge-latency samples, stalls, player errors),
    all after the first 5 s."""
    out = subprocess.run(
        list(prefix) + ["node", os.path.join(ROOT, "tests/interop/page-state.mjs"), url,
         "--seconds", str(seconds), "--eval", LATENCY],
        capture_output=True, text=True, timeout=seconds + 60)
    if not out.stdout.strip():
        raise RuntimeError(f"page-state.mjs printed nothing: {out.stderr.strip()}")
    states = json.loads(out.stdout)
    samples = [s for s in states["samples"] if s["t"] >= 5]
    values = [s.get("value") or {} for s in samples]
    pdt = [v["pdt"] for v in values if isinstance(v.get("pdt"), (int, float))]
    edge = [v["edge"] for v in values if isinstance(v.get("edge"), (int, float))]
    stalls = 0
    for a, b in zip(samples, samples[1:]):
        if a.get("time") is not None and b.get("time") is not None and b["time"] - a["time"] < 0.1:
            stalls += 1
    return pdt, edge, stalls, states["errors"] + states.get("page_errors", [])


def stop(procs):
    for p in procs:
        if p and p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def publish(clip, url):
    return subprocess.Popen(
        ["ffmpeg", "-v", "error", "-nostdin", "-re", "-i", clip, "-c", "copy", "-f", "flv", url],
        stdin=subprocess.DEVNULL, start_new_session=True)


def run_target(binary, clip, target, seconds, work):
    data = tempfile.mkdtemp(dir=work)
    config = os.path.join(data, "meshcast.toml")
    with open(config, "w") as f:
        f.write(f'[live]\npart_target = "{target}"\n')
    http, rtmp = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    serve = subprocess.Popen(
        [binary, "--data", data, "serve", "--config", config, "--http", http,
         "--rtmp", rtmp, "--no-p2p", "--stream", f"cam={KEY}"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "log"), "w"),
        start_new_session=True)
    pub = None
    try:
        time.sleep(1)
        pub = publish(clip, f"rtmp://{rtmp}/live/{KEY}")
        wait_live(f"http://{http}/live/cam.m3u8")
        return watch(f"http://{http}/watch/cam", seconds)
    finally:
        stop([pub, serve])


def run_nginx(clip, seconds, work):
    """The anchor: nginx-rtmp with 2 s fragments (bench/live.py's config),
    its playlist played by the embedded hls.js from a page nginx serves."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import live as livebench  # the nginx set-up shared with bench/live.py

    livebench.ensure_packages()
    tmp = tempfile.mkdtemp(dir=work)
    for d in ("hls", "seg", "page", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(tmp, d), exist_ok=True)
    http, rtmp = free_port(), free_port()
    conf = livebench.NGINX_CONF.format(module=livebench.rtmp_module_path(), tmp=tmp,
                                       rtmp=rtmp, http=http)
    conf = conf.replace("        location /hls/ {",
                        f"        location /page/ {{ alias {tmp}/page/; }}\n"
                        "        location /hls/ {", 1)
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(conf)
    shutil.copy(os.path.join(ROOT, "vendor/hls.js/hls.min.js"), os.path.join(tmp, "page"))
    with open(os.path.join(tmp, "page", "index.html"), "w") as f:
        f.write(NGINX_PAGE.replace("STREAM", KEY))
    nginx = subprocess.Popen(["nginx", "-p", tmp, "-c", os.path.join(tmp, "nginx.conf")],
                             stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(tmp, "nginx.stderr"), "w"),
                             start_new_session=True)
    pub = None
    try:
        time.sleep(1)
        pub = publish(clip, f"rtmp://127.0.0.1:{rtmp}/live/{KEY}")
        wait_live(f"http://127.0.0.1:{http}/hls/{KEY}.m3u8")
        return watch(f"http://127.0.0.1:{http}/page/index.html", seconds)
    finally:
        stop([pub, nginx])


def run_mirror(binary, clip, seconds, work, badlink):
    """An origin and a mirror following it (in a namespace behind the bad
    link with `badlink`); Chromium on the mirror's /watch page. Returns the
    watch figures and the origin's libp2p bytes sent per media byte."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import p2p as P2P  # the namespace, socket and archive helpers of bench/p2p.py

    link = None
    procs = []
    try:
        prefix = []
        p2p_host = "127.0.0.1"
        if badlink:
            ns = f"mcll{os.getpid()}"
            link = subprocess.Popen([sys.executable, P2P.BADLINK, "--ns", ns, "--subnet", "10.96"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            info = json.loads(link.stdout.readline())
            prefix = ["ip", "netns", "exec", ns]
            p2p_host = info["root_addr"]
        data = tempfile.mkdtemp(dir=work)
        p2p_port, o_http = free_port(), free_port()
        origin = subprocess.Popen(
            [binary, "--data", data, "serve", "--http", f"127.0.0.1:{o_http}",
             "--rtmp", "127.0.0.1:0", "--no-mdns", "--p2p", f"/ip4/{p2p_host}/tcp/{p2p_port}",
             "--stream", f"cam={KEY}"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "log"), "w"),
            start_new_session=True)
        procs.append(origin)
        oinfo = P2P.wait_api([], "127.0.0.1", o_http, origin, "origin")
        rtmp = P2P.rtmp_port_of(data)
        _, body = P2P.http_get("127.0.0.1", o_http, "/api/v1/streams")
        name = next(s["ipns"] for s in json.loads(body)["streams"] if s["name"] == "cam")
        mdata = tempfile.mkdtemp(dir=work)
        m_http = free_port()
        mirror = subprocess.Popen(
            prefix + [binary, "--data", mdata, "serve", "--http", f"127.0.0.1:{m_http}",
                      "--rtmp", "127.0.0.1:0", "--no-mdns", "--p2p", "/ip4/0.0.0.0/tcp/0",
                      "--peer", f"/ip4/{p2p_host}/tcp/{p2p_port}/p2p/{oinfo['peer_id']}",
                      "--follow", name],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(mdata, "log"), "w"),
            start_new_session=True)
        procs.append(mirror)
        P2P.wait_api(prefix, "127.0.0.1", m_http, mirror, "mirror")
        pub = publish(clip, f"rtmp://127.0.0.1:{rtmp}/live/{KEY}")
        procs.append(pub)
        deadline = time.time() + 40
        while True:
            r = subprocess.run(prefix + ["curl", "-sf", f"http://127.0.0.1:{m_http}/live/cam.m3u8"],
                               capture_output=True, text=True)
            if "#EXT-X-PART:" in r.stdout:
                break
            if time.time() > deadline:
                raise RuntimeError("the mirror never listed a part")
            time.sleep(0.2)
        watched = watch(f"http://127.0.0.1:{m_http}/watch/cam", seconds, prefix)
        # The whole clip, then the session's end, then what was sent.
        pub.wait()
        time.sleep(8)
        sent = P2P.sent_bytes(p2p_port)
        media = media_bytes(o_http)
        site = site_static_bytes(o_http, name)
        return watched + ((sent / media, (sent - site) / media) if media else None,)
    finally:
        stop(procs)
        if link is not None:
            link.stdin.close()
            try:
                link.wait(10)
            except subprocess.TimeoutExpired:
                link.kill()


def media_bytes(port):
    """Bytes of every init segment and segment the origin's archive names."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/live/cam/archive.m3u8", timeout=5) as r:
        text = r.read().decode()
    uris = []
    for line in text.splitlines():
        if line.startswith("#EXT-X-MAP:URI=\""):
            uris.append(line.split('"')[1])
        elif line and not line.startswith("#"):
            uris.append(line)
    total = 0
    for uri in dict.fromkeys(uris):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{uri}", timeout=10) as r:
            total += len(r.read())
    return total


def site_static_bytes(port, name):
    """Bytes of the site's files that never change (the player page, its
    scripts and styles): a mirror fetches them once, whatever the length of
    the stream."""
    total = 0
    for f in ("index.html", "player.js", "hls.min.js", "style.css"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ipns/{name}/{f}", timeout=10) as r:
            total += len(r.read())
    return total


def fmt(vals):
    if not vals:
        return f"{'-':>9} {'-':>6} {'-':>6}"
    return f"{statistics.median(vals):9.2f} {min(vals):6.2f} {max(vals):6.2f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/debug/meshcast"))
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--targets", default="200ms,300ms,500ms,0s")
    ap.add_argument("--no-nginx", action="store_true", help="leave out the nginx-rtmp anchor")
    ap.add_argument("--no-mirrors", action="store_true", help="leave out the mirror rows")
    ap.add_argument("--no-badlink", action="store_true",
                    help="leave out the mirror over the bad link (which needs root)")
    args = ap.parse_args()
    for tool in ("ffmpeg", "node"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing; run scripts/test once to install it")
    if not os.path.exists(args.bin):
        sys.exit(f"{args.bin} is missing; cargo build first")
    work = tempfile.mkdtemp(prefix="meshcast-llhls-")
    try:
        clip = os.path.join(work, "clip.flv")
        make_clip(clip, args.seconds + 25)
        rows = []
        for target in args.targets.split(","):
            log(f"part target {target} ...")
            rows.append((f"meshcast {target}",) + run_target(args.bin, clip, target, args.seconds, work)
                        + (None,))
        if not args.no_mirrors:
            log("mirror on loopback ...")
            rows.append(("mirror loopback",) + run_mirror(args.bin, clip, args.seconds, work, False))
            if not args.no_badlink:
                log("mirror over the bad link ...")
                rows.append(("mirror badlink",) + run_mirror(args.bin, clip, args.seconds, work, True))
        if not args.no_nginx:
            log("nginx-rtmp, 2 s fragments ...")
            rows.append(("nginx-rtmp 2s",) + run_nginx(clip, args.seconds, work) + (None,))
        print(f"{'':>16} {'glass-to-glass (s)':>23} {'hls.js latency to edge (s)':>28}")
        print(f"{'row':>16} {'median':>9} {'min':>6} {'max':>6}   {'median':>9} {'min':>6} {'max':>6}"
              f" {'stalls':>6} {'origin B/media B':>16} {'less site files':>15}  errors")
        for name, pdt, edge, stalls, errors, ratio in rows:
            r = (f"{ratio[0]:16.3f} {ratio[1]:15.3f}" if ratio is not None
                 else f"{'-':>16} {'-':>15}")
            print(f"{name:>16} {fmt(pdt)}   {fmt(edge)} {stalls:6d} {r}  {len(errors)}"
                  + (f" {errors[:3]}" if errors else ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
