#!/usr/bin/env node
// A running Helia node for the meshcast tests, driven by JSON lines on
// stdin, with the same protocol as `kubo.py daemon`.
//
// The node listens on 127.0.0.1 only (TCP + Noise + Yamux), with identify,
// ping and gossipsub (as service `pubsub`, for IPNS over pubsub) and nothing that
// reaches out: no bootstrap list, no mDNS, no DHT, no delegated routers, no
// HTTP gateways. Blocks come and go with Bitswap over the connections it is
// told to make; the blockstore is in memory.
//
// Usage: node helia-node.mjs [--dht]
//
// With --dht, names resolve through a Kademlia DHT instead of pubsub: the
// node runs @libp2p/kad-dht as a client on kubo's LAN protocol
// (/ipfs/lan/kad/1.0.0, keeping loopback addresses) with the IPNS validator
// and selector, and `resolve` asks only Helia's routing, that is the DHT.
//
// It prints {"event": "ready", "peer_id": ID, "addrs": [MULTIADDR/p2p/ID...]}
// and then answers each command line (which may carry an "id", echoed back)
// with one line {"id": ID, "ok": true, ...} or {"id": ID, "ok": false,
// "error": TEXT}. Commands run concurrently, so answers come in any order.
//
//   {"cmd": "id"}                          -> peer_id, addrs
//   {"cmd": "dial", "addr": MULTIADDR}     -> (connects)
//   {"cmd": "add", "path": PATH}           -> cid (the file's bytes, with
//       @helia/unixfs addBytes defaults: CIDv1 with raw leaves)
//   {"cmd": "cat", "cid": CID, "dest": PATH, "timeout": SECONDS}
//                                          -> bytes (written to PATH)
//   {"cmd": "peers"}                       -> peers: [PEER_ID...]
//   {"cmd": "resolve", "name": IPNS_NAME, "timeout": SECONDS}
//                                          -> value (@helia/ipns with pubsub
//       routing only, or the DHT only with --dht: the first try subscribes to the name's topic, and it
//       is asked again until a record arrives (by message or by fetch from a
//       topic peer) or the timeout passes)
//   {"cmd": "provide", "cid": CID, "timeout": SECONDS}
//                                          -> (announces that this node
//       provides CID: Helia's routing, so the DHT with --dht)
//   {"cmd": "dht_providers", "cid": CID, "timeout": SECONDS}
//                                          -> responses: [{"from": PEER_ID,
//       "providers": [{"id": PEER_ID, "addrs": [MULTIADDR...]}...]}...]
//       (with --dht: every answer to the DHT's GET_PROVIDERS query for CID,
//       by the peer that gave it, until the query ends or the timeout passes)
//   {"cmd": "stop"}                        -> answers, then exits
//
// End of input also stops the node.

import { createHelia } from 'helia'
import { unixfs } from '@helia/unixfs'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { gossipsub } from '@libp2p/gossipsub'
import { fetch } from '@libp2p/fetch'
import { ipns, pubSubIPNSRouting, heliaIPNSRouting } from '@helia/ipns'
import { ipnsValidator } from 'ipns/validator'
import { ipnsSelector } from 'ipns/selector'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import fs from 'node:fs'
import readline from 'node:readline'

const withDht = process.argv.includes('--dht')
const dht = withDht
  ? {
      dht: kadDHT({
        protocol: '/ipfs/lan/kad/1.0.0',
        clientMode: true,
        peerInfoMapper: passthroughMapper,
        validators: { ipns: ipnsValidator },
        selectors: { ipns: ipnsSelector }
      })
    }
  : {}

const helia = await createHelia({
  libp2p: {
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery: [],
    services: {
      identify: identify(),
      // As in Helia's default libp2p setup. Without it, rust-libp2p's ping
      // (0.47) stops answering the pings js-libp2p's connection monitor
      // sends, and the monitor drops the connection after 10-15 s.
      ping: ping(),
      pubsub: gossipsub({ allowPublishToZeroTopicPeers: true }),
      fetch: fetch(),
      ...dht
    }
  },
  // No delegated routing and no public gateways: peers only.
  http: { delegatedRouters: [], recursiveGateways: [] }
})
await helia.start()
const fsys = unixfs(helia)
const names = ipns(helia, {
  routers: [withDht ? heliaIPNSRouting(helia.routing) : pubSubIPNSRouting(helia)]
})

