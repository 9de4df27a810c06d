#!/usr/bin/env node
// Lifelong-mode benchmark on the bundled WorldFacts model: the cost of one more edit at depth 0 and
// at depth N (default 1000) with the bundled lifelong (malmen) editor, against a classic MEND edit
// at depth 0 (the bundled classic editor), measured in the same run; undo, one refinement round of
// each method and the bundled refinement (refine() with the editor's settings) at depth N (once
// each); and the memory each holds.
// Usage: node bench/lifelong.js [--depth 1000] [--reps 15]
'use strict'
const path = require('path')
const { GPT2LMHeadModel, GPT2Tokenizer, MEND, setNumThreads, numThreads } = require('..')
const { BUNDLED_MODEL_DIR, BUNDLED_EDITOR_FILE, BUNDLED_MEND_EDITOR_FILE } = require(path.join(__dirname, '..', 'dist', 'data', 'assets'))
const { worldFactsEvalRequests } = require(path.join(__dirname, '..', 'dist', 'app', 'factmodel'))
const { buildEditBatch } = require(path.join(__dirname, '..', 'dist', 'data', 'editdata'))
const { lifelongSolverOf } = require(path.join(__dirname, '..', 'dist', 'mend', 'mend'))
const { machine, table } = require('./common')

const arg = (k, d) => { const i = process.argv.indexOf(k); return i > 0 ? Number(process.argv[i + 1]) : d }
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }

