// The lifelong mode (editor kind 'malmen', DESIGN §5b): the joint solve against a float64
// reference, the value shifts against the editor's own factors, order independence, supersession
// of a re-edited fact, exact undo and bit-exact replay at depth, the outer gradients through the
// solve against central differences, the editor file round trip, misuse, and a toy run where the
// lifelong mode holds sequential edits that classic MEND loses.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { GPT2LMHeadModel, MEND, EditTrainer, FunctionalGPT2LMHeadModel } from '../lib/index'
import { NativeRidge, numThreads, ridgeValueGradients, setNumThreads } from '../lib/core/native'
import { randn, rng } from './helpers/reference'
import { batch as batchOf, checkOuterGradients, randomSpec } from './helpers/editor-grads'
import type { EditRecord } from '../lib/model/functional'

const cfg = { nLayer: 2, nHead: 2, nEmbd: 8, vocabSize: 37, nPositions: 24 }
const inner = ['transformer.h.1.mlp.c_proj.weight', 'transformer.h.1.mlp.c_fc.weight', 'transformer.h.0.mlp.c_fc.weight']

/** A random SPD "covariance" (d, d): E[x xᵀ] of 4d random rows. */
function randomCov(d: number, r: () => number): Float32Array {
  const n = 4 * d, X = Array.from({ length: n }, () => Array.from({ length: d }, () => randn(r)))
  const C = new Float32Array(d * d)
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) { let s = 0; for (const x of X) s += x[i] * x[j]; C[i * d + j] = s / n }
  return C
}

function fact(r: () => number, T = 7, nTarget = 2) {
  const ids = Array.from({ length: T }, () => Math.floor(r() * cfg.vocabSize))
  return { inputIds: [ids], attentionMask: [ids.map(() => 1)], labels: [ids.map((v, i) => (i >= T - nTarget ? v : -100))] }
}

async function setup(seed: number, mu = 2, logRidge = Math.log(0.5)) {
  const model = await GPT2LMHeadModel.random(cfg, seed)
  const r = rng(seed + 100)
  const spec = randomSpec(new MEND(model, { innerParams: inner, rank: 4 }).editorSpec(), r)
  const classic = MEND.fromEditorSpec(model, spec, { innerParams: inner, rank: 4 })
  const keyCov: Record<string, Float32Array> = {}
  for (const name of inner) keyCov[name] = randomCov(model.parameter(name).shape[0], r)
  const ll = classic.withLifelong({ logRidge, mu, keyCov })
  return { model, r, classic, ll, keyCov, spec }
}

/** ΔW of every inner param of an edited model (materialized weights − base), float64. */
async function deltas(model: GPT2LMHeadModel, edited: FunctionalGPT2LMHeadModel): Promise<Record<string, Float64Array>> {
  const m = await edited.materialize()
  const out: Record<string, Float64Array> = {}
  for (const name of inner) {
    const a = m.parameter(name).data, b = model.parameter(name).data
    out[name] = Float64Array.from(a, (x, i) => x - b[i])
  }
  return out
}

/** (μC0 + e^λ I + ΣKᵀK)⁻¹ ΣKᵀV in float64 by Gauss-Jordan on the normal equations. */
function referenceSolve(din: number, dout: number, rows: { k: Float32Array; v: Float32Array }[], C0: Float32Array, mu: number, ridge: number): Float64Array {
  const S = new Float64Array(din * din), T = new Float64Array(din * dout)
  for (let i = 0; i < din * din; i++) S[i] = mu * C0[i]
  for (let i = 0; i < din; i++) S[i * din + i] += ridge
  for (const { k, v } of rows) {
    const n = k.length / din
    for (let r = 0; r < n; r++) for (let p = 0; p < din; p++) {
      const kp = k[r * din + p]
      for (let q = 0; q < din; q++) S[p * din + q] += kp * k[r * din + q]
      for (let o = 0; o < dout; o++) T[p * dout + o] += kp * v[r * dout + o]
    }
  }
  // solve S X = T
  const A = Float64Array.from(S), X = Float64Array.from(T)
  for (let c = 0; c < din; c++) {
    let piv = c
    for (let i = c + 1; i < din; i++) if (Math.abs(A[i * din + c]) > Math.abs(A[piv * din + c])) piv = i
    for (let j = 0; j < din; j++) { const x = A[c * din + j]; A[c * din + j] = A[piv * din + j]; A[piv * din + j] = x }
    for (let j = 0; j < dout; j++) { const x = X[c * dout + j]; X[c * dout + j] = X[piv * dout + j]; X[piv * dout + j] = x }
    const d = A[c * din + c]
    for (let i = 0; i < din; i++) {
      if (i === c) continue
      const f = A[i * din + c] / d
      if (f === 0) continue
      for (let j = 0; j < din; j++) A[i * din + j] -= f * A[c * din + j]
      for (let j = 0; j < dout; j++) X[i * dout + j] -= f * X[c * dout + j]
    }
  }
  for (let i = 0; i < din; i++) for (let j = 0; j < dout; j++) X[i * dout + j] /= A[i * din + i]
  return X
}

/**
 * ΔW against its float64 reference: the largest difference, and the largest as a fraction of the
 * float32 bound (W + ΔW is stored in float32: its rounding, |W + ΔW|·2⁻²³, on top of float32 keys).
 */
function againstFloat32Bound(got: Float64Array, ref: Float64Array, W: Float32Array): { worst: number; max: number } {
  let worst = 0, max = 0
  for (let i = 0; i < ref.length; i++) {
    const tol = 2 ** -23 * Math.abs(W[i] + ref[i]) + 1e-6 * Math.abs(ref[i])
    worst = Math.max(worst, Math.abs(got[i] - ref[i]) / (tol + 1e-12)); max = Math.max(max, Math.abs(got[i] - ref[i]))
  }
  return { worst, max }
}

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): { err: number; max: number } {
  let d = 0, m = 0
  for (let i = 0; i < a.length; i++) { d = Math.max(d, Math.abs(a[i] - b[i])); m = Math.max(m, Math.abs(b[i])) }
  return { err: d / Math.max(m, 1e-30), max: d }
}

