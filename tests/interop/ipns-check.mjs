#!/usr/bin/env node
// IPNS records and names with the JS `ipns` package (what Helia uses), the
// reference the meshcast IPNS tests compare against.
//
// Usage:
//   node ipns-check.mjs validate NAME RECORD_FILE
//       Validates the record in RECORD_FILE for NAME (any form peerIdFromString
//       takes: k51..., bafz..., 12D3Koo..., Qm...) with `ipnsValidator`, which
//       also rejects expired records, and prints the names and the record.
//   node ipns-check.mjs create OUT_FILE VALUE SEQUENCE LIFETIME_MS [--v2-only] [--ttl-ns N] [--key-type T]
//       Makes a new key with @libp2p/crypto (Ed25519 unless --key-type RSA or
//       secp256k1; RSA keys have 2048 bits; @libp2p/peer-id has no ECDSA peer
//       ids), signs a record with `createIPNSRecord` (V1+V2 unless
//       --v2-only), writes it to OUT_FILE and prints the names and the record.
//   node ipns-check.mjs key-name KEY_FILE
//       Reads a libp2p protobuf private key and prints its names.
//
// Output is one JSON line:
//   {"peerId": base58, "name": base36 CIDv1, "cid": base32 CIDv1,
//    "routingKey": base64url, "topic": "/record/...",
//    "value", "sequence", "validity", "ttl", "v1"}     (record fields when there is one)
// sequence and ttl are decimal strings (they are 64-bit). A failure prints the
// reason on stderr and exits 1.

import { generateKeyPair, privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import {
  createIPNSRecord,
  marshalIPNSRecord,
  multihashToIPNSRoutingKey,
  unmarshalIPNSRecord
} from 'ipns'
import { ipnsValidator } from 'ipns/validator'
import { base36 } from 'multiformats/bases/base36'
import { base64url } from 'multiformats/bases/base64'
import fs from 'node:fs'

function names (peerId) {
  const routingKey = multihashToIPNSRoutingKey(peerId.toMultihash())
  // Unpadded base64url: multiformats' baseEncode writes no padding and no
  // multibase prefix (the same string as @helia/ipns's pubsub keyToTopic).
  const key = base64url.baseEncode(routingKey)
  return {
    peerId: peerId.toString(),
    name: peerId.toCID().toString(base36),
    cid: peerId.toCID().toString(),
    routingKey: key,
    topic: `/record/${key}`
  }
}

function recordFields (bytes) {
  const record = unmarshalIPNSRecord(bytes)
  return {
    value: record.value,
    sequence: record.sequence.toString(),
    validity: record.validity,
    ttl: (record.ttl ?? 0n).toString(),
    v1: 'signatureV1' in record
  }
}

async function main (args) {
  const [command, ...rest] = args
  if (command === 'validate' && rest.length === 2) {
    const [name, file] = rest
    const peerId = peerIdFromString(name)
    const bytes = fs.readFileSync(file)
    await ipnsValidator(multihashToIPNSRoutingKey(peerId.toMultihash()), bytes)
    return { ...names(peerId), ...recordFields(bytes) }
  }
  if (command === 'create' && rest.length >= 4) {
    const [out, value, sequence, lifetime, ...flags] = rest
    let v1Compatible = true
    let ttlNs
    let keyType = 'Ed25519'
    for (let i = 0; i < flags.length; i++) {
      if (flags[i] === '--v2-only') v1Compatible = false
      else if (flags[i] === '--ttl-ns') ttlNs = BigInt(flags[++i])
      else if (flags[i] === '--key-type') keyType = flags[++i]
      else throw new Error(`unknown option ${flags[i]}`)
    }
    const key = await generateKeyPair(keyType, keyType === 'RSA' ? 2048 : undefined)
    const record = await createIPNSRecord(key, value, BigInt(sequence), Number(lifetime), {
      v1Compatible,
      ...(ttlNs === undefined ? {} : { ttlNs })
    })
    const bytes = marshalIPNSRecord(record)
    fs.writeFileSync(out, bytes)
    return { ...names(peerIdFromPrivateKey(key)), ...recordFields(bytes) }
  }
  if (command === 'key-name' && rest.length === 1) {
    const key = privateKeyFromProtobuf(fs.readFileSync(rest[0]))
    return names(peerIdFromPrivateKey(key))
  }
  throw new Error('usage: ipns-check.mjs validate NAME FILE | create OUT VALUE SEQ LIFETIME_MS [--v2-only] [--ttl-ns N] [--key-type T] | key-name FILE')
}

try {
  console.log(JSON.stringify(await main(process.argv.slice(2))))
} catch (err) {
  console.error(`ipns-check: ${err.message ?? err}`)
  process.exit(1)
}