async function main() {
  if (process.env.NODE_MEND_THREADS) setNumThreads(Number(process.env.NODE_MEND_THREADS))
  const depth = arg('--depth', 1000), reps = arg('--reps', 15)
  console.log(`# node-mend lifelong-edit benchmark — ${machine()}; threads ${numThreads()}\n`)
  const model = await GPT2LMHeadModel.fromPretrained(BUNDLED_MODEL_DIR)
  const tok = await GPT2Tokenizer.fromPretrained(BUNDLED_MODEL_DIR)
  const ll = await MEND.fromPretrained(model, BUNDLED_EDITOR_FILE)
  const classic = await MEND.fromPretrained(model, BUNDLED_MEND_EDITOR_FILE)
  const reqs = worldFactsEvalRequests()
  if (depth + reps > reqs.length) throw new Error(`--depth + --reps must be at most ${reqs.length}`)
  const batch = (r) => buildEditBatch(tok, [r.prompt], [r.targetNew])
  await ll.edit(batch(reqs[0])) // the prior (one d_in³ solve per inner weight) is built on first use
  // Paired, interleaved: classic at depth 0, lifelong at depth 0, lifelong at depth N.
  let deep = ll
  // The edits that enter a step of the μ schedule (live edits = upTo + 1) re-add the live edits to
  // that step's prior (computed then, once per controller): timed on their own.
  const entering = new Set(ll.config.muSchedule.map((s) => s.upTo + 1))
  const stepMs = []
  const t0 = Date.now()
  for (let i = 0; i < depth; i++) {
    const t = process.hrtime.bigint()
    deep = (await deep.edit(batch(reqs[i]))).edited
    if (entering.has(i + 1)) stepMs.push([i + 1, Number(process.hrtime.bigint() - t) / 1e6])
  }
  const buildMs = Date.now() - t0
  const tc = [], t0s = [], tn = []
  for (let i = 0; i < reps; i++) {
    const b = batch(reqs[depth + i])
    let t = process.hrtime.bigint(); await classic.edit(b); tc.push(Number(process.hrtime.bigint() - t) / 1e6)
    t = process.hrtime.bigint(); await ll.edit(b); t0s.push(Number(process.hrtime.bigint() - t) / 1e6)
    t = process.hrtime.bigint(); await deep.edit(b); tn.push(Number(process.hrtime.bigint() - t) / 1e6)
  }
  // Log-level operations at depth N, once each: undo of one edit (the log without it, solved again)
  // and refinement: one round of the editor's proposals (every live edit proposed again on the
  // edited model, then solved), one round of gradient descent, and the editor's own setting.
  let t = process.hrtime.bigint()
  await deep.model.without(Math.floor(depth / 2))
  const undoMs = Number(process.hrtime.bigint() - t) / 1e6
  const timed = async (f) => { const t1 = process.hrtime.bigint(); await f(); return Number(process.hrtime.bigint() - t1) / 1e6 }
  const refineMs = await timed(() => deep.refine({ method: 'editor', rounds: 1, step: 0.1, monotone: false }))
  const gradMs = await timed(() => deep.refine({ method: 'gradient', rounds: 1 }))
  const cr = ll.config.refine
  const bundledMs = await timed(() => deep.refine())
  const c = median(tc), l0 = median(t0s), ln = median(tn)
  const state = deep.model.solverState.bytes(), overlay = deep.model.overlayBytes
  const logBytes = deep.model.edits.reduce((a, e) => a + Object.values(e.lifelong.rows).reduce((s, r) => s + 4 * (r.k.data.length + r.v.data.length), 0), 0)
  const dense = model.parameters().filter((p) => ll.config.innerParams.includes(p.name)).reduce((a, p) => a + p.shape[0] * p.shape[1] * 4, 0)
  table(['measure', 'median', 'reference', 'ratio', 'target'], [
    ['lifelong edit, depth 0', `${l0.toFixed(1)} ms`, `classic MEND edit, depth 0: ${c.toFixed(1)} ms`, (l0 / c).toFixed(2), ''],
    [`lifelong edit, depth ${depth}`, `${ln.toFixed(1)} ms`, `lifelong edit, depth 0: ${l0.toFixed(1)} ms`, (ln / l0).toFixed(2), '≤ 2'],
    [`lifelong edit, depth ${depth}`, `${ln.toFixed(1)} ms`, `classic MEND edit, depth 0: ${c.toFixed(1)} ms`, (ln / c).toFixed(2), ''],
    [`${depth} lifelong edits in sequence (mean)`, `${(buildMs / depth).toFixed(1)} ms`, '', '', ''],
    [`undo one edit at depth ${depth} (without(i): the log solved again)`, `${(undoMs / 1000).toFixed(2)} s`, `lifelong edit, depth 0: ${l0.toFixed(1)} ms`, (undoMs / l0).toFixed(0), 'once'],
    [`one refinement round at depth ${depth} (the editor's proposals)`, `${(refineMs / 1000).toFixed(2)} s`, `lifelong edit, depth 0: ${l0.toFixed(1)} ms`, (refineMs / l0).toFixed(0), 'once'],
    [`one refinement round at depth ${depth} (gradient, with the final solve)`, `${(gradMs / 1000).toFixed(2)} s`, `lifelong edit, depth 0: ${l0.toFixed(1)} ms`, (gradMs / l0).toFixed(0), 'once'],
    [`refine() at depth ${depth} (the editor's setting: ${cr.method ?? 'editor'}, ${cr.rounds} rounds)`, `${(bundledMs / 1000).toFixed(2)} s`, `${depth} lifelong edits in sequence: ${(buildMs / 1000).toFixed(1)} s`, (bundledMs / buildMs).toFixed(2), 'once'],
    ...stepMs.map(([n, ms]) => [`edit ${n}: enters μ = ${lifelongSolverOf(ll).stepAt(n).mu} (prior + ${n - 1} edits re-added)`, `${ms.toFixed(1)} ms`, `lifelong edit, depth 0: ${l0.toFixed(1)} ms`, (ms / l0).toFixed(2), 'once']),
    ['solve state (P, ΔW in float64)', `${(state / 2 ** 20).toFixed(1)} MiB`, `dense inner weights ${(dense / 2 ** 20).toFixed(1)} MiB`, (state / dense).toFixed(2), 'bounded'],
    ['merged weights (overlay)', `${(overlay / 2 ** 20).toFixed(1)} MiB`, `dense inner weights ${(dense / 2 ** 20).toFixed(1)} MiB`, (overlay / dense).toFixed(2), ''],
    [`edit log (${depth} edits: keys and values)`, `${(logBytes / 2 ** 20).toFixed(1)} MiB`, '', '', ''],
  ])
}

main().catch((e) => { console.error(e); process.exit(1) })
