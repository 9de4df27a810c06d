#!/usr/bin/env node
// scripts/experiments/gradient-refine.js — an EXPERIMENT, not an API: refinement of a lifelong log by
// gradient descent on the log's edit loss in value space, the candidate next step for issue 11's
// 1000-edit goal (README, "Lifelong": what this gave). Not part of `npm test` or the package's API;
// it reaches BaseEditor's private helpers (doEdit, post, localityPredictions) as the README's
// experiments did.
//
// A lifelong log's ΔW = S⁻¹ Σ KᵢᵀVᵢ with S = μ·C0 + e^λ·I + Σ KᵢᵀKᵢ (DESIGN §5b, keys on the base).
// The edit loss of the log, L = Σᵢ (mean target loss of edit i on the edited model), has the exact
// gradient ∂L/∂Vᵢ = Kᵢ · S⁻¹ · G with G = Σᵢ ∂Lᵢ/∂W on the edited model (MALMEN's adjoint). Unlike the
// editor's proposals (MEND.refine), which are made edit by edit and stop being a descent direction
// for the log as a whole at 1000 edits, this always is one. Each round: G from lossAndGrad per edit,
// S⁻¹G by a float64 Cholesky of S (built here in JavaScript; slow, about 15 s at 1000 edits), the
// direction d = ∇V + β·d_prev (heavy-ball momentum), a line search over η·|V|/|d| for η in ETAS
// (each candidate solved again with MEND.fromEdits), and the candidate with the lowest log loss
// kept if it is lower than before.
//
// Usage: node scripts/experiments/gradient-refine.js N ROUNDS
//   env MU (μ beyond the bundled schedule's last step; default the editor's 15000), BETA (momentum,
//   default 0.5), ETAS (default 0.005,0.01,0.02), EVERY (measure every k rounds, default 4),
//   THREADS (default 2), EDITOR and MODEL (default the bundled ones). Needs `npm run build:ts`.
// Measured on 2026-12-05 (MU=30000, 16 rounds, the first 1000 held-out edits; README).
'use strict'
const path = require('path')
const D = path.join(__dirname, '..', '..', 'dist')
const { BaseEditor, setNumThreads } = require(path.join(D, 'index.js'))
const { worldFactsEvalRequests } = require(path.join(D, 'app', 'factmodel.js'))

// In-place Cholesky S = L·Lᵀ (lower triangle of S, row-major n × n).
function cholesky(S, n) {
  for (let j = 0; j < n; j++) {
    let d = S[j * n + j]
    for (let k = 0; k < j; k++) d -= S[j * n + k] * S[j * n + k]
    if (!(d > 0)) throw new Error('S is not positive definite')
    d = Math.sqrt(d)
    S[j * n + j] = d
    for (let i = j + 1; i < n; i++) {
      let s = S[i * n + j]
      for (let k = 0; k < j; k++) s -= S[i * n + k] * S[j * n + k]
      S[i * n + j] = s / d
    }
  }
}

// B (n × m, row-major) := S⁻¹·B from S's Cholesky factor L.
function cholSolve(L, n, B, m) {
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < i; k++) { const l = L[i * n + k]; if (l !== 0) for (let c = 0; c < m; c++) B[i * m + c] -= l * B[k * m + c] }
    for (let c = 0; c < m; c++) B[i * m + c] /= L[i * n + i]
  }
  for (let i = n - 1; i >= 0; i--) {
    for (let k = i + 1; k < n; k++) { const l = L[k * n + i]; if (l !== 0) for (let c = 0; c < m; c++) B[i * m + c] -= l * B[k * m + c] }
    for (let c = 0; c < m; c++) B[i * m + c] /= L[i * n + i]
  }
}