t.test('the joint solve over the log matches a float64 reference, and the value shifts are α(k·ũ)d̃', async (t) => {
  const { model, r, classic, ll, keyCov } = await setup(1)
  t.equal(ll.kind, 'malmen'); t.equal(classic.kind, 'mend')
  let cur = ll as MEND
  const facts = Array.from({ length: 6 }, () => fact(r))
  for (const f of facts) cur = (await cur.edit(f)).edited
  const fm = cur.model as FunctionalGPT2LMHeadModel
  t.equal(fm.edits.length, 6)
  const got = await deltas(model, fm)
  for (const name of inner) {
    const [din, dout] = model.parameter(name).shape
    const ref = referenceSolve(din, dout, fm.edits.map((e) => ({ k: e.lifelong!.rows[name].k.data, v: e.lifelong!.rows[name].v.data })), keyCov[name], 2, 0.5)
    const W = model.parameter(name).data
    const { worst, max } = againstFloat32Bound(got[name], ref, W)
    t.ok(worst <= 1, `ΔW of ${name} (${din}×${dout}) after 6 edits vs float64 reference: max |diff| ${max.toExponential(2)} (${worst.toFixed(2)} of the float32 bound)`)
  }
  // The value shifts against the classic editor's own factors on the base: v_i = α (k_i·ũ_i) d̃_i.
  const f0 = facts[0]
  const { info } = await classic.edit(f0, { returnFactors: true })
  const { info: li } = await ll.edit(f0, { returnFactors: true })
  const g = await model.lossAndGrad(f0, { params: [], capture: inner })
  inner.forEach((name, k) => {
    const [din, dout] = model.parameter(name).shape
    const { u, d } = info.factors![name]
    const rows = li.rows![name]
    const alpha = classic.editorSpec().editLrs[k]
    const x = g.captures[name].x.data
    const kept: number[] = []
    for (let i = 0; i < x.length / din; i++) {
      const xs = x.subarray(i * din, (i + 1) * din), ds = g.captures[name].d.data.subarray(i * dout, (i + 1) * dout)
      if (xs.some((v) => v !== 0) && ds.some((v) => v !== 0)) kept.push(i)
    }
    t.equal(rows.k.shape[0], kept.length, `${name}: one key per kept row (${kept.length})`)
    const want = new Float64Array(kept.length * dout), keys = new Float64Array(kept.length * din)
    kept.forEach((ri, i) => {
      let dot = 0
      for (let q = 0; q < din; q++) { dot += x[ri * din + q] * u.data[i * din + q]; keys[i * din + q] = x[ri * din + q] }
      for (let o = 0; o < dout; o++) want[i * dout + o] = alpha * dot * d.data[i * dout + o]
    })
    const ek = relErr(rows.k.data, keys), ev = relErr(rows.v.data, want)
    t.ok(ek.max === 0 && ev.err < 1e-5, `${name}: keys are the captured rows (max |diff| ${ek.max}), values v = α(k·ũ)d̃ (rel ${ev.err.toExponential(2)})`)
  })
})

t.test('a batch of more rows than one Woodbury step takes (256) is solved exactly, in blocks', async (t) => {
  const { model, r, ll, keyCov } = await setup(5)
  // 160 requests of 7 tokens: every inner weight gets more than 256 key rows in one update.
  const facts = Array.from({ length: 160 }, () => fact(r))
  const batch = { inputIds: facts.map((f) => f.inputIds[0]), attentionMask: facts.map((f) => f.attentionMask[0]), labels: facts.map((f) => f.labels[0]) }
  const fm = (await ll.edit(batch)).edited.model as FunctionalGPT2LMHeadModel
  const got = await deltas(model, fm)
  for (const name of inner) {
    const [din, dout] = model.parameter(name).shape
    const rows = fm.edits[0].lifelong!.rows[name]
    t.ok(rows.k.shape[0] > 256, `${name}: ${rows.k.shape[0]} key rows in one update`)
    const ref = referenceSolve(din, dout, [{ k: rows.k.data, v: rows.v.data }], keyCov[name], 2, 0.5)
    const W = model.parameter(name).data
    const { worst, max } = againstFloat32Bound(got[name], ref, W)
    t.ok(worst <= 1, `ΔW of ${name} (${din}×${dout}) after one batch of 160 vs float64 reference: max |diff| ${max.toExponential(2)} (${worst.toFixed(2)} of the float32 bound)`)
  }
})

