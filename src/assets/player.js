// The player page: /watch/{name} on a meshcast node, and index.html of a
// stream's site (the directory its IPNS name points to), which works on any
// path gateway: there everything is relative to the page, and stream.json
// says whether the stream is live.
//
// What it plays, from the query string:
//   (nothing)          the live playlist /live/{name}.m3u8, near the live edge
//   src=URL            that playlist (an archive: /ipfs/<cid> or a URL), from the start
//   session=ID         that session's archive, looked up in /api/v1/streams
//   from=SECONDS       start at that position (a shared moment)
// hls.js feeds Media Source Extensions; browsers without them (iPhone
// Safari) play HLS natively.
// On /watch/{name} with nothing else, the stream's state comes from
// /api/v1/streams, asked every few seconds: while it is offline the page
// says so and offers its last session to replay, and the live stream starts
// by itself when it goes live (again).
// window.meshcastPlayer = { video, hls, errors, src, live, offline } is for
// tests.
"use strict";

(function () {
  const site = document.body.dataset.page === "site";
  let name = document.body.dataset.name;
  const params = new URLSearchParams(location.search);
  const video = document.getElementById("video");
  const statusEl = document.getElementById("status");
  const shareButton = document.getElementById("share");
  const shareLink = document.getElementById("share-link");
  const offlineEl = document.getElementById("offline");
  const replayLink = document.getElementById("replay");
  const player = { video: video, hls: null, errors: [], src: null, live: false, offline: false };
  // How often an offline stream (or a live one, to notice its end) is asked
  // after.
  const STATE_POLL_MS = 3000;
  window.meshcastPlayer = player;

  function setStatus(text, isError) {
    statusEl.textContent = text;
    statusEl.className = isError ? "error" : "";
  }

  function fail(text) {
    player.errors.push(text);
    setStatus("Error: " + text, true);
  }

  function from() {
    const f = Number(params.get("from"));
    return params.has("from") && isFinite(f) && f >= 0 ? f : null;
  }

  // This stream as /api/v1/streams lists it.
  async function streamInfo() {
    const resp = await fetch("/api/v1/streams", { cache: "no-store" });
    if (!resp.ok) throw new Error("the stream API answered HTTP " + resp.status);
    const body = await resp.json();
    const stream = (body.streams || []).find((s) => s.name === name);
    if (!stream) throw new Error("no stream named " + name);
    return stream;
  }

  async function findSession(id) {
    const stream = await streamInfo();
    const session = (stream.sessions || []).find((s) => s.id === id);
    if (!session) throw new Error("stream " + name + " has no session " + id);
    return { stream: stream, session: session };
  }

  // A site's stream.json: { name, live, session, started, archive_cid }.
  async function siteDoc() {
    const resp = await fetch(new URL("stream.json", location.href), { cache: "no-store" });
    if (!resp.ok) throw new Error("stream.json answered HTTP " + resp.status);
    return resp.json();
  }

  // What to play: { src, live, session? }.
  async function resolveSource() {
    if (site) {
      const doc = await siteDoc();
      name = doc.name;
      document.getElementById("name").textContent = doc.name;
      document.title = doc.name + " · meshcast";
      if (params.has("src")) return { src: new URL(params.get("src"), location.href).href, live: false };
      const file = doc.live ? "live.m3u8" : "archive.m3u8";
      return { src: new URL(file, location.href).href, live: doc.live };
    }
    if (params.has("src")) {
      const url = new URL(params.get("src"), location.origin);
      if (url.protocol !== "http:" && url.protocol !== "https:") {
        throw new Error("src must be an http(s) URL or a path");
      }
      return { src: url.href, live: false };
    }
    if (params.has("session")) {
      const found = await findSession(params.get("session"));
      const s = found.session;
      const src = s.archive_cid ? "/ipfs/" + encodeURIComponent(s.archive_cid) : found.stream.archive_playlist;
      if (!src) throw new Error("session " + s.id + " has no archive");
      return { src: new URL(src, location.origin).href, live: false, session: s };
    }
    return { src: new URL("/live/" + encodeURIComponent(name) + ".m3u8", location.origin).href, live: true };
  }

  // The archive URL and position of what is on screen now, for sharing.
  async function moment() {
    let pos = Math.floor(video.currentTime);
    if (site) {
      // The archive under the name changes with every session: share the
      // CID of this session's archive.
      const doc = await siteDoc();
      if (!player.live) return { src: params.get("src") || "/ipfs/" + doc.archive_cid, pos: pos };
      return { src: "/ipfs/" + doc.archive_cid, pos: livePosition(pos, doc.started) };
    }
    if (!player.live) return { src: params.get("src") || new URL(player.src).pathname, pos: pos };
    // Live: the same moment in the session's archive, placed by wall-clock
    // time when the playlist carries EXT-X-PROGRAM-DATE-TIME.
    const resp = await fetch("/api/v1/streams", { cache: "no-store" });
    if (!resp.ok) throw new Error("the stream API answered HTTP " + resp.status);
    const stream = ((await resp.json()).streams || []).find((s) => s.name === name);
    if (!stream) throw new Error("no stream named " + name);
    const sessions = stream.sessions || [];
    const current = sessions.find((s) => !s.ended) || sessions[sessions.length - 1];
    const src = current && current.archive_cid ? "/ipfs/" + current.archive_cid : stream.archive_playlist;
    if (!src) throw new Error("this stream has no archive to share");
    return { src: src, pos: livePosition(pos, current && current.started) };
  }

  // The position in the session's archive of what plays now, placed by
  // wall-clock time when the playlist carries EXT-X-PROGRAM-DATE-TIME.
  function livePosition(pos, started) {
    let playing = player.hls ? player.hls.playingDate : null;
    if (!playing && video.getStartDate) {
      const start = video.getStartDate();
      if (start && !isNaN(start.getTime())) playing = new Date(start.getTime() + video.currentTime * 1000);
    }
    if (playing && started) {
      const offset = (playing.getTime() - new Date(started).getTime()) / 1000;
      if (isFinite(offset) && offset >= 0) return Math.floor(offset);
    }
    return pos;
  }

  shareButton.addEventListener("click", async () => {
    try {
      const m = await moment();
      const q = new URLSearchParams({ src: m.src, from: String(m.pos) });
      const page = site ? location.origin + location.pathname : location.origin + "/watch/" + encodeURIComponent(name);
      const url = page + "?" + q.toString();
      shareLink.href = url;
      shareLink.textContent = url;
      shareLink.hidden = false;
      if (navigator.clipboard) navigator.clipboard.writeText(url).catch(() => {});
    } catch (e) {
      setStatus("Cannot share this moment: " + e.message, true);
    }
  });

  function watchVideo() {
    video.addEventListener("playing", () => {
      shareButton.disabled = false;
      setStatus(player.live ? "Live" : "Playing archive");
    });
    video.addEventListener("waiting", () => setStatus("Buffering…"));
    video.addEventListener("pause", () => { if (!video.ended) setStatus("Paused"); });
    video.addEventListener("ended", () => setStatus(player.live ? "The stream ended" : "Ended"));
    video.addEventListener("error", () => {
      const e = video.error;
      fail("video element: " + (e ? "code " + e.code + (e.message ? " " + e.message : "") : "unknown error"));
    });
  }

  function autoplay() {
    const p = video.play();
    if (p && p.catch) p.catch(() => setStatus("Press play to start"));
  }

  function playNative(src, start) {
    document.getElementById("engine").textContent = "native HLS";
    if (start !== null) {
      video.addEventListener("loadedmetadata", () => { video.currentTime = start; }, { once: true });
    }
    video.src = src;
    autoplay();
  }

  // Live: hls.js's low-latency mode, which for an LL-HLS playlist (one
  // with parts) holds back its PART-HOLD-BACK, loads parts and blocks on
  // reloads; up to 1.5x speed catches up when it falls behind the edge.
  // No liveSyncDuration here: one set by the user overrides PART-HOLD-BACK.
  function lowLatencyConfig(start) {
    return {
      lowLatencyMode: true,
      maxLiveSyncPlaybackRate: 1.5,
      startPosition: start !== null ? start : -1,
    };
  }

  // A live playlist without parts (MPEG-TS streams, part_target "0s"):
  // hold back ~6 s (three 2 s segments) and catch up past 14 s.
  // In seconds, not in target durations: meshcast's target duration is
  // the fixed upper bound on segment length (HLS forbids changing it), so
  // counting in it would sit three times further behind the edge. hls.js
  // reads these at every latency check, so they can be set once the
  // playlist shows it has no parts.
  function keepPlainLiveNearEdge(hls) {
    hls.on(window.Hls.Events.LEVEL_LOADED, (_event, data) => {
      if (data.details && data.details.partTarget) return;
      hls.config.liveSyncDuration = hls.userConfig.liveSyncDuration = 6;
      hls.config.liveMaxLatencyDuration = hls.userConfig.liveMaxLatencyDuration = 14;
    });
  }

  function playHls(src, start, live) {
    document.getElementById("engine").textContent = "hls.js " + window.Hls.version;
    // Live: see lowLatencyConfig. Archive: from the start, or from the shared moment, and never pulled
    // to the edge: the archive of a session still live has no ENDLIST yet,
    // so hls.js sees a live playlist, and a latency limit would make it
    // jump there.
    const hls = new window.Hls(live ? lowLatencyConfig(start) : {
      startPosition: start !== null ? start : 0,
    });
    player.hls = hls;
    if (live) keepPlainLiveNearEdge(hls);
    let recovered = false;
    hls.on(window.Hls.Events.ERROR, (_event, data) => {
      if (!data.fatal) return;
      const what = data.type + ": " + data.details + (data.response && data.response.code ? " (HTTP " + data.response.code + ")" : "");
      // A live playlist that is not there means the stream is offline.
      if (live && data.details === window.Hls.ErrorDetails.MANIFEST_LOAD_ERROR) {
        fail("the stream is offline (" + what + ")");
      } else if (data.type === window.Hls.ErrorTypes.MEDIA_ERROR && !recovered) {
        recovered = true;
        fail(what + "; trying to recover");
        hls.recoverMediaError();
        return;
      } else {
        fail(what);
      }
      hls.destroy();
    });
    hls.on(window.Hls.Events.MANIFEST_PARSED, autoplay);
    hls.loadSource(src);
    hls.attachMedia(video);
  }

  function stopPlayback() {
    if (player.hls) {
      player.hls.destroy();
      player.hls = null;
    }
    video.removeAttribute("src");
    video.load();
  }

  // Offline: say so, with the newest session to replay.
  function showOffline(stream) {
    player.offline = true;
    shareButton.disabled = true;
    const sessions = stream.sessions || [];
    const last = sessions[sessions.length - 1];
    if (last) {
      replayLink.href = "/watch/" + encodeURIComponent(name) + "?session=" + encodeURIComponent(last.id);
      replayLink.textContent = "Replay the last session (" + last.started + ")";
      replayLink.hidden = false;
    } else {
      replayLink.hidden = true;
    }
    offlineEl.hidden = false;
    setStatus("Offline: this stream is not live now. It starts here when it goes live.");
  }

  // Live, with its session's first segment out: until then the live
  // playlist is still the last session's.
  function isLive(stream) {
    const sessions = stream.sessions || [];
    const last = sessions[sessions.length - 1];
    return !!stream.live && !!last && !last.ended;
  }

  // The live stream while it is live; offline in between.
  async function followLive(start, playIt) {
    let playing = false;
    for (;;) {
      let stream = null;
      try {
        stream = await streamInfo();
      } catch (e) {
        // No answer: play the live playlist if nothing plays yet (as on a
        // node without the stream API), else keep what plays.
        if (!playing && !player.offline) {
          playing = true;
          playIt(start);
        }
      }
      const live = stream && isLive(stream);
      if (live && !playing) {
        playing = true;
        player.offline = false;
        offlineEl.hidden = true;
        setStatus("Connecting to the live stream…");
        playIt(start);
      } else if (stream && !live && (playing || !player.offline)) {
        playing = false;
        stopPlayback();
        showOffline(stream);
      }
      await new Promise((resolve) => setTimeout(resolve, STATE_POLL_MS));
    }
  }

  async function main() {
    document.getElementById("origin").textContent = location.origin;
    watchVideo();
    let source;
    try {
      source = await resolveSource();
    } catch (e) {
      fail(e.message);
      return;
    }
    player.src = source.src;
    player.live = source.live;
    document.getElementById("playlist").textContent = source.src;
    setStatus(source.live ? "Connecting to the live stream…" : "Loading the archive…");
    const start = from();
    // hls.js wherever Media Source Extensions work, so live-edge and start
    // position behave the same in every browser (Chromium now also answers
    // canPlayType for HLS); native HLS where they do not (iPhone Safari).
    // ?engine=native or ?engine=hls forces one.
    const engine = params.get("engine");
    const hlsOk = window.Hls && window.Hls.isSupported();
    const nativeOk = video.canPlayType("application/vnd.apple.mpegurl") !== "";
    let playIt;
    if (engine === "native" ? nativeOk : hlsOk && engine !== "native") {
      playIt = engine === "native" ? (at) => playNative(source.src, at) : (at) => playHls(source.src, at, source.live);
    } else if (nativeOk && engine !== "hls") {
      playIt = (at) => playNative(source.src, at);
    } else {
      fail(engine ? "this browser cannot play HLS with engine " + engine
        : "this browser plays neither HLS nor Media Source Extensions");
      return;
    }
    if (source.live && !site) followLive(start, playIt);
    else playIt(start);
  }

  // Viewer report, every 10 s on the node's watch page (a site may sit on
  // any gateway, which has no report endpoint): how far behind the wall
  // clock this player plays (EXT-X-PROGRAM-DATE-TIME), its stalls and
  // errors, and the bytes it loaded from this node or elsewhere (Resource
  // Timing). The node's dashboard aggregates them.
  function reportViewer() {
    const REPORT_MS = 10000;
    const rnd = new Uint8Array(8);
    crypto.getRandomValues(rnd);
    const id = Array.from(rnd, (b) => b.toString(16).padStart(2, "0")).join("");
    const r = { stalls: 0, stall_ms: 0, bytes_local: 0, bytes_remote: 0 };
    let stalledAt = null;
    video.addEventListener("waiting", () => {
      if (!video.seeking && video.currentTime > 0 && stalledAt === null) {
        r.stalls++;
        stalledAt = performance.now();
      }
    });
    video.addEventListener("playing", () => {
      if (stalledAt !== null) r.stall_ms += Math.round(performance.now() - stalledAt);
      stalledAt = null;
    });
    const media = /\.(m3u8|m4s|mp4|ts)(\?|$)|[?&]filename=/;
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        if (!media.test(e.name)) continue;
        const n = e.encodedBodySize || e.transferSize || 0;
        if (new URL(e.name).origin === location.origin) r.bytes_local += n;
        else r.bytes_remote += n;
      }
    }).observe({ type: "resource", buffered: true });
    function latency() {
      let playing = player.hls ? player.hls.playingDate : null;
      if (!playing && video.getStartDate) {
        const start = video.getStartDate();
        if (start && !isNaN(start.getTime())) playing = new Date(start.getTime() + video.currentTime * 1000);
      }
      return player.live && playing && !video.paused ? Date.now() - playing.getTime() : null;
    }
    // A node without the endpoint (dashboard off: 404, or gone: 410) is
    // not asked again; a busy one (429, 503) is, at the next report.
    const timer = setInterval(() => {
      if (document.hidden || video.paused) return;
      const body = Object.assign({ id: id, stream: name || null, latency_ms: latency(), errors: player.errors.length }, r);
      if (stalledAt !== null) body.stall_ms += Math.round(performance.now() - stalledAt);
      fetch("/api/v1/viewers", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), keepalive: true })
        .then((resp) => {
          if (resp.status === 404 || resp.status === 405 || resp.status === 410) clearInterval(timer);
        })
        .catch(() => {});
    }, REPORT_MS);
  }

  main();
  if (!site && window.PerformanceObserver && window.crypto) reportViewer();
})();