async function main() {
  const [N, rounds] = process.argv.slice(2).map(Number)
  if (!(N >= 2) || !(rounds >= 1)) { console.error('usage: gradient-refine.js N ROUNDS (see the header)'); process.exit(2) }
  setNumThreads(Number(process.env.THREADS || 2))
  const base = await BaseEditor.fromPretrained(process.env.EDITOR ? { model: process.env.MODEL, editor: process.env.EDITOR } : {})
  const mend = base.mend.withLifelong({ refine: { rounds: 0, step: 0.1 }, ...(process.env.MU ? { mu: Number(process.env.MU) } : {}) })
  const ed = new BaseEditor(mend, base.tokenizer)
  const cases = worldFactsEvalRequests().slice(0, N).map((r) => ({
    prompt: r.prompt, targetNew: r.targetNew, rephrase: r.rephrasePrompts,
    locality: r.localityPrompts.map((l) => ({ prompt: l.prompt, answer: l.answer })), portability: [], greedy: true,
  }))
  const preLoc = []
  for (const c of cases) preLoc.push(await ed.localityPredictions(mend.model, c))
  let cur = mend
  for (const c of cases) cur = (await ed.doEdit(cur, [c])).edited
  const pct = (x) => (100 * x / N).toFixed(1)
  const measure = async (m, label) => {
    const s = { rel: 0, gen: 0, loc: 0, gr: 0 }
    for (let i = 0; i < N; i++) {
      const p = await ed.post(m.model, cases[i], preLoc[i])
      s.rel += p.rewrite_acc; s.gen += p.rephrase_acc; s.loc += p.locality; s.gr += p.rewrite_greedy
    }
    console.log(`${label}: reliability ${pct(s.rel)} generalization ${pct(s.gen)} locality ${pct(s.loc)} greedy ${pct(s.gr)}`)
  }
  const batchOf = (e) => {
    const t = e.lifelong.tokens, sh = (data) => ({ data, shape: [t.B, t.T] })
    return { inputIds: sh(t.ids), labels: sh(t.labels), ...(t.mask ? { attentionMask: sh(t.mask) } : {}) }
  }
  const logLoss = async (fm) => { let s = 0; for (const e of fm.edits) s += (await fm.forward(batchOf(e))).loss; return s }
  await measure(cur, 'as made')

  const cfg = mend.config, inner = cfg.innerParams, edits = cur.model.edits
  if (edits.some((e) => !e.lifelong)) throw new Error('not a lifelong log')
  let mu = cfg.mu
  for (const s of cfg.muSchedule) if (edits.length <= s.upTo) { mu = s.mu; if ((s.scale ?? 1) !== 1) throw new Error('a value scale is not handled here'); break }
  const L = {}, dims = {}
  for (const name of inner) {
    const din = edits[0].lifelong.rows[name].k.shape[1], dout = edits[0].lifelong.rows[name].v.shape[1]
    dims[name] = [din, dout]
    const S = new Float64Array(din * din), c0 = mend.keyCovariance[name], ridge = Math.exp(cfg.logRidge)
    for (let i = 0; i < din * din; i++) S[i] = mu * c0[i]
    for (let i = 0; i < din; i++) S[i * din + i] += ridge
    for (const e of edits) {
      const k = e.lifelong.rows[name].k
      for (let q = 0; q < k.shape[0]; q++) {
        for (let i = 0; i < din; i++) { const a = k.data[q * din + i]; if (a !== 0) for (let j = 0; j <= i; j++) S[i * din + j] += a * k.data[q * din + j] }
      }
    }
    for (let i = 0; i < din; i++) for (let j = 0; j < i; j++) S[j * din + i] = S[i * din + j]
    cholesky(S, din)
    L[name] = S
  }
  const beta = Number(process.env.BETA ?? 0.5), every = Number(process.env.EVERY || 4)
  const etas = (process.env.ETAS || '0.005,0.01,0.02').split(',').map(Number)
  let loss = await logLoss(cur.model), prev = null
  console.log(`mu ${mu}, log ridge ${cfg.logRidge}, log loss ${loss.toFixed(1)}`)
  for (let round = 1; round <= rounds; round++) {
    const t0 = Date.now(), fm = cur.model
    const G = Object.fromEntries(inner.map((n) => [n, new Float64Array(dims[n][0] * dims[n][1])]))
    for (const e of fm.edits) {
      const r = await fm.lossAndGrad(batchOf(e), { params: inner })
      for (const n of inner) { const g = r.grads[n].data; for (let i = 0; i < g.length; i++) G[n][i] += g[i] }
    }
    for (const n of inner) cholSolve(L[n], dims[n][0], G[n], dims[n][1])
    const dir = fm.edits.map((e, ei) => Object.fromEntries(inner.map((n) => {
      const [din, dout] = dims[n], k = e.lifelong.rows[n].k, X = G[n], d = new Float64Array(k.shape[0] * dout)
      for (let q = 0; q < k.shape[0]; q++) {
        for (let i = 0; i < din; i++) { const a = k.data[q * din + i]; if (a !== 0) for (let c = 0; c < dout; c++) d[q * dout + c] += a * X[i * dout + c] }
      }
      if (prev) { const p = prev[ei][n]; for (let j = 0; j < d.length; j++) d[j] += beta * p[j] }
      return [n, d]
    })))
    let vv = 0, dd = 0
    fm.edits.forEach((e, i) => inner.forEach((n) => { const v = e.lifelong.rows[n].v.data, d = dir[i][n]; for (let j = 0; j < v.length; j++) { vv += v[j] * v[j]; dd += d[j] * d[j] } }))
    const scale = Math.sqrt(vv / dd)
    let best = null
    for (const eta of etas) {
      const cand = await mend.fromEdits(fm.edits.map((e, i) => {
        const rows = {}
        for (const n of inner) {
          const o = e.lifelong.rows[n], d = dir[i][n], v = new Float32Array(o.v.data.length)
          for (let j = 0; j < v.length; j++) v[j] = o.v.data[j] - eta * scale * d[j]
          rows[n] = { k: o.k, v: { shape: o.v.shape, data: v } }
        }
        return { ...e, lifelong: { ...e.lifelong, rows } }
      }))
      const l = await logLoss(cand.model)
      if (!best || l < best.l) best = { cand, l, eta }
    }
    if (!(best.l < loss)) { console.log(`round ${round}: no step lowers the log loss; stopping`); break }
    loss = best.l; cur = best.cand; prev = dir
    const label = `round ${round} (η ${best.eta}, log loss ${loss.toFixed(1)}, ${((Date.now() - t0) / 1000).toFixed(1)} s)`
    if (round % every === 0 || round === rounds) await measure(cur, label)
    else console.log(label)
  }
}

main().catch((e) => { console.error(e); process.exit(1) })
