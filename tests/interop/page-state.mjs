// Watches a meshcast player page in headless Chromium and reports what it
// shows over time: the browser end of the tests of the player's states
// (offline, live again, an archive replayed from its start).
//
//   node page-state.mjs URL [--seconds SECONDS] [--viewport WxH] [--eval EXPR]
//                           [--screenshot FILE]
//
// Opens URL with a fresh profile and, every 500 ms for --seconds (default
// 10), records the page's video position and window.meshcastPlayer's state
// with the status line and the replay link. Prints one JSON object on
// stdout: {samples: [{t, time, duration, paused, live, offline, status,
// replay, value}], errors, page_errors}; `t` is seconds since the page
// loaded, `value` what EXPR (a JavaScript expression) gave, as JSON.
// --viewport sets the page size (e.g. a phone's 390x844); --screenshot
// saves the page as it looked at the end.
// Exits 0 once the page loaded (the caller judges the samples), 1 otherwise.
//
// Chromium is Debian's /usr/bin/chromium (CHROMIUM overrides), driven
// through playwright-core; no browser is downloaded.
import { launch } from "./chromium.mjs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

function usage(msg) {
  console.error(`page-state.mjs: ${msg}\nusage: node page-state.mjs URL [--seconds SECONDS] [--viewport WxH] [--eval EXPR] [--screenshot FILE]`);
  process.exit(2);
}

const args = process.argv.slice(2);
let url = null;
let seconds = 10;
let viewport = null;
let expr = null;
let screenshot = null;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--seconds") {
    seconds = Number(args[++i]);
    if (!isFinite(seconds) || seconds <= 0) usage("--seconds needs a positive number");
  } else if (args[i] === "--viewport") {
    const m = /^(\d+)x(\d+)$/.exec(args[++i] || "");
    if (!m) usage("--viewport needs WIDTHxHEIGHT");
    viewport = { width: Number(m[1]), height: Number(m[2]) };
  } else if (args[i] === "--eval") {
    expr = args[++i];
    if (!expr) usage("--eval needs an expression");
  } else if (args[i] === "--screenshot") {
    screenshot = args[++i];
    if (!screenshot) usage("--screenshot needs a file");
  } else if (args[i].startsWith("--")) usage(`unknown option ${args[i]}`);
  else if (url === null) url = args[i];
  else usage(`unexpected argument ${args[i]}`);
}
if (!url) usage("missing URL");

const profile = await mkdtemp(join(tmpdir(), "meshcast-chromium-"));
const report = { url, samples: [], errors: [], page_errors: [] };
let context;
let code = 0;
try {
  context = await launch(profile, viewport ? { viewport } : {});
  const page = context.pages()[0] || (await context.newPage());
  page.on("pageerror", (e) => report.page_errors.push(e.message));
  const resp = await page.goto(url, { waitUntil: "load", timeout: 30000 });
  if (!resp || !resp.ok()) throw new Error(`GET ${url}: HTTP ${resp ? resp.status() : "no response"}`);
  const loaded = Date.now();
  while (Date.now() - loaded < seconds * 1000) {
    const s = await page.evaluate(() => {
      const p = window.meshcastPlayer;
      const replay = document.getElementById("replay");
      return {
        time: p ? p.video.currentTime : null,
        duration: p && isFinite(p.video.duration) ? p.video.duration : null,
        paused: p ? p.video.paused : null,
        live: p ? p.live : null,
        offline: p ? !!p.offline : null,
        status: (document.getElementById("status") || {}).textContent || "",
        replay: replay && !replay.hidden ? replay.getAttribute("href") : null,
        errors: p ? p.errors.slice() : [],
      };
    });
    // Evaluated by the browser's debugger, so the page's CSP (no eval)
    // does not stand in the way.
    s.value = expr ? await page.evaluate(expr) : null;
    s.t = (Date.now() - loaded) / 1000;
    report.errors = s.errors;
    delete s.errors;
    report.samples.push(s);
    await new Promise((r) => setTimeout(r, 500));
  }
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
} catch (e) {
  report.failure = String(e && e.message ? e.message : e);
  console.error(`page-state.mjs: ${report.failure}`);
  code = 1;
} finally {
  if (context) await context.close().catch(() => {});
  await rm(profile, { recursive: true, force: true }).catch(() => {});
}
console.log(JSON.stringify(report));
process.exit(code);
