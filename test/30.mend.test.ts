// MEND edits: the identity editor gives W' = W + α∇W, a random editor matches a plain float64
// reference of DESIGN §5, overlay = materialize = dense reference, isolation, undo, save/replay.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { GPT2LMHeadModel, MEND, FunctionalGPT2LMHeadModel } from '../lib/index'
import { native } from '../lib/core/native'
import { maxAbs, maxAbsDiff, randn, rng } from './helpers/reference'

const cfg = { nLayer: 3, nHead: 2, nEmbd: 16, vocabSize: 53, nPositions: 32 }
const inner = ['transformer.h.1.mlp.c_proj.weight', 'transformer.h.1.mlp.c_fc.weight', 'transformer.h.2.mlp.c_proj.weight', 'transformer.h.2.mlp.c_fc.weight']
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-edit-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

// An edit request: labels only on the last `nTarget` tokens (as a prompt + target would be).
function request(r: () => number, T: number, nTarget: number) {
  const ids = Array.from({ length: T }, () => Math.floor(r() * cfg.vocabSize))
  return { inputIds: [ids], attentionMask: [ids.map(() => 1)], labels: [ids.map((v, i) => (i >= T - nTarget ? v : -100))] }
}

// Rewrites an editor file with tensors changed by `edit` (names as in the file).
async function rewriteEditor(src: string, dst: string, edit: (name: string, data: Float32Array) => void) {
  const r = await native().safetensorsRead(src)
  const tensors = Object.entries(r.tensors).map(([name, tt]) => {
    const data = Float32Array.from(tt.data!)
    edit(name, data)
    return { name, shape: tt.shape, data }
  })
  await native().safetensorsWrite(dst, tensors, r.metadata)
}

async function logits(m: { forward: GPT2LMHeadModel['forward'] }, ids: number[][]) {
  return (await m.forward({ inputIds: ids })).logits.data
}

t.test('identity editor (μ = 0, σ + 1e-7 = 1): one edit is exactly W + α·∇W L_edit', async (t) => {
  const model = await GPT2LMHeadModel.random(cfg, 1)
  const fresh = new MEND(model, { innerParams: inner, rank: 8, editLr: 0.5 })
  const file = path.join(tmp, 'identity.safetensors')
  await fresh.save(file)
  const one = Math.fround(1 - 1e-7)
  await rewriteEditor(file, file, (name, d) => { if (/_std$/.test(name)) d.fill(one) })
  const mend = await MEND.fromPretrained(model, file)
  const batch = request(rng(1), 9, 3)
  const g = await model.lossAndGrad(batch, { params: inner })
  const { edited, info } = await mend.edit(batch, { returnFactors: true })
  t.ok(Math.abs(info.loss - g.loss) < 1e-6, `pre-edit loss ${info.loss} equals lossAndGrad ${g.loss}`)
  t.ok(edited.model instanceof FunctionalGPT2LMHeadModel, 'edited.model is a FunctionalGPT2LMHeadModel')
  t.equal(mend.model, model, 'the root controller keeps the plain model')
  const merged = await (edited.model as FunctionalGPT2LMHeadModel).materialize()
  for (const name of inner) {
    const G = g.grads[name].data
    // Pseudo-gradient from the factors, in float64.
    const { u, d } = info.factors![name]
    const [N, din] = u.shape, dout = d.shape[1]
    const P = new Float64Array(din * dout)
    for (let r = 0; r < N; r++) for (let i = 0; i < din; i++) for (let j = 0; j < dout; j++) P[i * dout + j] += u.data[r * din + i] * d.data[r * dout + j]
    const dp = maxAbsDiff(P, G)
    t.ok(dp <= 1e-5 * maxAbs(G), `${name}: ŨᵀD̃ = ∇W (max diff ${dp.toExponential(2)}, |∇W| max ${maxAbs(G).toExponential(2)}); kept ${info.keptRows[name]} rows, cos ${info.cos[name].toFixed(6)}`)
    t.ok(Math.abs(info.cos[name] - 1) < 1e-5, `${name}: cos(true, pseudo) = 1`)
    // W' = W + α∇W in the merged model.
    const W = model.parameter(name).data, W2 = merged.parameter(name).data
    let worst = 0
    for (let i = 0; i < W.length; i++) worst = Math.max(worst, Math.abs(W2[i] - (W[i] + 0.5 * G[i])))
    t.ok(worst <= 1e-6 + 1e-6 * maxAbs(W), `${name}: W' = W + α∇W (max diff ${worst.toExponential(2)})`)
  }
  // The last position influences no loss (causal attention): its D row is zero and it is dropped.
  t.equal(info.keptRows[inner[0]], 8, 'rows kept = the 8 positions that influence the loss')
  // Batch editing: two requests, right-padded; padded rows have D = 0 and are dropped.
  const r2 = rng(11)
  const a = request(r2, 9, 3), b = request(r2, 6, 2)
  const pad = (x: number[], v: number) => [...x, ...new Array(9 - x.length).fill(v)]
  const batch2 = {
    inputIds: [a.inputIds[0], pad(b.inputIds[0], 0)],
    attentionMask: [a.attentionMask[0], pad(b.attentionMask[0], 0)],
    labels: [a.labels[0], pad(b.labels[0], -100)],
  }
  const g2 = await model.lossAndGrad(batch2, { params: inner })
  const two = await mend.edit(batch2, { returnFactors: true })
  t.equal(two.info.keptRows[inner[1]], 8 + 5, 'batch of two: rows kept = 8 + 5 (padding and last positions dropped)')
  for (const name of inner) {
    const { u, d } = two.info.factors![name]
    const [N, din] = u.shape, dout = d.shape[1]
    const P = new Float64Array(din * dout)
    for (let q = 0; q < N; q++) for (let i = 0; i < din; i++) for (let j = 0; j < dout; j++) P[i * dout + j] += u.data[q * din + i] * d.data[q * dout + j]
    const G = g2.grads[name].data
    const dp = maxAbsDiff(P, G)
    t.ok(dp <= 1e-5 * maxAbs(G), `batch of two, ${name}: ŨᵀD̃ = ∇W of the batch loss (max diff ${dp.toExponential(2)})`)
  }
})