function reply (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function need (req, key) {
  if (req[key] === undefined) throw new Error(`command ${JSON.stringify(req.cmd)} needs ${JSON.stringify(key)}`)
  return req[key]
}

function identity () {
  return {
    peer_id: helia.libp2p.peerId.toString(),
    addrs: helia.libp2p.getMultiaddrs().map(String)
  }
}

const commands = {
  id: async () => identity(),
  dial: async (req) => {
    await helia.libp2p.dial(multiaddr(need(req, 'addr')), { signal: AbortSignal.timeout(10_000) })
    return {}
  },
  add: async (req) => {
    const cid = await fsys.addBytes(fs.readFileSync(need(req, 'path')))
    return { cid: cid.toString() }
  },
  cat: async (req) => {
    const cid = CID.parse(need(req, 'cid'))
    const signal = AbortSignal.timeout(1000 * (req.timeout ?? 30))
    const out = fs.createWriteStream(need(req, 'dest'))
    let bytes = 0
    try {
      for await (const chunk of fsys.cat(cid, { signal })) {
        bytes += chunk.length
        if (!out.write(chunk)) await new Promise((resolve) => out.once('drain', resolve))
      }
    } finally {
      await new Promise((resolve) => out.end(resolve))
    }
    return { bytes }
  },
  peers: async () => ({ peers: helia.libp2p.getPeers().map(String) }),
  provide: async (req) => {
    const signal = AbortSignal.timeout(1000 * (req.timeout ?? 30))
    await helia.routing.provide(CID.parse(need(req, 'cid')), { signal })
    return {}
  },
  dht_providers: async (req) => {
    const dht = helia.libp2p.services.dht
    if (dht === undefined) throw new Error('dht_providers needs --dht')
    const signal = AbortSignal.timeout(1000 * (req.timeout ?? 30))
    const responses = []
    try {
      for await (const event of dht.findProviders(CID.parse(need(req, 'cid')), { signal })) {
        if (event.name === 'PEER_RESPONSE' && event.messageName === 'GET_PROVIDERS') {
          responses.push({
            from: event.from.toString(),
            providers: event.providers.map((p) => ({ id: p.id.toString(), addrs: p.multiaddrs.map(String) }))
          })
        }
      }
    } catch (e) {
      if (!signal.aborted) throw e
    }
    return { responses }
  },
  resolve: async (req) => {
    const name = need(req, 'name')
    const deadline = Date.now() + 1000 * (req.timeout ?? 30)
    let last
    while (Date.now() < deadline) {
      try {
        for await (const result of names.resolve(name, { signal: AbortSignal.timeout(5_000), offline: false, nocache: true })) {
          return { value: result.value ?? result.record.value }
        }
      } catch (e) {
        last = e
      }
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
    throw last ?? new Error('no record')
  }
}

async function serve (req) {
  try {
    const handler = commands[req.cmd]
    if (handler === undefined) throw new Error(`unknown command ${JSON.stringify(req.cmd)}`)
    reply({ id: req.id ?? null, ok: true, ...(await handler(req)) })
  } catch (e) {
    reply({ id: req.id ?? null, ok: false, error: `${e.name}: ${e.message}` })
  }
}

reply({ event: 'ready', ...identity() })

const lines = readline.createInterface({ input: process.stdin })
for await (const line of lines) {
  if (line.trim() === '') continue
  let req
  try {
    req = JSON.parse(line)
  } catch (e) {
    reply({ id: null, ok: false, error: `not JSON: ${e.message}` })
    continue
  }
  if (req.cmd === 'stop') {
    reply({ id: req.id ?? null, ok: true })
    break
  }
  serve(req)
}
await helia.stop()
process.exit(0)