t.test('order independence, supersession, exact undo at depth and bit-exact replay', async (t) => {
  const { model, r, ll } = await setup(2)
  const facts = Array.from({ length: 5 }, () => fact(r))
  const run = async (order: number[]) => {
    let cur = ll as MEND
    for (const i of order) cur = (await cur.edit(facts[i], { request: { i } })).edited
    return cur.model as FunctionalGPT2LMHeadModel
  }
  const a = await run([0, 1, 2, 3, 4]), b = await run([3, 1, 4, 0, 2])
  const da = await deltas(model, a), db = await deltas(model, b)
  for (const name of inner) {
    const e = relErr(db[name], da[name])
    t.ok(e.err < 1e-5, `${name}: ΔW of the same 5 edits in another order agrees to ${e.err.toExponential(2)} (float64 state, float32 weights)`)
  }

  // Supersession: the same prompt edited twice; the second wins, the first leaves the solve.
  const first = fact(r), second = { ...first, inputIds: [first.inputIds[0].map((v, i) => (i >= 5 ? (v + 1) % cfg.vocabSize : v))] }
  second.labels = [second.inputIds[0].map((v, i) => (i >= 5 ? v : -100))]
  let cur = (await ll.edit(facts[0])).edited
  cur = (await cur.edit(first)).edited
  cur = (await cur.edit(second)).edited
  const fm = cur.model as FunctionalGPT2LMHeadModel
  t.same(fm.liveEdits, [true, false, true], 'the re-edit supersedes the first edit of the fact')
  const only = ((await (await ll.edit(facts[0])).edited.edit(second)).edited.model) as FunctionalGPT2LMHeadModel
  const ds = await deltas(model, fm), dOnly = await deltas(model, only)
  for (const name of inner) {
    const e = relErr(ds[name], dOnly[name])
    t.ok(e.err < 1e-5, `${name}: superseded = never made (rel ${e.err.toExponential(2)})`)
  }
  const back = await fm.without(2)
  t.same(back.liveEdits, [true, true], 'removing the re-edit brings the first edit back')
  const firstOnly = ((await (await ll.edit(facts[0])).edited.edit(first)).edited.model) as FunctionalGPT2LMHeadModel
  const probe = fact(r, 9, 3)
  const lb = (await back.forward(probe)).logits.data, lf = (await firstOnly.forward(probe)).logits.data
  t.ok(lb.every((v, i) => v === lf[i]), 'without(re-edit) is bit-identical to the log without it')

  // Depth 40: without(i) is bit-identical to a fresh log without edit i; a saved log replays bit for bit.
  let deep = ll as MEND
  const many = Array.from({ length: 40 }, () => fact(r))
  for (const f of many) deep = (await deep.edit(f)).edited
  const dm = deep.model as FunctionalGPT2LMHeadModel
  const w17 = await dm.without(17)
  let fresh = ll as MEND
  for (const [i, f] of many.entries()) if (i !== 17) fresh = (await fresh.edit(f)).edited
  const x1 = (await w17.forward(probe)).logits.data, x2 = (await (fresh.model as FunctionalGPT2LMHeadModel).forward(probe)).logits.data
  t.ok(x1.every((v, i) => v === x2[i]), 'without(17) at depth 40 is bit-identical to the 39 other edits made afresh')
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-ll-'))
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
  const file = path.join(tmp, 'log.safetensors')
  await dm.saveEdits(file)
  const replay = await ll.loadEdits(file)
  const y1 = (await dm.forward(probe)).logits.data, y2 = (await replay.model.forward(probe)).logits.data
  t.ok(y1.every((v, i) => v === y2[i]), 'a saved lifelong log replays bit for bit')
  await t.rejects(FunctionalGPT2LMHeadModel.loadEdits(model, file), { code: 'ERR_INVALID_ARG' }, 'a lifelong log needs its editor to load')
  await t.rejects(FunctionalGPT2LMHeadModel.fromEdits(model, dm.edits as EditRecord[]), { code: 'ERR_INVALID_ARG' }, 'fromEdits of lifelong records without the editor')
  await t.rejects((deep as MEND).edit({ ...many[0], labels: [many[0].labels[0].map(() => -100)] }), { code: 'ERR_NO_TARGET_TOKENS' })
})

t.test('a batch of B rows is B edits: the same solve as B single edits', async (t) => {
  const { model, r, ll } = await setup(5)
  const T = 7
  const rows = Array.from({ length: 3 }, () => fact(r, T))
  const batch = { inputIds: rows.map((f) => f.inputIds[0]), attentionMask: rows.map((f) => f.attentionMask[0]), labels: rows.map((f) => f.labels[0]) }
  const one = (await ll.edit(batch)).edited.model as FunctionalGPT2LMHeadModel
  let seq = ll as MEND
  for (const f of rows) seq = (await seq.edit(f)).edited
  const a = await deltas(model, one), b = await deltas(model, seq.model as FunctionalGPT2LMHeadModel)
  for (const name of inner) {
    const e = relErr(a[name], b[name])
    t.ok(e.err < 1e-5, `${name}: one batch of 3 vs 3 single edits, rel ${e.err.toExponential(2)}`)
  }
  // The μ schedule counts requests, not log entries: a batch of 3 is 3 edits (μ of the step holding 3).
  const sched = ll.withLifelong({ muSchedule: [{ upTo: 1, mu: 0.25 }] })
  const oneS = (await sched.edit(batch)).edited.model as FunctionalGPT2LMHeadModel
  t.equal(oneS.edits[0].lifelong!.requests, 3, 'the batch edit records its 3 requests')
  let seqS = sched as MEND
  for (const f of rows) seqS = (await seqS.edit(f)).edited
  const c = await deltas(model, oneS), d = await deltas(model, seqS.model as FunctionalGPT2LMHeadModel)
  let worst = 0
  for (const name of inner) worst = Math.max(worst, relErr(c[name], d[name]).err, relErr(c[name], a[name]).err)
  t.ok(worst < 1e-5, `with a μ schedule, one batch of 3 = 3 single edits = the solve with μ beyond the first step (worst rel ${worst.toExponential(2)})`)
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-ll-'))
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
  await oneS.saveEdits(path.join(tmp, 'log.safetensors'))
  const back = (await sched.loadEdits(path.join(tmp, 'log.safetensors'))).model as FunctionalGPT2LMHeadModel
  t.equal(back.edits[0].lifelong!.requests, 3, 'the saved log keeps the request count')
  const e2 = await deltas(model, back)
  t.ok(inner.every((n) => e2[n].every((v, i) => v === c[n][i])), 'and replays bit for bit')
  // Gradient refinement with weighting 'token' sums every target token's loss, so one batch refines
  // like its rows as single edits, whatever their target lengths (1, 2 and 3 tokens here); with
  // weighting 'edit' the batch is one mean over its tokens and the single edits three means.
  const mixed = [1, 2, 3].map((n) => fact(r, T, n))
  const mixedBatch = { inputIds: mixed.map((f) => f.inputIds[0]), attentionMask: mixed.map((f) => f.attentionMask[0]), labels: mixed.map((f) => f.labels[0]) }
  const asBatch = (await ll.edit(mixedBatch)).edited
  let asSingles = ll as MEND
  for (const f of mixed) asSingles = (await asSingles.edit(f)).edited
  const apart = async (weighting: 'edit' | 'token') => {
    const x = await deltas(model, (await asBatch.refine({ method: 'gradient', rounds: 3, weighting })).model as FunctionalGPT2LMHeadModel)
    const y = await deltas(model, (await asSingles.refine({ method: 'gradient', rounds: 3, weighting })).model as FunctionalGPT2LMHeadModel)
    return Math.max(...inner.map((n) => relErr(x[n], y[n]).err))
  }
  const byToken = await apart('token'), byEdit = await apart('edit')
  t.ok(byToken < 1e-4, `weighting 'token': one refined batch of 3 vs 3 refined single edits, worst rel ΔW difference ${byToken.toExponential(2)}`)
  t.ok(byEdit > 100 * byToken, `weighting 'edit' weighs them differently: worst rel ΔW difference ${byEdit.toExponential(2)}`)
})