t.test('a random non-identity editor matches a float64 reference of DESIGN §5', async (t) => {
  const model = await GPT2LMHeadModel.random(cfg, 2)
  const r = rng(2)
  const fresh = new MEND(model, { innerParams: inner, rank: 6, nHidden: 1, editLr: 1e-3 })
  const file = path.join(tmp, 'random.safetensors')
  await fresh.save(file)
  await rewriteEditor(file, file, (name, d) => {
    if (/_std$/.test(name)) for (let i = 0; i < d.length; i++) d[i] = 0.5 + r()
    else if (/_mean$/.test(name)) for (let i = 0; i < d.length; i++) d[i] = 0.01 * randn(r)
    else if (/\.(u|v)$/.test(name)) for (let i = 0; i < d.length; i++) d[i] = 0.3 * randn(r)
    else if (/bias$|mode_shift/.test(name)) for (let i = 0; i < d.length; i++) d[i] = 0.1 * randn(r)
    else if (/mode_scale/.test(name)) for (let i = 0; i < d.length; i++) d[i] = 1 + 0.2 * randn(r)
    else if (name === 'edit_lrs') for (let i = 0; i < d.length; i++) d[i] = 1e-3 * (1 + r())
  })
  const mend = await MEND.fromPretrained(model, file)
  t.same(mend.layerActivations, ['clamp', 'clamp'], 'a node-mend editor is EasyEdit\'s network: the clamp on both layers')
  const spec = mend.editorSpec()
  const batch = request(r, 10, 4)
  const g = await model.lossAndGrad(batch, { params: [], capture: inner })
  const { edited, info } = await mend.edit(batch, { returnFactors: true })
  const merged = await (edited.model as FunctionalGPT2LMHeadModel).materialize()
  inner.forEach((name, k) => {
    const tf = spec.transforms[spec.transformOf[k]], mode = spec.modeOf[k]
    const { x, d } = g.captures[name]
    const din = tf.dIn, dout = tf.dOut, D = din + dout, rank = tf.rank
    // Rows where X and D both have a nonzero.
    const rows: number[] = []
    for (let i = 0; i < x.shape[0]; i++) {
      const xs = x.data.subarray(i * din, (i + 1) * din), ds = d.data.subarray(i * dout, (i + 1) * dout)
      if (xs.some((v) => v !== 0) && ds.some((v) => v !== 0)) rows.push(i)
    }
    const U: number[][] = [], Dt: number[][] = []
    for (const i of rows) {
      let z = new Float64Array(D)
      for (let j = 0; j < din; j++) z[j] = (x.data[i * din + j] - tf.uMean[j]) / (tf.uStd[j] + 1e-7)
      for (let j = 0; j < dout; j++) z[din + j] = (d.data[i * dout + j] - tf.vMean[j]) / (tf.vStd[j] + 1e-7)
      for (const L of tf.layers) {
        const h = new Float64Array(rank)
        for (let q = 0; q < rank; q++) for (let j = 0; j < D; j++) h[q] += L.v[q * D + j] * z[j]
        const nz = new Float64Array(D)
        for (let j = 0; j < D; j++) {
          let a = L.bias[j]
          for (let q = 0; q < rank; q++) a += L.u[j * rank + q] * h[q]
          a = a * L.scale[mode * D + j] + L.shift[mode * D + j]
          nz[j] = z[j] + Math.max(a, 0) // EasyEdit's LRLinear: the clamp on every layer
        }
        z = nz
      }
      U.push(Array.from(z.subarray(0, din)))
      Dt.push(Array.from(z.subarray(din)))
    }
    const f = info.factors![name]
    t.equal(f.u.shape[0], rows.length, `${name}: ${rows.length} rows kept`)
    const du = maxAbsDiff(f.u.data, U.flat()), dd = maxAbsDiff(f.d.data, Dt.flat())
    t.ok(du <= 1e-4 * Math.max(1, maxAbs(U.flat())) && dd <= 1e-4 * Math.max(1, maxAbs(Dt.flat())),
      `${name}: Ũ max diff ${du.toExponential(2)}, D̃ max diff ${dd.toExponential(2)} (|Ũ| ${maxAbs(U.flat()).toFixed(2)}, |D̃| ${maxAbs(Dt.flat()).toFixed(2)})`)
    // ΔW = α Σ ũᵀδ̃ against the merged weights.
    const alpha = spec.editLrs[k]
    const W = model.parameter(name).data, W2 = merged.parameter(name).data
    let worst = 0, big = 0
    for (let i = 0; i < din; i++) for (let j = 0; j < dout; j++) {
      let s = 0
      for (let q = 0; q < U.length; q++) s += U[q][i] * Dt[q][j]
      worst = Math.max(worst, Math.abs(W2[i * dout + j] - W[i * dout + j] - alpha * s))
      big = Math.max(big, Math.abs(alpha * s))
    }
    t.ok(worst <= 1e-6 + 1e-4 * big, `${name}: W' − W = α ŨᵀD̃ (max diff ${worst.toExponential(2)}, |ΔW| max ${big.toExponential(2)})`)
  })
})

