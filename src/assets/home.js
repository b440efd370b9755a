// The home page: lists live streams and their sessions from
// GET /api/v1/streams. Every value from the API is written with textContent
// or as a URL attribute built here, never parsed as HTML.
"use strict";

(function () {
  const status = document.getElementById("status");
  const list = document.getElementById("streams");

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  function link(href, text) {
    const a = el("a", text);
    a.href = href;
    return a;
  }

  function watchUrl(name, params) {
    const q = new URLSearchParams(params || {}).toString();
    return "/watch/" + encodeURIComponent(name) + (q ? "?" + q : "");
  }

  function duration(s) {
    if (typeof s !== "number" || !isFinite(s)) return "";
    s = Math.floor(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(sec).padStart(2, "0");
    return (h ? h + ":" : "") + mm + ":" + ss;
  }

  function started(iso) {
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleString();
  }

  function sessionRow(stream, s) {
    const tr = document.createElement("tr");
    tr.append(el("td", started(s.started)), el("td", duration(s.duration_s)),
      el("td", s.ended ? "ended" : "live"));
    const td = el("td");
    // An ended session with an archive CID plays from IPFS; otherwise the
    // server's archive playlist for the session.
    if (s.archive_cid) {
      td.append(link(watchUrl(stream.name, { src: "/ipfs/" + s.archive_cid }), "Replay"));
      // The whole CID stays selectable and in the tooltip, shortened on
      // screen so that a phone shows it on one line.
      const cid = el("span", s.archive_cid, "mono cid");
      cid.title = s.archive_cid;
      td.append(" ", cid);
    } else {
      td.append(link(watchUrl(stream.name, { session: s.id }), s.ended ? "Replay" : "Watch from start"));
    }
    tr.append(td);
    return tr;
  }

  function streamSection(stream) {
    const sec = el("section", undefined, "stream");
    const h = el("h3", stream.name);
    h.append(el("span", stream.live ? "live" : "offline", "badge " + (stream.live ? "live" : "offline")));
    sec.append(h);
    if (stream.live) {
      const p = el("p");
      p.append(link(watchUrl(stream.name), "Watch live"));
      sec.append(p);
    }
    // What the publisher should change (a long keyframe interval, say).
    const warnings = Array.isArray(stream.warnings) ? stream.warnings : [];
    for (const w of warnings) sec.append(el("p", String(w), "warning"));
    const sessions = Array.isArray(stream.sessions) ? stream.sessions : [];
    if (sessions.length === 0) {
      sec.append(el("p", "No sessions yet."));
    } else {
      const table = el("table");
      const head = document.createElement("tr");
      for (const t of ["Started", "Duration", "State", ""]) head.append(el("th", t));
      table.append(head);
      // Newest first: the API lists them oldest first.
      for (const s of sessions.slice().reverse()) table.append(sessionRow(stream, s));
      sec.append(table);
    }
    return sec;
  }

  async function load() {
    try {
      const resp = await fetch("/api/v1/streams", { cache: "no-store" });
      if (!resp.ok) throw new Error("the stream API answered HTTP " + resp.status);
      const body = await resp.json();
      const streams = Array.isArray(body.streams) ? body.streams : [];
      list.replaceChildren(...streams.map(streamSection));
      status.textContent = streams.length ? "" : "No streams configured.";
      status.className = "";
    } catch (e) {
      status.textContent = "Could not load streams: " + e.message;
      status.className = "error";
    }
  }

  load();
  // Streams go live and end: refresh now and then.
  setInterval(load, 10000);
})();
