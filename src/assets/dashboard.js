// The dashboard: one picture of the data flow, redrawn from each snapshot
// the node pushes on /api/v1/events (Server-Sent Events, every 2 s; the
// browser reconnects by itself). Publisher -> segmenter -> store -> IPNS ->
// peers and mirrors -> viewers, then charts of the last minutes, the peers,
// the mesh links and the players' reports.
//
// Everything is written with textContent (API data is never parsed as
// HTML); charts are SVG drawn here, so the page works with no Internet.
// window.meshcastDashboard = { snapshots, last, errors } is for tests.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const state = { snapshots: 0, last: null, errors: [], stream: null };
  window.meshcastDashboard = state;
  const conn = document.getElementById("conn");
  const NONE = "—";

  // Formatting: null and undefined are "—" (not known).
  const known = (v) => v !== null && v !== undefined && !(typeof v === "number" && !isFinite(v));
  function bytes(n) {
    if (!known(n)) return NONE;
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(n < 10 ? 1 : 0) : String(n)) + " " + u[i];
  }
  function bits(n) {
    if (!known(n)) return NONE;
    if (n >= 1e6) return (n / 1e6).toFixed(2) + " Mbit/s";
    if (n >= 1e3) return (n / 1e3).toFixed(0) + " kbit/s";
    return n.toFixed(0) + " bit/s";
  }
  function ms(n) {
    if (!known(n)) return NONE;
    return n >= 10000 ? (n / 1000).toFixed(1) + " s" : Math.round(n) + " ms";
  }
  function secs(n, digits) {
    return known(n) ? n.toFixed(digits === undefined ? 1 : digits) + " s" : NONE;
  }
  function ago(tms, now) {
    if (!known(tms)) return NONE;
    const s = Math.max(0, Math.round((now - tms) / 1000));
    return s < 90 ? s + " s ago" : Math.round(s / 60) + " min ago";
  }
  function duration(s) {
    if (!known(s)) return NONE;
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return h ? h + " h " + m + " min" : m ? m + " min " + (s % 60) + " s" : s + " s";
  }
  const num = (n) => (known(n) ? n.toLocaleString("en") : NONE);
  function short(id, keep) {
    if (!id) return NONE;
    keep = keep || 6;
    return id.length > keep * 2 + 1 ? id.slice(0, keep) + "…" + id.slice(-keep) : id;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // A stage's fields: [label, value, { mono, title, big }]. Values that
  // changed since the last snapshot flash, so motion shows where data moves.
  const previous = new Map();
  function fields(id, rows) {
    const dl = document.querySelector("#" + id + " dl");
    const frag = document.createDocumentFragment();
    for (const [label, value, opts] of rows) {
      const o = opts || {};
      const dt = el("dt", "", label);
      const dd = el("dd", (o.mono ? "mono " : "") + (o.big ? "big " : "") + (value === NONE ? "none" : ""), value);
      if (o.title) dd.title = o.title;
      if (value === NONE) dd.title = o.title || "not known to this node";
      const key = id + "/" + label;
      if (previous.has(key) && previous.get(key) !== value && value !== NONE) dd.classList.add("changed");
      previous.set(key, value);
      frag.append(dt, dd);
    }
    dl.replaceChildren(frag);
  }

  function pickStream(snap) {
    const streams = snap.streams || [];
    const tabs = document.getElementById("streams");
    if (!streams.some((s) => s.name === state.stream)) {
      const live = streams.find((s) => s.live && !s.mirror_of) || streams.find((s) => s.live) || streams[0];
      state.stream = live ? live.name : null;
    }
    tabs.replaceChildren(...streams.map((s) => {
      const b = el("button", "tab" + (s.live ? " live" : ""), s.name);
      b.type = "button";
      b.setAttribute("role", "tab");
      b.setAttribute("aria-selected", String(s.name === state.stream));
      if (s.live) b.append(el("span", "dot", "live"));
      if (s.mirror_of) b.append(el("span", "tag", "mirror"));
      b.addEventListener("click", () => { state.stream = s.name; render(state.last); });
      return b;
    }));
    tabs.hidden = streams.length < 2;
    return streams.find((s) => s.name === state.stream) || null;
  }

  function renderFlow(snap, s) {
    const now = snap.t;
    const ing = (s && s.ingest) || {};
    const mirrored = s && s.mirror_of;
    const res = known(ing.width) && known(ing.height) ? ing.width + "×" + ing.height : NONE;
    if (mirrored) {
      fields("publisher", [
        ["Stream", s.name, { big: true }],
        ["Mirrored from", short(s.mirror_of, 8), { mono: true, title: s.mirror_of }],
        ["State", s.live ? "live at the origin" : "offline"],
      ]);
    } else {
      fields("publisher", [
        ["Stream", s ? s.name : NONE, { big: true }],
        ["From", ing.publisher || (s && s.live ? NONE : "no publisher"), { mono: true }],
        ["Video", ing.video_codec || NONE],
        ["Resolution", res, { title: "as the publisher announced it (onMetaData)" }],
        ["Frame rate", known(ing.fps) ? ing.fps.toFixed(1) + " fps" : NONE],
        ["Bitrate", bits(ing.bitrate_bps), { big: true }],
        ["Keyframes", known(ing.keyframe_interval_s) ? "every " + secs(ing.keyframe_interval_s) : NONE],
        ["Audio", ing.audio_codec || NONE],
      ].concat((s && s.warnings || []).map((w) => ["Advice", "set the keyframe interval to 1-2 s", { title: w }])));
    }
    fields("segmenter", [
      ["Format", s ? (s.format === "ts" ? "MPEG-TS" : "fMP4 (CMAF)") : NONE],
      ["Segments cut", num(ing.segments), { big: true }],
      ["Last", known(ing.last_seq) ? "#" + ing.last_seq + " · " + secs(ing.last_duration_s, 2) : NONE],
      ["Parts", NONE, { title: "LL-HLS parts are counted in /metrics (meshcast_hls_parts_total)" }],
      ["Ready after", ms(ing.lag_ms), { title: "from the segment's last frame to its place in the playlist" }],
      ["Session", s && s.session ? duration(s.session.duration_s) : NONE],
    ]);
    const st = snap.store || {};
    fields("store", [
      ["Latest segment", short(ing.last_segment, 8), { mono: true, title: ing.last_segment || "" }],
      ["Site", short(s && s.site_cid, 8), { mono: true, title: (s && s.site_cid) || "" }],
      ["Blocks", num(st.blocks), { big: true }],
      ["Pins", num(st.pins)],
      ["Disk free", known(st.disk_free) ? bytes(st.disk_free) + " of " + bytes(st.disk_total) : NONE],
    ]);
    const ipns = (s && s.ipns) || {};
    fields("ipns", [
      ["Name", short(ipns.name || (mirrored ? s.mirror_of : null), 8), { mono: true, title: ipns.name || (mirrored ? s.mirror_of : "") }],
      ["Sequence", known(ipns.sequence) ? "#" + ipns.sequence : NONE, { big: true }],
      ["Published", ago(ipns.published_ms, now), { title: "when this node saw the new sequence" }],
      ["Over", snap.node ? "gossipsub + DHT" : NONE],
    ]);
    const peers = snap.peers || [];
    const bs = snap.bitswap || {};
    const mirrors = peers.filter((p) => (p.agent || "").startsWith("meshcast"));
    fields("peers", [
      ["This node", short(snap.node && snap.node.peer_id, 6), { mono: true, title: (snap.node && snap.node.peer_id) || "" }],
      ["Connected", num(peers.length), { big: true }],
      ["meshcast mirrors", num(mirrors.length)],
      ["Bitswap out", bytes(bs.bytes_sent)],
      ["Bitswap in", bytes(bs.bytes_received)],
      ["Out now", bits(snap.rates && snap.rates.bitswap_bps)],
    ]);
    const v = snap.viewers || {};
    fields("viewers", [
      ["Players", num(v.count), { big: true }],
      ["HTTP out now", bits(snap.http && snap.http.bps)],
      ["HTTP out", bytes(snap.http && snap.http.bytes_sent)],
      ["Behind live", known(v.latency_ms_median) ? ms(v.latency_ms_median) + " median" : NONE],
      ["Stalls", v.count ? num(v.stalls) + " (" + ms(v.stall_ms) + ")" : NONE],
      ["Errors", v.count ? num(v.errors) : NONE],
    ]);
  }

  // A line chart of one or more series on shared axes.
  function chart(id, t, series, fmt) {
    const svg = document.getElementById(id);
    // The top band is kept for the label, so it never covers the line.
    const W = 400, H = 120, P = 4, TOP = 22;
    const all = series.flatMap((s) => s.values);
    const max = Math.max(1, ...all);
    const n = t.length;
    const x = (i) => (n < 2 ? W : (i / (n - 1)) * W);
    const y = (v) => H - P - (v / max) * (H - P - TOP);
    const parts = [];
    for (const frac of [0.5, 1]) {
      const g = document.createElementNS(SVG, "line");
      g.setAttribute("x1", "0"); g.setAttribute("x2", String(W));
      g.setAttribute("y1", String(y(max * frac))); g.setAttribute("y2", String(y(max * frac)));
      g.setAttribute("class", "grid");
      parts.push(g);
    }
    for (const s of series) {
      if (!n) continue;
      const pts = s.values.map((v, i) => x(i).toFixed(1) + "," + y(v).toFixed(1));
      const area = document.createElementNS(SVG, "polygon");
      area.setAttribute("points", "0," + H + " " + pts.join(" ") + " " + x(n - 1).toFixed(1) + "," + H);
      area.setAttribute("class", "area " + s.cls);
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", pts.join(" "));
      line.setAttribute("class", "line " + s.cls);
      line.setAttribute("vector-effect", "non-scaling-stroke");
      parts.push(area, line);
    }
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", "4"); label.setAttribute("y", "14");
    label.setAttribute("class", "axis");
    label.textContent = "max " + fmt(max) + " · " + Math.round((n * 2) / 60) + " min";
    parts.push(label);
    svg.replaceChildren(...parts);
  }

  function renderCharts(snap) {
    const h = snap.history || { t: [] };
    const last = (a) => (a && a.length ? a[a.length - 1] : null);
    chart("c-ingest", h.t, [{ values: h.ingest_bps || [], cls: "ingest" }], bits);
    document.getElementById("c-ingest-now").textContent = bits(last(h.ingest_bps));
    chart("c-viewers", h.t, [{ values: h.viewers || [], cls: "viewers" }], (v) => String(Math.round(v)));
    document.getElementById("c-viewers-now").textContent = num(last(h.viewers));
    chart("c-out", h.t, [
      { values: h.http_bps || [], cls: "http" },
      { values: h.bitswap_bps || [], cls: "bitswap" },
    ], bits);
    document.getElementById("c-out-now").textContent = "HTTP " + bits(last(h.http_bps)) + " · Bitswap " + bits(last(h.bitswap_bps));
  }

  function rows(tableId, items, cells, empty) {
    const body = document.querySelector("#" + tableId + " tbody");
    if (!items.length) {
      const tr = el("tr", "empty");
      const td = el("td", "", empty);
      td.colSpan = document.querySelectorAll("#" + tableId + " thead th").length;
      tr.append(td);
      body.replaceChildren(tr);
      return;
    }
    body.replaceChildren(...items.map((it) => {
      const tr = el("tr");
      for (const c of cells(it)) {
        const [text, cls, title] = Array.isArray(c) ? c : [c];
        const td = el("td", (cls || "") + (text === NONE ? " none" : ""), text);
        if (title) td.title = title;
        tr.append(td);
      }
      return tr;
    }));
  }

  function renderTables(snap) {
    const mesh = snap.mesh || {};
    const links = mesh.links || [];
    const peers = snap.peers || [];
    // Which mesh link a peer sits behind: by the link's remote or address.
    const peerIds = (l) => (l.peers || []).map((b) => b.peer_id || b);
    const behind = (p) => links.find((l) => peerIds(l).includes(p.peer_id));
    rows("t-peers", peers, (p) => {
      const link = behind(p);
      const path = (p.transport || []).join(", ") + (link ? " via " + link.kind : "");
      const fetched = (p.fetched || []).map((f) => f.label || short(f.cid, 5));
      return [
        [short(p.peer_id, 6), "mono", p.peer_id],
        [p.agent || NONE],
        [path || NONE, "path", (p.addrs || []).join("\n")],
        [ms(p.rtt_ms)],
        [bytes(p.bytes_sent)],
        [bytes(p.bytes_received)],
        [fetched.length ? fetched.slice(0, 4).join(", ") : NONE, "mono small", fetched.join("\n")],
      ];
    }, "No peer connected.");
    // This node's own address on each mesh, as its daemons say.
    const me = mesh.self || {};
    const own = [["Yggdrasil", me.yggdrasil], ["cjdns", me.cjdns]]
      .filter(([, m]) => m && m.address)
      .map(([name, m]) => name + " " + m.address);
    document.getElementById("mesh-self").textContent = own.length
      ? "This node: " + own.join(" · ")
      : "This node is on no mesh a daemon here reports.";
    rows("t-mesh", links, (l) => [
      [l.kind || NONE, "kind " + (l.kind || "")],
      [l.address || NONE, "mono", l.address],
      [l.remote || NONE, "mono", l.remote],
      [l.state || NONE],
      [bytes(l.bytes_in)],
      [bytes(l.bytes_out)],
      [known(l.rate_in) || known(l.rate_out) ? bytes(l.rate_in) + "/s · " + bytes(l.rate_out) + "/s" : NONE],
      [ms(l.latency_ms)],
      [known(l.loss) ? (l.loss * 100).toFixed(1) + " %" : NONE],
      [duration(l.uptime_s)],
      [peerIds(l).length ? peerIds(l).map((p) => short(p, 5)).join(", ") : NONE, "mono", peerIds(l).join("\n")],
    ], mesh.error ? String(mesh.error) : "No mesh daemon (Yggdrasil, cjdns) reported a link.");
    const v = snap.viewers || {};
    rows("t-viewers", v.viewers || [], (p) => [
      [p.id, "mono"],
      [p.stream || NONE],
      [ms(p.latency_ms)],
      [num(p.stalls)],
      [num(p.errors)],
      [p.age_s + " s ago"],
    ], "No player has reported in the last 30 s.");
  }

  function render(snap) {
    if (!snap) return;
    const s = pickStream(snap);
    renderFlow(snap, s);
    renderCharts(snap);
    renderTables(snap);
    document.getElementById("flow").classList.toggle("is-live", !!(s && s.live));
  }

  function connect() {
    const es = new EventSource("/api/v1/events");
    es.addEventListener("snapshot", (e) => {
      try {
        const snap = JSON.parse(e.data);
        if (!snap.t) return;
        state.snapshots++;
        state.last = snap;
        render(snap);
        conn.textContent = "live · " + new Date(snap.t).toLocaleTimeString();
        conn.className = "conn ok";
      } catch (err) {
        state.errors.push(String(err));
      }
    });
    es.addEventListener("error", () => {
      conn.textContent = "reconnecting…";
      conn.className = "conn lost";
    });
  }

  connect();
})();