t.test('the editor file records the lifelong kind and its key covariance', async (t) => {
  const { model, r, ll } = await setup(3)
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-ll-'))
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
  const file = path.join(tmp, 'editor.safetensors')
  await ll.save(file)
  const back = await MEND.fromPretrained(model, file)
  t.equal(back.kind, 'malmen'); t.equal(back.config.mu, 2); t.equal(back.config.logRidge, Math.log(0.5))
  const f = fact(r)
  const a = (await (await ll.edit(f)).edited.model.forward(f)).logits.data
  const b = (await (await back.edit(f)).edited.model.forward(f)).logits.data
  t.ok(a.every((v, i) => v === b[i]), 'a reloaded lifelong editor edits bit-identically')
  t.throws(() => ll.withLifelong({ mu: 1, keyCov: { [inner[0]]: new Float32Array(3) } }), { code: 'ERR_SHAPE_MISMATCH' })
  t.throws(() => new MEND(model, { innerParams: inner, rank: 4, kind: 'malmen', mu: 1 }), { code: 'ERR_INVALID_ARG' }, 'mu > 0 without a key covariance')
  t.throws(() => new MEND(model, { innerParams: inner, kind: 'other' as 'mend' }), { code: 'ERR_INVALID_ARG' })
  // A C0 that is not a covariance (here −I) leaves μ·C0 + e^λ·I indefinite: a coded error that names the weight and the settings.
  const negCov = Object.fromEntries(inner.map((n) => { const d = model.parameter(n).shape[0]; const c = new Float32Array(d * d); for (let i = 0; i < d; i++) c[i * d + i] = -1; return [n, c] }))
  const bad = ll.withLifelong({ mu: 2, keyCov: negCov })
  await t.rejects(bad.edit(f), { code: 'ERR_INVALID_ARG', message: /is not positive definite in float64 \(mu 2, log ridge -0\.69/ }, 'an indefinite prior is refused with its settings in the message')
  const again = (await (await ll.edit(f)).edited.model.forward(f)).logits.data
  t.ok(again.every((v, i) => v === a[i]), 'and the good controller still edits as before')
})

t.test('the μ schedule: each depth is the solve with its step\'s μ; undo, supersession and replay across steps', async (t) => {
  const { model, r, ll } = await setup(6)
  const muSchedule = [{ upTo: 1, mu: 0.25 }, { upTo: 4, mu: 1 }]
  const sched = ll.withLifelong({ muSchedule })
  t.same(sched.config.muSchedule, muSchedule); t.equal(sched.config.mu, 2)
  const facts = Array.from({ length: 7 }, () => fact(r))
  let cur = sched as MEND
  const states: FunctionalGPT2LMHeadModel[] = []
  for (const f of facts) { cur = (await cur.edit(f)).edited; states.push(cur.model as FunctionalGPT2LMHeadModel) }
  // After n edits: the constant-μ solve of those n edits, with μ(n) = 0.25, 1, 1, 1, 2, 2, 2.
  const muOf = (n: number) => (n <= 1 ? 0.25 : n <= 4 ? 1 : 2)
  for (const n of [1, 2, 4, 5, 7]) {
    const fixed = await ll.withLifelong({ mu: muOf(n), muSchedule: [] }).fromEdits(states[n - 1].edits as EditRecord[])
    const a = await deltas(model, states[n - 1]), b = await deltas(model, fixed.model)
    let worst = 0
    for (const name of inner) worst = Math.max(worst, relErr(a[name], b[name]).err)
    t.ok(worst < 1e-5, `after ${n} edits: ΔW equals the solve with μ = ${muOf(n)} (worst rel ${worst.toExponential(2)})`)
  }
  // Undo across a step (7 -> 6 live edits stays in the last step; 5 -> 4 enters the middle one).
  const probe = fact(r, 9, 3)
  const logits = async (m: FunctionalGPT2LMHeadModel) => (await m.forward(probe)).logits.data
  const w = await states[4].without(2)
  let fresh = sched as MEND
  for (const [i, f] of facts.slice(0, 5).entries()) if (i !== 2) fresh = (await fresh.edit(f)).edited
  const [x1, x2] = [await logits(w), await logits(fresh.model as FunctionalGPT2LMHeadModel)]
  t.ok(x1.every((v, i) => v === x2[i]), 'without(2) of 5 edits (back into the μ = 1 step) is bit-identical to the 4 others made afresh')
  // A re-edit of a fact keeps the live count: it supersedes within the step.
  const again = { ...facts[6], labels: facts[6].labels }
  const sup = (await cur.edit(again)).edited.model as FunctionalGPT2LMHeadModel
  t.equal(sup.liveEdits.filter(Boolean).length, 7, 'the re-edit supersedes: still 7 live edits')
  // Rebuilding a log (one native call with the append chain's updates) gives the chain's weights bit for bit.
  for (const [what, m] of [['7 edits across two steps', states[6]], ['a superseded edit', sup], ['5 edits, one undone', w]] as const) {
    const rebuilt = (await sched.fromEdits(m.edits as EditRecord[])).model as FunctionalGPT2LMHeadModel
    const [a, b] = [await deltas(model, m), await deltas(model, rebuilt)]
    t.ok(inner.every((n) => a[n].every((v, i) => v === b[n][i])), `the log of ${what} rebuilds bit for bit`)
  }
  // A saved log replays bit for bit through the steps; the schedule round-trips in the editor file.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-ll-'))
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
  await states[6].saveEdits(path.join(tmp, 'log.safetensors'))
  const replay = await sched.loadEdits(path.join(tmp, 'log.safetensors'))
  const [y1, y2] = [await logits(states[6]), await logits(replay.model)]
  t.ok(y1.every((v, i) => v === y2[i]), 'a saved log of 7 edits replays bit for bit across the schedule\'s steps')
  await sched.save(path.join(tmp, 'editor.safetensors'))
  const back = await MEND.fromPretrained(model, path.join(tmp, 'editor.safetensors'))
  t.same(back.config.muSchedule, muSchedule, 'the editor file keeps the μ schedule')
  // A step's value scale multiplies its solve's ΔW (the solve is linear in the values); beyond it, none.
  const scaled = ll.withLifelong({ muSchedule: [{ upTo: 2, mu: 1, scale: 1.5 }] })
  let sc = scaled as MEND
  for (const f of facts.slice(0, 2)) sc = (await sc.edit(f)).edited
  const plain = await ll.withLifelong({ mu: 1, muSchedule: [] }).fromEdits((sc.model as FunctionalGPT2LMHeadModel).edits as EditRecord[])
  const dS = await deltas(model, sc.model as FunctionalGPT2LMHeadModel), dP = await deltas(model, plain.model)
  let worstS = 0
  for (const name of inner) worstS = Math.max(worstS, relErr(dS[name], Float64Array.from(dP[name], (v) => 1.5 * v)).err)
  t.ok(worstS < 1e-5, `scale 1.5 in the μ = 1 step: ΔW = 1.5 × the unscaled solve (worst rel ${worstS.toExponential(2)})`)
  sc = (await sc.edit(facts[2])).edited
  const beyond = await ll.withLifelong({ mu: 2, muSchedule: [] }).fromEdits((sc.model as FunctionalGPT2LMHeadModel).edits as EditRecord[])
  const dB = await deltas(model, sc.model as FunctionalGPT2LMHeadModel), dB2 = await deltas(model, beyond.model)
  t.ok(inner.every((n) => relErr(dB[n], dB2[n]).err < 1e-5), 'the third edit leaves the scaled step: the unscaled μ = 2 solve')
  await scaled.save(path.join(tmp, 'scaled.safetensors'))
  t.same((await MEND.fromPretrained(model, path.join(tmp, 'scaled.safetensors'))).config.muSchedule, [{ upTo: 2, mu: 1, scale: 1.5 }], 'the editor file keeps the scale')
  // Bad schedules are refused with a coded error and change nothing.
  for (const bad of [[{ upTo: 0, mu: 1 }], [{ upTo: 3, mu: 1 }, { upTo: 3, mu: 2 }], [{ upTo: 2, mu: -1 }], [{ upTo: 1.5, mu: 1 }], [{ upTo: 1, mu: 1, scale: 0 }], [{ upTo: 1, mu: 1, scale: 'x' }], 'x']) {
    t.throws(() => ll.withLifelong({ muSchedule: bad as never }), { code: 'ERR_INVALID_ARG' }, `muSchedule ${JSON.stringify(bad)} is refused`)
  }
})

const batch = (r: () => number, B: number, T: number, nTarget: number) => batchOf(r, cfg.vocabSize, B, T, nTarget)

t.test('outer gradients through the lifelong solve match central differences', async (t) => {
  const { model, r, spec, keyCov } = await setup(4, 1.5, Math.log(0.3))
  // Solved on top of a background log of 3 edits (the state EditTrainer.setLifelongBackground uses).
  const ll = MEND.fromEditorSpec(model, spec, { innerParams: inner, rank: 4, kind: 'malmen', mu: 1.5, logRidge: Math.log(0.3) }, keyCov)
  let bg = ll as MEND
  for (let i = 0; i < 3; i++) bg = (await bg.edit(fact(r))).edited
  const prior = (bg.model as FunctionalGPT2LMHeadModel).solverState as NativeRidge
  const edit = batch(r, 3, 7, 2), outer = batch(r, 2, 6, 2), loc = batch(r, 2, 6, 0)
  loc.labels = null
  // The loss is strongly curved through the solve (M⁻¹ of the keys): a smaller step than test/40's.
  await checkOuterGradients(t, { model: model.native, spec, edit, outer, loc, r, cedit: 0.7, cloc: 1.3, malmenPrior: prior, eps: (name) => (name === 'edit_lrs' ? 1e-3 : 2e-3) })
  // EditTrainer takes the prior from a lifelong controller.
  const trainer = new EditTrainer(ll, { accumulateBs: 1000 })
  trainer.setLifelongBackground(bg.model as FunctionalGPT2LMHeadModel)
  const ev = await trainer.evaluate({ edit: { inputIds: [Array.from(edit.ids.subarray(0, 7))], labels: [Array.from(edit.labels!.subarray(0, 7))] }, loc: { inputIds: [Array.from(loc.ids.subarray(0, 6))] } })
  t.ok(Number.isFinite(ev.total), `a lifelong EditTrainer evaluates (total ${ev.total.toFixed(4)})`)
  // A checkpoint of a lifelong trainer resumes as one (with its C0).
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-ll-ck-'))
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
  const ck = path.join(tmp, 'ck.safetensors')
  await trainer.saveCheckpoint(ck)
  const resumed = await EditTrainer.resume(model, ck)
  t.equal(resumed.mend.kind, 'malmen', 'resumed as a lifelong trainer')
  t.ok(inner.every((n) => resumed.mend.keyCovariance![n]!.every((v, i) => v === keyCov[n][i])), 'with the same key covariance')
})

t.test("refine({ method: 'gradient' }): ∂L/∂V through the solve against central differences, and rounds that lower the log's loss", async (t) => {
  const { r, ll } = await setup(61)
  let cur = ll
  for (let i = 0; i < 4; i++) cur = (await cur.edit(fact(r))).edited
  const fm = cur.model as FunctionalGPT2LMHeadModel
  const edits = fm.edits as EditRecord[]
  const batchOfRec = (e: EditRecord) => {
    const tk = e.lifelong!.tokens!
    return { inputIds: { data: tk.ids, shape: [tk.B, tk.T] }, labels: { data: tk.labels, shape: [tk.B, tk.T] }, ...(tk.mask ? { attentionMask: { data: tk.mask, shape: [tk.B, tk.T] } } : {}) }
  }
  const logLoss = async (f: FunctionalGPT2LMHeadModel) => { let s = 0; for (const e of f.edits) s += (await f.forward(batchOfRec(e))).loss!; return s }
  // G = ∂L/∂ΔW summed over the edits, then ∂L/∂V per (edit, weight) block by the native adjoint.
  const G = inner.map((n) => new Float64Array(fm.base.parameter(n).data.length))
  for (const e of edits) {
    const g = await fm.lossAndGrad(batchOfRec(e), { params: inner })
    inner.forEach((n, k) => { const d = g.grads[n].data; for (let j = 0; j < d.length; j++) G[k][j] += d[j] })
  }
  const blocks: { slot: number; k: Float32Array }[] = [], at: [number, string][] = []
  edits.forEach((e, i) => inner.forEach((n, k) => { const rows = e.lifelong!.rows[n]; if (rows && rows.k.shape[0] > 0) { blocks.push({ slot: k, k: rows.k.data }); at.push([i, n]) } }))
  const grads = await ridgeValueGradients(fm.solverState as NativeRidge, G.map((g) => Float32Array.from(g)), blocks)
  t.equal(grads.length, blocks.length, 'one ∂L/∂V per key block')
  // G given as one backward pass's captured rows per edit (G = Σ xᵀd, what refine passes): the same
  // ∂L/∂V as from the dense G, to float32 accuracy (G's sums are float32 GEMMs over the stacked rows).
  const factors: { slot: number; x: Float32Array; d: Float32Array }[] = []
  for (const e of edits) {
    const c = await fm.lossAndGrad(batchOfRec(e), { params: [], capture: inner })
    inner.forEach((n, k) => factors.push({ slot: k, x: c.captures[n].x.data, d: c.captures[n].d.data }))
  }
  const viaFactors = await ridgeValueGradients(fm.solverState as NativeRidge, inner.map(() => null), blocks, factors)
  let worstF = 0, normF = 0
  grads.forEach((g, b) => g.forEach((x, j) => { worstF = Math.max(worstF, Math.abs(x - viaFactors[b][j])); normF = Math.max(normF, Math.abs(x)) }))
  t.ok(worstF <= 1e-4 * normF, `∂L/∂V from captured factors vs from dense G: largest difference ${worstF.toExponential(2)} (largest |∂L/∂V| ${normF.toExponential(2)})`)
  await t.rejects(async () => ridgeValueGradients(fm.solverState as NativeRidge, inner.map(() => null), blocks, [{ slot: 0, x: new Float32Array(3), d: new Float32Array(3) }]),
    { code: 'ERR_INVALID_ARG', message: /shape/ }, 'factors of the wrong shape are refused')
  await t.rejects(async () => ridgeValueGradients(fm.solverState as NativeRidge, inner.map(() => null), blocks, []),
    { code: 'ERR_INVALID_ARG', message: /no gradient/ }, 'a key block of a weight without G or factors is refused')
  // Directional derivative along a random direction u of the values, against a central difference of
  // L(V ± εu) with the log solved again from its records (the same path refine takes).
  const u = grads.map((g) => Float32Array.from(g, () => randn(r)))
  let analytic = 0
  grads.forEach((g, b) => { for (let j = 0; j < g.length; j++) analytic += g[j] * u[b][j] })
  const shifted = (eps: number) => edits.map((e, i) => {
    const rows = { ...e.lifelong!.rows }
    at.forEach(([ei, n], b) => {
      if (ei !== i) return
      const o = rows[n]
      rows[n] = { k: o.k, v: { shape: o.v.shape, data: Float32Array.from(o.v.data, (x, j) => x + eps * u[b][j]) } }
    })
    return { ...e, lifelong: { ...e.lifelong!, rows } }
  })
  const eps = 1e-2
  const numeric = (await logLoss((await ll.fromEdits(shifted(eps))).model as FunctionalGPT2LMHeadModel) -
    await logLoss((await ll.fromEdits(shifted(-eps))).model as FunctionalGPT2LMHeadModel)) / (2 * eps)
  const rel = Math.abs(analytic - numeric) / Math.max(Math.abs(numeric), 1e-6)
  // ε = 1e-2: the central difference's truncation error and the float32 losses' rounding stay well below 5e-3 here
  t.ok(rel < 5e-3, `dL along u: adjoint ${analytic.toExponential(4)}, central difference ${numeric.toExponential(4)} (relative difference ${rel.toExponential(2)})`)
  // Rounds: each accepted one lowers the log's loss; progress reports every round; the records hold the refined values, so replay is exact.
  const before = await logLoss(fm)
  const seen: number[] = []
  const refined = await cur.refine({ method: 'gradient', rounds: 3, onProgress: (d) => seen.push(d) })
  const rf = refined.model as FunctionalGPT2LMHeadModel
  const after = await logLoss(rf)
  t.ok(after < before, `3 rounds lower the log's edit loss: ${before.toFixed(4)} -> ${after.toFixed(4)}`)
  t.equal(seen[seen.length - 1], 3, 'onProgress ends at the rounds asked for')
  const replayed = (await ll.fromEdits(rf.edits as EditRecord[])).model as FunctionalGPT2LMHeadModel
  const a = (await rf.forward(batchOfRec(edits[0]))).logits.data, b2 = (await replayed.forward(batchOfRec(edits[0]))).logits.data
  t.ok(a.every((x, i) => x === b2[i]), 'the refined log replays bit for bit from its records')
  // The line search's candidates move ΔW by c·P·ΣKᵀv without a solve: the model equals the moved log solved again, to float32 accuracy.
  const solver = fm.solver as unknown as { scaleOf: (e: readonly EditRecord[]) => number; shifted: (p: FunctionalGPT2LMHeadModel, m: { slot: number; k: Float32Array; v: Float32Array }[], c: number[]) => Promise<FunctionalGPT2LMHeadModel[]> }
  const moves = blocks.map((b, j) => ({ ...b, v: u[j] }))
  const [cand] = await solver.shifted(fm, moves, [0.05 * solver.scaleOf(edits)])
  const solved = (await ll.fromEdits(shifted(0.05))).model as FunctionalGPT2LMHeadModel
  const lc = (await cand.forward(batchOfRec(edits[1]))).logits.data, ls = (await solved.forward(batchOfRec(edits[1]))).logits.data
  let worstS = 0, moveS = 0
  const l0 = (await fm.forward(batchOfRec(edits[1]))).logits.data
  lc.forEach((x, i) => { worstS = Math.max(worstS, Math.abs(x - ls[i])); moveS = Math.max(moveS, Math.abs(ls[i] - l0[i])) })
  t.ok(moveS > 1e-3 && worstS <= 1e-3 * moveS + 1e-5, `a shifted candidate vs the moved log solved again: logits differ by ${worstS.toExponential(2)} (the move changed them by up to ${moveS.toExponential(2)})`)
  // The refined log does not depend on the thread count (on this small model, whose GEMMs take no
  // thread-split path; the adjoint, the candidates and the solve never do).
  const threads = numThreads()
  setNumThreads(threads === 1 ? 2 : 1)
  const one = (await cur.refine({ method: 'gradient', rounds: 3 })).model as FunctionalGPT2LMHeadModel
  setNumThreads(threads)
  const a1 = (await one.forward(batchOfRec(edits[0]))).logits.data
  t.ok(a1.every((x, i) => x === a[i]), `refine gives the same bits on ${threads === 1 ? 2 : 1} thread(s) as on ${threads}`)
  // weighting 'token': the loss sums every target token's loss (each edit's mean × its target tokens); rounds lower that sum.
  const nTok = (e: EditRecord) => e.lifelong!.tokens!.labels.filter((x) => x !== -100).length
  const tokLoss = async (f: FunctionalGPT2LMHeadModel) => { let s = 0; for (const e of f.edits) s += nTok(e) * (await f.forward(batchOfRec(e))).loss!; return s }
  const byToken = (await cur.refine({ method: 'gradient', rounds: 3, weighting: 'token' })).model as FunctionalGPT2LMHeadModel
  const tb = await tokLoss(fm), ta = await tokLoss(byToken)
  t.ok(ta < tb, `3 rounds weighting 'token' lower the log's summed token loss: ${tb.toFixed(4)} -> ${ta.toFixed(4)} (target tokens per edit: ${edits.map(nTok).join(', ')})`)
  await t.rejects(cur.refine({ method: 'gradient', weighting: 'row' as never }), { code: 'ERR_INVALID_ARG', message: /weighting/ })
  await t.rejects(cur.refine({ method: 'editor', weighting: 'token' }), { code: 'ERR_INVALID_ARG', message: /method 'gradient'/ })
  await t.rejects(cur.refine({ method: 'gradient', step: 0.1 }), { code: 'ERR_INVALID_ARG', message: /steps/ })
  await t.rejects(cur.refine({ method: 'gradient', momentum: 1 }), { code: 'ERR_INVALID_ARG', message: /momentum/ })
  await t.rejects(cur.refine({ method: 'gradient', steps: [] }), { code: 'ERR_INVALID_ARG', message: /steps/ })
  await t.rejects(cur.refine({ method: 'newton' as never }), { code: 'ERR_INVALID_ARG', message: /method/ })
  await t.rejects(cur.refine({ momentum: 0.5 }), { code: 'ERR_INVALID_ARG', message: /method 'gradient'/ })
  // The method as an editor setting: a controller configured for it refines by gradient by default,
  // the same bits as the explicit call, and its editor file keeps the setting.
  const byConfig = ll.withLifelong({ refine: { rounds: 3, step: 0.1, method: 'gradient', momentum: 0.5, steps: [0.005, 0.01, 0.02] } })
  t.same(byConfig.config.refine, { rounds: 3, step: 0.1, method: 'gradient', momentum: 0.5, steps: [0.005, 0.01, 0.02] })
  const cfgRefined = (await (await byConfig.fromEdits(edits)).refine()).model as FunctionalGPT2LMHeadModel
  const x = (await cfgRefined.forward(batchOfRec(edits[0]))).logits.data
  t.ok(x.every((v, i) => v === a[i]), 'refine() with method gradient in the config = refine({ method: gradient, rounds: 3 }), bit for bit')
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-grad-'))
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
  await byConfig.save(path.join(tmp, 'e.safetensors'))
  const back = await MEND.fromPretrained(fm.base, path.join(tmp, 'e.safetensors'))
  t.same(back.config.refine, byConfig.config.refine, 'the editor file keeps the gradient refinement settings')
  t.throws(() => ll.withLifelong({ refine: { rounds: 3, step: 0.1, momentum: 0.5 } }), { code: 'ERR_INVALID_ARG', message: /method 'gradient'/ })
  t.throws(() => ll.withLifelong({ refine: { rounds: 3, step: 0.1, method: 'gradient', steps: [0] } }), { code: 'ERR_INVALID_ARG', message: /steps/ })
})

t.test('refine: each round adds step × the editor\'s proposal on the edited model and solves again', async (t) => {
  const { model, r, ll, spec, keyCov } = await setup(7)
  const facts = Array.from({ length: 6 }, () => fact(r))
  let cur = ll as MEND
  for (const f of facts) cur = (await cur.edit(f)).edited
  const fm = cur.model as FunctionalGPT2LMHeadModel
  const step = 0.3
  const one = await cur.refine({ rounds: 1, step, monotone: false })
  const rm = one.model as FunctionalGPT2LMHeadModel
  t.equal(rm.edits.length, facts.length, 'the refined log holds the same edits')

  // Reference: the same editor on the materialized edited model proposes each edit's value shifts.
  const live = await fm.materialize()
  const onLive = MEND.fromEditorSpec(live, spec, { innerParams: inner, rank: 4, kind: 'malmen', logRidge: Math.log(0.5), mu: 2 }, keyCov)
  let worst = 0, worstName = ''
  for (const [i, f] of facts.entries()) {
    const { info } = await onLive.edit(f, { returnFactors: true })
    for (const name of inner) {
      const old = fm.edits[i].lifelong!.rows[name], got = rm.edits[i].lifelong!.rows[name], p = info.rows![name]
      t.same(got.k.data, old.k.data, `edit ${i} ${name}: keys stay the base's`)
      const want = Float64Array.from(old.v.data, (v, j) => v + step * p.v.data[j])
      const e = relErr(got.v.data, want)
      if (e.err > worst) { worst = e.err; worstName = `edit ${i} ${name}` }
    }
  }
  t.ok(worst < 1e-5, `refined values = old + step × proposal on the materialized model (largest relative difference ${worst.toExponential(2)}, ${worstName})`)

  const again = await ll.fromEdits(rm.edits as EditRecord[])
  const probe = fact(r, 9, 3)
  const a = (await one.model.forward(probe)).logits.data, b = (await again.model.forward(probe)).logits.data
  t.ok(a.every((v, i) => v === b[i]), 'the refined model is the solve of its records, bit for bit')

  // Two rounds = one round of the once-refined log; the result does not depend on the order of the edits.
  const two = await cur.refine({ rounds: 2, step, monotone: false })
  const twoB = await one.refine({ rounds: 1, step, monotone: false })
  const x1 = (await two.model.forward(probe)).logits.data, x2 = (await twoB.model.forward(probe)).logits.data
  t.ok(x1.every((v, i) => v === x2[i]), 'refine({ rounds: 2 }) = refine twice, bit for bit')
  let rev = ll as MEND
  for (const f of [...facts].reverse()) rev = (await rev.edit(f)).edited
  const d1 = await deltas(model, (await cur.refine({ rounds: 2, step, monotone: false })).model as FunctionalGPT2LMHeadModel)
  const d2 = await deltas(model, (await rev.refine({ rounds: 2, step, monotone: false })).model as FunctionalGPT2LMHeadModel)
  const d0 = await deltas(model, fm)
  for (const name of inner) {
    const e = relErr(d2[name], d1[name]), moved = relErr(d1[name], d0[name])
    t.ok(moved.err > 1e-3, `${name}: refinement moves ΔW (by ${moved.err.toExponential(2)} of its largest entry)`)
    t.ok(e.err < 1e-4, `${name}: the refined ΔW of the same edits in reverse order agrees to ${e.err.toExponential(2)}`)
  }

  // The refined log saves, replays bit for bit, refines on after a reload, and undoes exactly.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-refine-'))
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
  const file = path.join(tmp, 'refined.safetensors')
  await rm.saveEdits(file)
  const replay = await ll.loadEdits(file)
  const y = (await replay.model.forward(probe)).logits.data
  t.ok(y.every((v, i) => v === a[i]), 'a saved refined log replays bit for bit')
  const z1 = (await (await replay.refine({ rounds: 1, step, monotone: false })).model.forward(probe)).logits.data
  t.ok(z1.every((v, i) => v === x1[i]), 'a reloaded log refines like the one in memory (its tokens are saved)')
  const w = await rm.without(3)
  const fresh = await ll.fromEdits(rm.edits.filter((_, i) => i !== 3) as EditRecord[])
  const u1 = (await w.forward(probe)).logits.data, u2 = (await fresh.model.forward(probe)).logits.data
  t.ok(u1.every((v, i) => v === u2[i]), 'without(3) of a refined log = the solve of the other refined records')

  // monotone (the default): a round that does not lower the log's edit loss is dropped.
  const editLoss = async (mm: MEND) => { let s = 0; for (const f of facts) s += (await mm.model.forward(f)).loss!; return s }
  const l0 = await editLoss(cur), l1 = await editLoss(one)
  const guarded = await cur.refine({ rounds: 1, step })
  const g = (await guarded.model.forward(probe)).logits.data
  if (l1 < l0) t.ok(g.every((v, i) => v === a[i]), `monotone keeps a round that lowers the edit loss (${l0.toFixed(4)} -> ${l1.toFixed(4)})`)
  else t.equal(guarded.model, cur.model, `monotone drops a round that raises the edit loss (${l0.toFixed(4)} -> ${l1.toFixed(4)})`)
  const wild = await cur.refine({ rounds: 1, step: 10, monotone: false })
  const lw = await editLoss(wild)
  t.ok(lw > l0, `a step of 10 overshoots: edit loss ${l0.toFixed(4)} -> ${lw.toFixed(4)}`)
  const seen: [number, number][] = []
  t.equal((await cur.refine({ rounds: 2, step: 10, onProgress: (d, n) => seen.push([d, n]) })).model, cur.model, 'monotone drops it and returns the log as it was')
  t.same(seen[seen.length - 1], [seen[0][1], seen[0][1]], `onProgress ends at its total when refinement stops early (${JSON.stringify(seen[seen.length - 1])})`)
  await t.rejects(cur.refine({ monotone: 1 } as never), { code: 'ERR_INVALID_ARG' }, 'monotone must be a boolean')

  // Misuse: coded errors, nothing changes.
  const classic = MEND.fromEditorSpec(model, spec, { innerParams: inner, rank: 4 })
  await t.rejects(classic.refine(), { code: 'ERR_INVALID_ARG' }, 'classic MEND has no refinement')
  await t.rejects(ll.refine({ rounds: 1 }), { code: 'ERR_INVALID_ARG' }, 'a controller without edits')
  await t.rejects(cur.refine({ rounds: 1, step: 0 }), { code: 'ERR_INVALID_ARG' }, 'step must be > 0')
  await t.rejects(cur.refine({ rounds: -1 }), { code: 'ERR_INVALID_ARG' }, 'rounds must be a non-negative integer')
  await t.rejects(cur.refine({ rounds: 1, stride: 2 } as never), { code: 'ERR_INVALID_ARG' }, 'unknown options')
  const noTokens = fm.edits.map((e) => ({ ...e, lifelong: { ...e.lifelong!, tokens: undefined } }))
  await t.rejects((await ll.fromEdits(noTokens as EditRecord[])).refine({ rounds: 1 }), { code: 'ERR_INVALID_ARG' }, 'edits without tokens cannot be proposed again')
  t.equal((await cur.refine({ rounds: 0 })).model, cur.model, 'rounds 0 returns the log as it is')
  const c0 = (await cur.model.forward(probe)).logits.data, c1 = (await fm.forward(probe)).logits.data
  t.ok(c0.every((v, i) => v === c1[i]), 'refining leaves the log it started from as it was')

  // The editor file keeps the refinement settings.
  const efile = path.join(tmp, 'editor.safetensors')
  await ll.withLifelong({ refine: { rounds: 3, step: 0.05 } }).save(efile)
  t.same((await MEND.fromPretrained(model, efile)).config.refine, { rounds: 3, step: 0.05 }, 'refine settings round-trip through the editor file')
  t.same((await MEND.fromPretrained(model, efile)).config.muSchedule, ll.config.muSchedule)
})