t.test('overlay forward = materialize() = dense reference, before and past break-even; sequential edits', async (t) => {
  const model = await GPT2LMHeadModel.random(cfg, 3)
  const mend = new MEND(model, { innerParams: inner, rank: 8, editLr: 0.2 })
  const r = rng(3)
  const probe = [Array.from({ length: 12 }, () => Math.floor(r() * cfg.vocabSize))]
  const baseLogits = Float32Array.from(await logits(model, probe))
  let cur = mend
  const seen = new Set<string>()
  for (let n = 1; n <= 10; n++) {
    const batch = request(r, 8, 3)
    const expectLoss = (await cur.forward(batch)).loss!
    const { edited, info } = await cur.edit(batch)
    t.ok(Math.abs(info.loss - expectLoss) < 1e-5, `edit ${n}: pre-edit loss ${info.loss.toFixed(6)} is the current model's (${expectLoss.toFixed(6)})`)
    cur = edited
    const fm = cur.model as FunctionalGPT2LMHeadModel
    t.equal(fm.edits.length, n, `edit log holds ${n} edits`)
    const ov = fm.nativeOverlay!
    const idx = model.parameters().findIndex((p) => p.name === inner[1])
    const state = ov.folded(idx) ? (ov.lowrankRows(idx) > 0 ? 'folded+factors' : 'folded') : 'factors'
    if (n === 1 || n === 2 || n === 10 || !seen.has(state)) {
      seen.add(state)
      const merged = await fm.materialize()
      // Dense reference: W + Σ α ũᵀδ̃ over the log, in float64, loaded as a plain model.
      const dir = path.join(tmp, `dense${n}`)
      const tensors = model.parameters().map((p) => {
        const W = Float64Array.from(model.parameter(p.name).data)
        for (const e of fm.edits) {
          const f = e.factors[p.name]
          if (!f) continue
          const [N, din] = f.u.shape, dout = f.d.shape[1], a = e.alphas[p.name]
          for (let q = 0; q < N; q++) for (let i = 0; i < din; i++) for (let j = 0; j < dout; j++) W[i * dout + j] += a * f.u.data[q * din + i] * f.d.data[q * dout + j]
        }
        return { name: p.name, shape: p.shape, data: Float32Array.from(W) }
      })
      fs.mkdirSync(dir)
      await native().safetensorsWrite(path.join(dir, 'model.safetensors'), tensors, {})
      await model.savePretrained(path.join(tmp, 'cfgsrc'))
      fs.copyFileSync(path.join(tmp, 'cfgsrc', 'config.json'), path.join(dir, 'config.json'))
      const dense = await GPT2LMHeadModel.fromPretrained(dir)
      const lo = await logits(fm, probe), lm = await logits(merged, probe), ld = await logits(dense, probe)
      const scale = Math.max(1, maxAbs(ld))
      t.ok(maxAbsDiff(lo, lm) < 2e-5 * scale, `${n} edits (${state}): overlay vs materialize max diff ${maxAbsDiff(lo, lm).toExponential(2)}`)
      t.ok(maxAbsDiff(lo, ld) < 2e-5 * scale, `${n} edits (${state}): overlay vs dense reference max diff ${maxAbsDiff(lo, ld).toExponential(2)}`)
      t.ok(maxAbsDiff(lo, baseLogits) > 1e-4, `${n} edits change the logits (max change ${maxAbsDiff(lo, baseLogits).toExponential(2)})`)
      // Gradients through the overlay equal those of the merged model.
      const gb = request(rng(100 + n), 7, 2)
      const [g1, g2] = await Promise.all([fm.lossAndGrad(gb, { params: ['transformer.h.0.mlp.c_fc.weight'] }), merged.lossAndGrad(gb, { params: ['transformer.h.0.mlp.c_fc.weight'] })])
      const gd = maxAbsDiff(g1.grads['transformer.h.0.mlp.c_fc.weight'].data, g2.grads['transformer.h.0.mlp.c_fc.weight'].data)
      t.ok(gd < 1e-4 * Math.max(1e-3, maxAbs(g2.grads['transformer.h.0.mlp.c_fc.weight'].data)), `${n} edits: gradients through the overlay = merged model's (max diff ${gd.toExponential(2)})`)
      // Generation through the overlay equals the merged model's.
      t.same(await fm.generate(probe, { maxNewTokens: 6 }), await merged.generate(probe, { maxNewTokens: 6 }), `${n} edits: generate through the overlay = merged model`)
    }
  }
  t.ok(seen.has('factors') && [...seen].some((s) => s.startsWith('folded')), `both regimes tested: ${[...seen].join(', ')}`)
  t.same(Array.from(await logits(model, probe)), Array.from(baseLogits), 'the base model is bit-identical after 10 edits')
})

