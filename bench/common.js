// Shared helpers for the benchmark scripts: timing with medians, the machine line, table printing,
// the testing addon (kernel-level functions and the read-bandwidth probe).
'use strict'
const fs = require('fs')
const os = require('os')
const path = require('path')

/** build/Release/node_mend_testing.node (built by `npm install` unless NODE_MEND_TESTING=0). */
function testingAddon() {
  const file = process.env.NODE_MEND_TESTING_ADDON
    ? path.resolve(process.env.NODE_MEND_TESTING_ADDON)
    : path.join(__dirname, '..', 'build', 'Release', 'node_mend_testing.node')
  try {
    return require(file)
  } catch (e) {
    throw new Error(`the testing addon ${file} does not load (${e.message}); build it with npm run build:native`)
  }
}

function machine() {
  let cpu = os.cpus()[0]?.model || 'unknown CPU'
  try {
    const m = fs.readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/)
    if (m) cpu = m[1]
  } catch {}
  return `${cpu}, ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

/** Runs fn (async) `warmup` times, then `reps` timed times; returns each timed run's ms. */
async function samples(fn, { reps = 7, warmup = 2 } = {}) {
  for (let i = 0; i < warmup; i++) await fn()
  const ms = []
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint()
    await fn()
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6)
  }
  return ms
}

/** Runs fn (async) `warmup` times, then `reps` timed times; returns the median ms. */
async function timeit(fn, opts) {
  return median(await samples(fn, opts))
}

/** Times fns alternately (a, b, a, b, …) so machine noise hits both alike; returns their median ms. */
async function timePaired(fns, { reps = 15, warmup = 2 } = {}) {
  for (let i = 0; i < warmup; i++) for (const f of fns) await f()
  const ms = fns.map(() => [])
  for (let i = 0; i < reps; i++) {
    for (let k = 0; k < fns.length; k++) {
      const t0 = process.hrtime.bigint()
      await fns[k]()
      ms[k].push(Number(process.hrtime.bigint() - t0) / 1e6)
    }
  }
  return ms.map(median)
}

/**
 * The references the floors use: the GEMM rate on 1024³ (FLOP/s) and the read bandwidth (B/s) of the
 * testing addon's kernels (the same code and thread pool). The machine is shared and its speed drifts,
 * so each is the best of several measurements, and callers measure again after their workloads and
 * keep the better value: a floor from a slow moment would flatter every ratio.
 */
async function reference(testing, prev = null) {
  const n = 1024
  const A = new Float32Array(n * n).map(() => Math.random() - 0.5)
  const B = new Float32Array(n * n).map(() => Math.random() - 0.5)
  const C = new Float32Array(n * n)
  let best = Infinity
  for (let i = 0; i < 15; i++) {
    const t0 = process.hrtime.bigint()
    testing.gemm(false, false, n, n, n, 1, A, n, B, n, 0, C, n)
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e6)
  }
  let bw = 0
  for (let i = 0; i < 3; i++) bw = Math.max(bw, testing.benchReadBandwidth(1024, 5) * 1e9)
  const rate = (2 * n ** 3) / (best / 1e3)
  return prev ? { rate: Math.max(rate, prev.rate), bw: Math.max(bw, prev.bw) } : { rate, bw }
}

function table(headers, rows) {
  const w = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)))
  const line = (cells) => '| ' + cells.map((c, i) => String(c).padEnd(w[i])).join(' | ') + ' |'
  console.log(line(headers))
  console.log('|' + w.map((x) => '-'.repeat(x + 2)).join('|') + '|')
  for (const r of rows) console.log(line(r))
}

module.exports = { reference, machine, median, samples, timeit, timePaired, table, testingAddon }
