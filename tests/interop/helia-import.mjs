#!/usr/bin/env node
// Computes the UnixFS root CID of a file or directory with Helia's importer
// (ipfs-unixfs-importer), the reference the meshcast tests compare against.
// Blocks go to a black hole: only the CID is wanted, so a 1 GiB file costs no
// memory.
//
// Usage: node helia-import.mjs [OPTIONS] PATH...     (PATH "-" is stdin)
//
//   --kubo                   kubo's `ipfs add` defaults: CIDv0, dag-pb leaves,
//                            256 KiB chunks, 174 links per node, links-bytes
//                            shard threshold (the unixfs-v0-2015 profile)
//   --profile NAME           unixfs-v0-2015 | unixfs-v1-2025 (IPIP-0499)
//   --cid-version 0|1        CID version of dag-pb nodes (1 implies raw leaves
//                            unless --raw-leaves is given, as in kubo)
//   --raw-leaves true|false  raw (codec 0x55) leaves instead of dag-pb ones
//   --chunk-size N           fixed-size chunker of N bytes
//   --max-children N         balanced layout width (links per file node)
//   --shard-threshold N      HAMT split threshold in bytes (default 262144)
//   --shard-strategy S       links-bytes | block-bytes
//   --wrap                   wrap everything in a directory (`add -w`)
//   --hidden                 include dot files when walking directories
//   --all                    print every entry as `<cid> <path>`, not just the root
//   --each                   import each PATH on its own and print one root CID
//                            per PATH, in order (one process for many cases)
//
// Without --kubo or --profile the importer's own defaults apply (CIDv1, raw
// leaves, 256 KiB chunks, 174 links).
//
// Like kubo, a directory argument is imported under its own name (so the
// root is the directory itself, or with --wrap a directory holding it);
// entries are visited in byte order of their names; empty directories are
// kept; symlinks are preserved as UnixFS symlinks.

import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { BlackHoleBlockstore } from 'blockstore-core/black-hole'
import fs from 'node:fs'
import path from 'node:path'

function usage (msg) {
  process.stderr.write(`helia-import: ${msg}\n`)
  process.exit(2)
}

function parseArgs (argv) {
  const opts = { paths: [] }
  const takesValue = new Set(['--profile', '--cid-version', '--raw-leaves', '--chunk-size',
    '--max-children', '--shard-threshold', '--shard-strategy'])
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i]
    let value
    if (arg.startsWith('--') && arg.includes('=')) {
      value = arg.slice(arg.indexOf('=') + 1)
      arg = arg.slice(0, arg.indexOf('='))
    }
    if (takesValue.has(arg)) {
      if (value === undefined) {
        if (i + 1 >= argv.length) usage(`${arg} needs a value`)
        value = argv[++i]
      }
      opts[arg.slice(2)] = value
    } else if (['--kubo', '--wrap', '--hidden', '--all', '--each'].includes(arg)) {
      opts[arg.slice(2)] = true
    } else if (arg === '-' || !arg.startsWith('-')) {
      opts.paths.push(arg)
    } else {
      usage(`unknown option ${arg}`)
    }
  }
  if (opts.paths.length === 0) usage('no PATH given')
  return opts
}

function int (name, value) {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0) usage(`${name} must be a non-negative integer, not ${value}`)
  return n
}

function bool (name, value) {
  if (value === 'true') return true
  if (value === 'false') return false
  usage(`${name} must be true or false, not ${value}`)
}

function importerOptions (opts) {
  const o = {
    // One at a time keeps the output order and memory predictable.
    fileImportConcurrency: 50,
    blockWriteConcurrency: 16
  }
  if (opts.kubo) {
    if (opts.profile !== undefined) usage('--kubo and --profile exclude each other')
    opts.profile = 'unixfs-v0-2015'
  }
  if (opts.profile !== undefined) {
    if (opts.profile !== 'unixfs-v0-2015' && opts.profile !== 'unixfs-v1-2025') usage(`unknown profile ${opts.profile}`)
    o.profile = opts.profile
  }
  if (opts['cid-version'] !== undefined) {
    o.cidVersion = int('--cid-version', opts['cid-version'])
    if (o.cidVersion > 1) usage('--cid-version must be 0 or 1')
    // kubo: --cid-version 1 implies --raw-leaves unless that is set.
    if (o.cidVersion === 1 && opts['raw-leaves'] === undefined) o.rawLeaves = true
  }
  if (opts['raw-leaves'] !== undefined) o.rawLeaves = bool('--raw-leaves', opts['raw-leaves'])
  if (opts['chunk-size'] !== undefined) o.chunker = fixedSize({ chunkSize: int('--chunk-size', opts['chunk-size']) })
  if (opts['max-children'] !== undefined) o.layout = balanced({ maxChildrenPerNode: int('--max-children', opts['max-children']) })
  if (opts['shard-threshold'] !== undefined) o.shardSplitThresholdBytes = int('--shard-threshold', opts['shard-threshold'])
  if (opts['shard-strategy'] !== undefined) o.shardSplitStrategy = opts['shard-strategy']
  if (opts.wrap) o.wrapWithDirectory = true
  return o
}

// Candidates for one command-line argument, named as kubo names them: the
// argument's base name, then paths below it.
function * candidates (arg, hidden) {
  if (arg === '-') {
    // kubo names stdin content after its CID; a file candidate without a
    // path gives the same DAG.
    yield { content: fs.createReadStream(null, { fd: 0, highWaterMark: 1 << 20 }) }
    return
  }
  const name = path.basename(path.resolve(arg))
  yield * walk(arg, name, hidden)
}

function * walk (fsPath, importPath, hidden) {
  const st = fs.lstatSync(fsPath)
  if (st.isSymbolicLink()) {
    yield { path: importPath, link: fs.readlinkSync(fsPath) }
  } else if (st.isDirectory()) {
    yield { path: importPath }
    const names = fs.readdirSync(fsPath)
      .filter(n => hidden || !n.startsWith('.'))
      .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
    for (const n of names) {
      yield * walk(path.join(fsPath, n), `${importPath}/${n}`, hidden)
    }
  } else {
    // Small files are read at once: a stream per file is slow for the
    // thousands of files of a sharded directory.
    const content = st.size <= (1 << 20) ? fs.readFileSync(fsPath) : fs.createReadStream(fsPath, { highWaterMark: 1 << 20 })
    yield { path: importPath, content }
  }
}

async function importPaths (paths, opts) {
  // The importer fills in defaults on the options object it is given.
  const options = importerOptions({ ...opts })
  const source = (function * () {
    for (const p of paths) yield * candidates(p, opts.hidden === true)
  })()
  let last
  for await (const entry of importer(source, new BlackHoleBlockstore(), options)) {
    if (opts.all) process.stdout.write(`${entry.cid} ${entry.path ?? entry.cid}\n`)
    last = entry
  }
  if (last === undefined) usage('nothing imported')
  if (!opts.all) process.stdout.write(`${last.cid}\n`)
}

async function main () {
  const opts = parseArgs(process.argv.slice(2))
  if (opts.each) {
    for (const p of opts.paths) await importPaths([p], opts)
  } else {
    await importPaths(opts.paths, opts)
  }
}

main().catch(err => {
  process.stderr.write(`helia-import: ${err.stack ?? err}\n`)
  process.exit(1)
})
