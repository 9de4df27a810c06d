#!/usr/bin/env node
// Lifelong-editing probe (an experiment for issue 11, not the product; run by hand, ~10 min):
// classic MEND under sequential editing against a training-free joint ridge solve over the edit log,
// on WorldFacts with 55% of the subjects held out (1092 evaluation edits the editor never saw).
// For every edit e and inner weight W (on the base model): keys K_e = the kept layer-input rows, the
// classic edit's effect on them V_e = K_e ΔW_e (ΔW_e = α Ũᵀ D̃); after k edits
// ΔW = (Σ K_eᵀK_e + μ C0 + λ·tr/n·I)⁻¹ Σ K_eᵀV_e, with C0 = E[k kᵀ] over training-subject corpus
// sentences (MEMIT-style preservation). It trains a classic editor for that split first (cached in
// /tmp/ll). Uses BaseEditor's private metric helpers so that the metrics are the same code.
//   node scripts/lifelong-probe.js [--n 1000] [--lambdas 1e-2] [--mus 0,100,1000] [--skip-classic]
'use strict'
const fs = require('fs'), path = require('path')
const D = path.join(__dirname, '..', 'dist')
const m = require(`${D}/index`)
const fm = require(`${D}/app/factmodel`)
const { BUNDLED_MODEL_DIR } = require(`${D}/data/assets`)
const { buildEditBatch } = require(`${D}/data/editdata`)
const log = (...a) => console.log(`[${((Date.now() - T0) / 1000).toFixed(1)} s]`, ...a)
const T0 = Date.now()
const arg = (k, d) => { const i = process.argv.indexOf(k); return i > 0 ? process.argv[i + 1] : d }

