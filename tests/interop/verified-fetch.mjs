#!/usr/bin/env node
// @helia/verified-fetch fetching one CID from meshcast, as a web app would,
// for the meshcast tests. It checks every block against its CID; the bytes
// it returns are written to --out.
//
// Usage: node verified-fetch.mjs --setup SETUP --url MESHCAST --cid CID --out PATH
//
// SETUP is how verified-fetch is configured:
//   http-both    an HTTP-only Helia (no libp2p) with MESHCAST as its
//                delegated router and its trustless gateway
//   http-router  an HTTP-only Helia with MESHCAST as its delegated router
//                only, no gateway configured: the gateway to fetch from must
//                come from the router's provider records
//   default      createVerifiedFetch as its README shows it, with MESHCAST
//                as gateway and router, over its default libp2p node (whose
//                public bootstrap list is dropped, so nothing leaves the
//                machine: the node is left without peers)
//
// Prints one JSON line: {"ok": true, "status": N, "bytes": N, "http":
// [MULTIADDR...], "http_blocks": N, "bitswap": N}: the gateways blocks came
// from over HTTP, how many came that way and how many by Bitswap; or
// {"ok": false, "error": TEXT}.
import { writeFile } from "node:fs/promises";
import { createVerifiedFetch } from "@helia/verified-fetch";
import { withHTTP } from "@helia/http";
import { createHeliaLight } from "helia";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) {
  args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
}
const { setup, url, cid, out } = args;

const http = new Set();
let httpBlocks = 0;
let bitswap = 0;
function onProgress(evt) {
  // The gateway's address, without the request path Helia appends.
  if (evt.type === "helia:block-broker:connected") {
    http.add(String(evt.detail.address).split("/http-path/")[0]);
  }
  if (evt.type === "helia:block-broker:receive-block") httpBlocks++;
  if (evt.type === "bitswap:block") bitswap++;
}

async function make() {
  // meshcast on loopback over plain HTTP: both must be allowed explicitly.
  const local = { allowInsecure: true, allowLocal: true };
  switch (setup) {
    case "http-both":
    case "http-router": {
      const helia = await withHTTP(createHeliaLight({}), {
        delegatedRouters: [url],
        recursiveGateways: setup === "http-both" ? [url] : [],
        ...local,
      }).start();
      return createVerifiedFetch(helia);
    }
    case "default":
      return createVerifiedFetch({
        gateways: [url],
        routers: [url],
        ...local,
        libp2pConfig: { peerDiscovery: [] },
      });
    default:
      throw new Error(`unknown setup ${setup}`);
  }
}

try {
  const fetch = await make();
  const res = await fetch(`ipfs://${cid}`, { onProgress });
  const body = new Uint8Array(await res.arrayBuffer());
  await writeFile(out, body);
  console.log(JSON.stringify({ ok: true, status: res.status, bytes: body.length, http: [...http], http_blocks: httpBlocks, bitswap }));
  await fetch.stop();
  process.exit(0);
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e?.stack ?? e) }));
  process.exit(1);
}
