// Plays a meshcast player page in headless Chromium and checks that video
// advances: the browser end of the playback tests.
//
//   node play.mjs URL [--min-advance SECONDS] [--timeout SECONDS]
//
// Opens URL (a /watch/... page) with a fresh profile, mutes and plays the
// page's video, and waits until video.currentTime has advanced by at least
// --min-advance seconds (default 5) past where playback started, with no
// entry in window.meshcastPlayer.errors and no video.error. Prints a JSON
// summary on stdout either way: {ok, start, end, advanced, errors, ...};
// `start` is the first currentTime once the video had data to show.
// Exits 0 on success, 1 with the reason otherwise.
//
// Chromium is Debian's /usr/bin/chromium (CHROMIUM overrides), driven
// through playwright-core; no browser is downloaded.
import { launch } from "./chromium.mjs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

function parseArgs(argv) {
  const opts = { url: null, minAdvance: 5, timeout: 40 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = () => {
      const v = Number(argv[++i]);
      if (!isFinite(v) || v < 0) usage(`${a} needs a non-negative number`);
      return v;
    };
    if (a === "--min-advance") opts.minAdvance = num();
    else if (a === "--timeout") opts.timeout = num();
    else if (a.startsWith("--")) usage(`unknown option ${a}`);
    else if (opts.url === null) opts.url = a;
    else usage(`unexpected argument ${a}`);
  }
  if (!opts.url) usage("missing URL");
  return opts;
}

function usage(msg) {
  console.error(`play.mjs: ${msg}\nusage: node play.mjs URL [--min-advance SECONDS] [--timeout SECONDS]`);
  process.exit(2);
}

const opts = parseArgs(process.argv.slice(2));
const summary = { ok: false, url: opts.url, start: null, end: null, advanced: 0, errors: [], console: [] };
const deadline = Date.now() + opts.timeout * 1000;
const profile = await mkdtemp(join(tmpdir(), "meshcast-chromium-"));
let context;

function finish(ok, reason) {
  summary.ok = ok;
  if (reason) summary.reason = reason;
  console.log(JSON.stringify(summary));
  if (!ok) console.error(`play.mjs: ${reason}`);
  return ok ? 0 : 1;
}

async function run() {
  context = await launch(profile);
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") summary.console.push(`${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => summary.errors.push(`page error: ${e.message}`));
  const resp = await page.goto(opts.url, { waitUntil: "load", timeout: Math.max(1000, deadline - Date.now()) });
  if (!resp || !resp.ok()) return finish(false, `GET ${opts.url}: HTTP ${resp ? resp.status() : "no response"}`);
  await page.waitForFunction(() => window.meshcastPlayer && window.meshcastPlayer.video,
    null, { timeout: Math.max(1000, deadline - Date.now()) });
  summary.engine = await page.evaluate(() => (window.meshcastPlayer.hls ? "hls.js" : "native"));
  await page.evaluate(() => {
    const v = window.meshcastPlayer.video;
    v.muted = true;
    const p = v.play();
    if (p && p.catch) p.catch(() => {}); // retried below until it plays
  });
  while (Date.now() < deadline) {
    const s = await page.evaluate(() => {
      const p = window.meshcastPlayer, v = p.video;
      if (v.paused && v.readyState >= 2 && !v.ended) v.play().catch(() => {});
      return {
        t: v.currentTime, ready: v.readyState, ended: v.ended,
        errors: p.errors.slice(),
        videoError: v.error ? `video.error code ${v.error.code} ${v.error.message || ""}`.trim() : null,
        status: (document.getElementById("status") || {}).textContent || "",
      };
    });
    summary.status = s.status;
    summary.errors.push(...s.errors.filter((e) => !summary.errors.includes(e)));
    if (s.videoError && !summary.errors.includes(s.videoError)) summary.errors.push(s.videoError);
    if (summary.errors.length) return finish(false, `player errors: ${summary.errors.join("; ")}`);
    // HAVE_CURRENT_DATA: the position is where the media really starts.
    if (summary.start === null && s.ready >= 2) summary.start = s.t;
    if (summary.start !== null) {
      summary.end = s.t;
      summary.advanced = s.t - summary.start;
      if (summary.advanced >= opts.minAdvance) return finish(true);
      if (s.ended) return finish(false, `the video ended after advancing ${summary.advanced.toFixed(2)} s`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return finish(false, summary.start === null
    ? `no video data within ${opts.timeout} s (status: ${summary.status})`
    : `currentTime advanced ${summary.advanced.toFixed(2)} s of ${opts.minAdvance} within ${opts.timeout} s`);
}

let code;
try {
  code = await run();
} catch (e) {
  code = finish(false, `${e.name}: ${e.message}`);
} finally {
  if (context) await context.close().catch(() => {});
  await rm(profile, { recursive: true, force: true }).catch(() => {});
}
process.exit(code);