async function main() {
  const frac = Number(arg('--frac', '0.55')), N = Number(arg('--n', '1000'))
  const model = await m.GPT2LMHeadModel.fromPretrained(BUNDLED_MODEL_DIR)
  const tok = await m.GPT2Tokenizer.fromPretrained(BUNDLED_MODEL_DIR)
  const wf = m.buildWorldFacts({ heldOutSubjectFraction: frac })
  fs.mkdirSync('/tmp/ll', { recursive: true })
  const editorFile = `/tmp/ll/editor-${frac}.safetensors`
  let mend
  if (fs.existsSync(editorFile)) mend = await m.MEND.fromPretrained(model, editorFile)
  else {
    log('training classic editor on', fm.editorTrainingRequests(wf, 'train', 0).length, 'training edits')
    const innerParams = [1, 2, 3].flatMap((b) => [`transformer.h.${b}.mlp.c_proj.weight`, `transformer.h.${b}.mlp.c_fc.weight`])
    const ed = await fm.trainFactEditor(model, tok, wf, { seed: 0, mend: { rank: 256, editLr: 1e-4, innerParams },
      trainer: { maxIters: 3000, valInterval: 250, lr: 1e-5, lrLr: 1e-3, cedit: 1, cloc: 1, accumulateBs: 10 },
      onProgress: (p) => { if (p.val) log(`step ${p.step} val edit ${p.val.edit.toFixed(3)} loc ${p.val.loc.toFixed(4)} acc ${p.val.editAcc.toFixed(3)}`) } })
    mend = ed.mend
    await mend.save(editorFile)
  }
  const reqs = fm.worldFactsEvalRequests(wf, 2)
  log('eval edits available', reqs.length)
  const recs = reqs.slice(0, N)
  const editor = new m.BaseEditor(mend, tok)
  const ks = [1, 10, 100, 1000].filter((k) => k <= N)
  const out = { frac, n: N, classic: [], lifelong: {} }
  if (!process.argv.includes('--skip-classic')) {
    const curve = await editor.sequentialCurve({ ...m.editorRequest(recs), greedyMatch: true }, ks)
    curve.forEach((ms, i) => { const r = summarise(ks[i], ms); out.classic.push(r); log('classic', JSON.stringify(r)) })
  }
  // ---- lifelong prototype: base keys, joint ridge solve of each edit's own-key value shifts
  const inner = mend.config.innerParams
  const shapes = Object.fromEntries(model.parameters().map((p) => [p.name, p.shape]))
  const S = {}, Tm = {}
  for (const name of inner) { const [a, b] = shapes[name]; S[name] = new Float64Array(a * a); Tm[name] = new Float64Array(a * b) }
  const lambdas = arg('--lambdas', '1e-3,1e-2,1e-1').split(',').map(Number)
  const mus = arg('--mus', '0').split(',').map(Number)
  // Preservation statistics: E[k kᵀ] of each inner weight's input over training-subject corpus sentences.
  const C0 = {}
  if (mus.some((x) => x > 0)) {
    const heldSubj = new Set(m.editRequests(wf, { subjects: 'heldOut', seed: 0 }).map((r) => r.subject))
    const sents = m.trainingCorpus(wf).filter((s) => ![...heldSubj].some((h) => s.includes(h)))
    const nS = Number(arg('--c0n', '3000'))
    let count = 0
    for (const name of inner) { const [a] = shapes[name]; C0[name] = new Float64Array(a * a) }
    for (let i = 0; i < Math.min(nS, sents.length); i += 16) {
      const rows = sents.slice(i, i + 16).map((x) => tok.encode(x))
      const W = Math.max(...rows.map((r) => r.length))
      const ids = rows.map((r) => [...r, ...new Array(W - r.length).fill(0)]), mask = rows.map((r) => [...r.map(() => 1), ...new Array(W - r.length).fill(0)])
      const labels = rows.map((r) => [...r, ...new Array(W - r.length).fill(-100)])
      const g = await model.lossAndGrad({ inputIds: ids, attentionMask: mask, labels }, { params: [], capture: inner })
      for (const name of inner) {
        const [din] = shapes[name]; const x = g.captures[name].x; const Cn = C0[name]
        for (let r = 0; r < rows.length; r++) for (let t = 0; t < rows[r].length; t++) {
          const k = x.data.subarray((r * W + t) * din, (r * W + t + 1) * din)
          for (let p = 0; p < din; p++) { const kp = k[p]; const off = p * din; for (let q = 0; q < din; q++) Cn[off + q] += kp * k[q] }
          if (name === inner[0]) count++
        }
      }
    }
    for (const name of inner) { const Cn = C0[name]; for (let i = 0; i < Cn.length; i++) Cn[i] /= count }
    log('C0 from', count, 'corpus keys of', Math.min(nS, sents.length), 'training-subject sentences')
  }
  const pre = await editor['preEdit'](normalise(editor, recs))
  let done = 0
  const tEdit = []
  for (let e = 0; e < recs.length; e++) {
    const r = recs[e]
    const b = buildEditBatch(tok, [r.prompt], [r.targetNew])
    const t0 = Date.now()
    const g = await model.lossAndGrad(b, { params: [], capture: inner })
    const { info } = await mend.edit(b, { returnFactors: true })
    for (const name of inner) {
      const [din, dout] = shapes[name]
      const { x, d } = g.captures[name]
      const rows = []
      for (let i = 0; i < x.shape[0]; i++) {
        const xs = x.data.subarray(i * din, (i + 1) * din), ds = d.data.subarray(i * dout, (i + 1) * dout)
        if (xs.some((v) => v !== 0) && ds.some((v) => v !== 0)) rows.push(i)
      }
      const f = info.factors[name]
      const A = alphaOf(mend, name)
      const Ut = f.u.data, Dt = f.d.data, n = rows.length
      if (n !== f.u.shape[0]) throw new Error('row mismatch')
      // V = A (K Ũᵀ) D̃  (n × dout); S += KᵀK; T += KᵀV
      const KU = new Float64Array(n * n)
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) { let s = 0; const ki = rows[i] * din; for (let q = 0; q < din; q++) s += x.data[ki + q] * Ut[j * din + q]; KU[i * n + j] = s }
      const V = new Float64Array(n * dout)
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) { const c = A * KU[i * n + j]; if (c === 0) continue; for (let o = 0; o < dout; o++) V[i * dout + o] += c * Dt[j * dout + o] }
      const Sn = S[name], Tn = Tm[name]
      for (const ri of rows) { const k = x.data.subarray(ri * din, (ri + 1) * din)
        for (let p = 0; p < din; p++) { const kp = k[p]; if (kp === 0) continue; const off = p * din; for (let q = 0; q < din; q++) Sn[off + q] += kp * k[q] } }
      rows.forEach((ri, i) => { const k = x.data.subarray(ri * din, (ri + 1) * din)
        for (let p = 0; p < din; p++) { const kp = k[p]; if (kp === 0) continue; const off = p * dout; for (let o = 0; o < dout; o++) Tn[off + o] += kp * V[i * dout + o] } })
    }
    tEdit.push(Date.now() - t0)
    if (ks.includes(e + 1)) {
      for (const lam of lambdas) for (const mu of mus) {
        const tensors = {}
        for (const p of model.parameters()) tensors[p.name] = Float32Array.from(model.parameter(p.name).data)
        for (const name of inner) {
          const [din, dout] = shapes[name]
          let Sx = S[name]
          if (mu > 0) { Sx = Float64Array.from(S[name]); const Cn = C0[name]; for (let i = 0; i < Sx.length; i++) Sx[i] += mu * Cn[i] }
          const dW = solveRidge(Sx, Tm[name], din, dout, lam)
          const W = tensors[name]
          for (let i = 0; i < W.length; i++) W[i] += dW[i]
        }
        const edited = await m.GPT2LMHeadModel.fromTensors(model.config, tensors)
        const ms = []
        const cases = normalise(editor, recs.slice(0, e + 1))
        for (let j = 0; j <= e; j++) ms.push({ pre: pre.pre[j], post: await editor['post'](edited, cases[j], pre.preLoc[j]) })
        const row = summarise(e + 1, ms)
        ;(out.lifelong[`${lam}/${mu}`] = out.lifelong[`${lam}/${mu}`] || []).push(row)
        log(`lifelong λ=${lam} μ=${mu}`, JSON.stringify(row))
        edited.dispose()
      }
      log(`edit+accumulate ms median ${median(tEdit)}`)
    }
  }
  fs.writeFileSync(`/tmp/ll/result-${frac}-${N}.json`, JSON.stringify(out, null, 2))
}
function alphaOf(mend, name) { const k = mend.config.innerParams.indexOf(name); return mend.editorSpec().editLrs[k] }
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }
function normalise(editor, recs) { return recs.map((r) => ({ prompt: r.prompt, targetNew: r.targetNew, groundTruth: r.groundTruth, rephrase: r.rephrasePrompts, locality: r.localityPrompts.map((l) => ({ prompt: l.prompt, answer: l.answer })), portability: [], greedy: true })) }
function summarise(k, ms) {
  const avg = (f) => { const xs = ms.map(f).filter((x) => typeof x === 'number'); return xs.length ? +(100 * xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(1) : undefined }
  return { edits: k, rel: avg((x) => x.post.rewrite_acc), gen: avg((x) => x.post.rephrase_acc), loc: avg((x) => x.post.locality), greedy: avg((x) => x.post.rewrite_greedy) }
}
// (S + λ·mean(diag S)·I)⁻¹ T by Cholesky, float64.
function solveRidge(S, T, n, m, lam) {
  let tr = 0; for (let i = 0; i < n; i++) tr += S[i * n + i]
  const reg = lam * Math.max(tr / n, 1e-12)
  const L = Float64Array.from(S)
  for (let i = 0; i < n; i++) L[i * n + i] += reg
  for (let j = 0; j < n; j++) {
    let d = L[j * n + j]
    for (let k = 0; k < j; k++) d -= L[j * n + k] * L[j * n + k]
    d = Math.sqrt(d); L[j * n + j] = d
    for (let i = j + 1; i < n; i++) { let s = L[i * n + j]; for (let k = 0; k < j; k++) s -= L[i * n + k] * L[j * n + k]; L[i * n + j] = s / d }
  }
  const X = Float64Array.from(T)
  for (let c = 0; c < m; c++) {
    for (let i = 0; i < n; i++) { let s = X[i * m + c]; for (let k = 0; k < i; k++) s -= L[i * n + k] * X[k * m + c]; X[i * m + c] = s / L[i * n + i] }
    for (let i = n - 1; i >= 0; i--) { let s = X[i * m + c]; for (let k = i + 1; k < n; k++) s -= L[k * n + i] * X[k * m + c]; X[i * m + c] = s / L[i * n + i] }
  }
  return Float32Array.from(X)
}
main().catch((e) => { console.error(e); process.exit(1) })