t.test('isolation, undo, saveEdits/loadEdits, savePretrained', async (t) => {
  const model = await GPT2LMHeadModel.random(cfg, 4)
  const mend = new MEND(model, { innerParams: inner, rank: 8, editLr: 0.2 })
  const r = rng(4)
  const probe = [Array.from({ length: 10 }, () => Math.floor(r() * cfg.vocabSize))]
  const base = Array.from(await logits(model, probe))
  let cur = mend
  const states: number[][] = []
  for (let n = 0; n < 4; n++) {
    cur = (await cur.edit(request(r, 8, 2), { request: { n } })).edited
    states.push(Array.from(await logits(cur.model, probe)))
  }
  const fm = cur.model as FunctionalGPT2LMHeadModel
  t.same(Array.from(await logits(model, probe)), base, 'base logits bit-identical after edits')
  t.same(Array.from(await logits(await fm.upTo(0), probe)), base, 'upTo(0) gives the base logits exactly')
  let none: FunctionalGPT2LMHeadModel = fm
  while (none.edits.length) none = await none.without(none.edits.length - 1)
  t.same(Array.from(await logits(none, probe)), base, 'removing every edit gives the base logits exactly')
  t.same(Array.from(await logits(await fm.upTo(2), probe)), states[1], 'upTo(2) rebuilds the state after two edits exactly')
  const w0 = await fm.without(0)
  t.equal(w0.edits.length, 3)
  t.notSame(Array.from(await logits(w0, probe)), states[3], 'without(0) differs from all four edits')
  const file = path.join(tmp, 'edits.safetensors')
  await fm.saveEdits(file)
  const loaded = await FunctionalGPT2LMHeadModel.loadEdits(model, file)
  t.equal(loaded.edits.length, 4)
  t.same(loaded.edits[2].request, { n: 2 }, 'requests survive the round trip')
  t.same(Array.from(await logits(loaded, probe)), states[3], 'saveEdits/loadEdits replays bit-exactly')
  // The log carries a fingerprint of its base: the edited export (or any other model) is refused.
  await fm.savePretrained(path.join(tmp, 'edited-hf'))
  const reloaded = await GPT2LMHeadModel.fromPretrained(path.join(tmp, 'edited-hf'))
  await t.rejects(FunctionalGPT2LMHeadModel.loadEdits(reloaded, file), { code: 'ERR_BASE_MISMATCH', message: /made on another base model.*allowBaseMismatch/ }, 'replaying the log onto the edited export is refused')
  const other = await GPT2LMHeadModel.random(cfg, 77)
  await t.rejects(FunctionalGPT2LMHeadModel.loadEdits(other, file), { code: 'ERR_BASE_MISMATCH', message: /another base model/ }, 'replaying it onto another model is refused')
  const forced = await FunctionalGPT2LMHeadModel.loadEdits(other, file, { allowBaseMismatch: true })
  t.equal(forced.edits.length, 4, 'allowBaseMismatch: the caller can still apply it on purpose')
  // A log written before the fingerprint existed loads (it cannot be checked).
  const r0 = await native().safetensorsRead(file)
  const oldMeta = { ...r0.metadata }
  delete oldMeta.base_fingerprint
  const oldFile = path.join(tmp, 'edits-v0.safetensors')
  await native().safetensorsWrite(oldFile, Object.entries(r0.tensors).map(([name, tt]) => ({ name, shape: tt.shape, data: Float32Array.from(tt.data!) })), oldMeta)
  t.same(Array.from(await logits(await FunctionalGPT2LMHeadModel.loadEdits(model, oldFile), probe)), states[3], 'a log without a fingerprint still replays bit-exactly')
  const merged = await fm.materialize()
  t.same(Array.from(await logits(reloaded, probe)), Array.from(await logits(merged, probe)), 'savePretrained → fromPretrained equals materialize() exactly')
  const d = maxAbsDiff(await logits(reloaded, probe), states[3])
  t.ok(d < 2e-5 * Math.max(1, maxAbs(states[3])), `savePretrained → fromPretrained equals the overlay model (max diff ${d.toExponential(2)})`)
  // Two edited models from one base run concurrently and stay independent.
  const a = (await mend.edit(request(rng(9), 8, 2))).edited, b = (await mend.edit(request(rng(10), 8, 2))).edited
  const [la, lb] = await Promise.all([logits(a.model, probe), logits(b.model, probe)])
  t.same(Array.from(la), Array.from(await logits(a.model, probe)), 'concurrent edited model A is unaffected by B')
  t.notSame(Array.from(la), Array.from(lb), 'two different edits give different models')
})

