// Headless Chromium as the browser tests run it: Debian's /usr/bin/chromium
// (CHROMIUM overrides) through playwright-core, no browser downloaded, a
// fresh profile, and autoplay allowed so a muted video starts by itself.
import { chromium } from "playwright-core";

// A persistent context on `profile` (a directory); `options` are added to
// playwright's launch options (e.g. a viewport).
export function launch(profile, options = {}) {
  return chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--autoplay-policy=no-user-gesture-required",
    ],
    timeout: 30000,
    ...options,
  });
}