t.test('bad input: clear errors, nothing changed', async (t) => {
  const model = await GPT2LMHeadModel.random(cfg, 5)
  const mend = new MEND(model, { innerParams: inner, rank: 4 })
  const file = path.join(tmp, 'ok.safetensors')
  await mend.save(file)
  const probe = [[1, 2, 3, 4]]
  const before = Array.from(await logits(model, probe))
  const expectCode = async (p: Promise<unknown>, code: string, re: RegExp, what: string) => {
    try { await p; t.fail(`${what}: no error`) } catch (e) {
      const err = e as Error & { code?: string }
      t.equal(err.code, code, `${what}: ${err.code}`)
      t.match(err.message, re, `${what}: "${err.message}"`)
    }
  }
  // An editor made for another model shape.
  const other = await GPT2LMHeadModel.random({ ...cfg, nEmbd: 24 }, 1)
  await expectCode(MEND.fromPretrained(other, file), 'ERR_MISSING_TENSOR', /no editor for weight shape \(96, 24\)/, 'editor for another model')
  const fewer = await GPT2LMHeadModel.random({ ...cfg }, 1)
  await expectCode(MEND.fromPretrained(fewer, file, { innerParams: ['transformer.h.2.mlp.c_fc.weight'] }), 'ERR_SHAPE_MISMATCH', /modes/, 'editor with other inner params')
  // NaN in an editor file.
  const nan = path.join(tmp, 'nan.safetensors')
  await rewriteEditor(file, nan, (name, d) => { if (name.endsWith('layers.1.v')) d[3] = NaN })
  await expectCode(MEND.fromPretrained(model, nan), 'ERR_NON_FINITE', /nan\.safetensors: .*layers\.1\.v holds NaN/, 'NaN in an editor file')
  // Empty labels.
  await expectCode(mend.edit({ inputIds: [[1, 2, 3]], labels: [[-100, -100, -100]] }), 'ERR_NO_TARGET_TOKENS', /no target/, 'labels with no target')
  await expectCode(mend.edit({ inputIds: [[1, 2, 3]] }), 'ERR_INVALID_ARG', /labels/, 'no labels')
  await expectCode(mend.edit({ inputIds: [[1, 99, 3]], labels: [[1, 2, 3]] }), 'ERR_TOKEN_OUT_OF_RANGE', /inputIds\[0\]\[1\]/, 'bad token in an edit')
  await expectCode(FunctionalGPT2LMHeadModel.loadEdits(model, file), 'ERR_SAFETENSORS', /not a node-mend edit log/, 'an editor file is not an edit log')
  t.throws(() => new MEND(model, { innerParams: ['transformer.h.0.ln_1.weight'] }), { code: 'ERR_INVALID_ARG' }, 'a LayerNorm is not an inner param')
  t.throws(() => new MEND(model, { innerParams: ['transformer.h.9.mlp.c_fc.weight'] }), { code: 'ERR_INVALID_ARG' }, 'an unknown inner param')
  // An editor whose layers would overflow is refused when it loads (issue 13: nothing beyond 1e8
  // enters an editor); one within the bound whose edits blow up is refused at edit time.
  const huge = path.join(tmp, 'huge.safetensors')
  await rewriteEditor(file, huge, (name, d) => { if (/\.(u|v)$/.test(name)) d.fill(1e20) })
  await expectCode(MEND.fromPretrained(model, huge), 'ERR_NON_FINITE', /huge\.safetensors: .*holds 1e\+20/, 'an editor file with 1e20 weights')
  const loud = path.join(tmp, 'loud.safetensors')
  await rewriteEditor(file, loud, (name, d) => { if (/\.(u|v)$/.test(name)) d.fill(1e7) })
  const hm = await MEND.fromPretrained(model, loud)
  await expectCode(hm.edit({ inputIds: [[1, 2, 3]], labels: [[1, 2, 3]] }), 'ERR_NON_FINITE', /NaN or Inf|would change|beyond the largest accepted magnitude/, 'an edit producing Inf')
  t.same(Array.from(await logits(model, probe)), before, 'the model is unchanged after the errors')
  t.equal(mend.model, model)
})
