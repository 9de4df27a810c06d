// MEND training: the outer gradients of L = c_edit·L_edit + c_loc·KL_loc for every editor parameter
// group and α against central finite differences of the training loss; a toy training run.
import t from 'tap'
import { GPT2LMHeadModel, MEND, EditTrainer } from '../lib/index'
import { native, EditorSpec, NativeBatch } from '../lib/core/native'
import { randn, rng } from './helpers/reference'

const cfg = { nLayer: 2, nHead: 2, nEmbd: 8, vocabSize: 37, nPositions: 24 }
const inner = ['transformer.h.1.mlp.c_proj.weight', 'transformer.h.1.mlp.c_fc.weight', 'transformer.h.0.mlp.c_fc.weight']

function batch(r: () => number, B: number, T: number, nTarget: number): NativeBatch {
  const ids = new Int32Array(B * T).map(() => Math.floor(r() * cfg.vocabSize))
  const labels = ids.map((v, i) => (i % T >= T - nTarget ? v : -100))
  const mask = new Int32Array(B * T).fill(1)
  return { ids, B, T, mask, labels }
}

function randomSpec(spec: EditorSpec, r: () => number): EditorSpec {
  const fill = (a: Float32Array, f: () => number) => { for (let i = 0; i < a.length; i++) a[i] = f() }
  for (const tr of spec.transforms) {
    for (const L of tr.layers) {
      fill(L.u, () => 0.3 * randn(r)); fill(L.v, () => 0.3 * randn(r)); fill(L.bias, () => 0.1 * randn(r))
      fill(L.scale, () => 1 + 0.2 * randn(r)); fill(L.shift, () => 0.1 * randn(r))
    }
    fill(tr.uMean, () => 0.05 * randn(r)); fill(tr.vMean, () => 1e-3 * randn(r))
    fill(tr.uStd, () => 0.5 + r()); fill(tr.vStd, () => 0.01 + 0.02 * r())
    tr.k = 10
  }
  fill(spec.editLrs, () => 0.15 + 0.1 * r())
  return spec
}

function clone(spec: EditorSpec): EditorSpec {
  return {
    ...spec, editLrs: Float32Array.from(spec.editLrs),
    transforms: spec.transforms.map((tr) => ({
      ...tr, uMean: Float32Array.from(tr.uMean), vMean: Float32Array.from(tr.vMean), uStd: Float32Array.from(tr.uStd),
      vStd: Float32Array.from(tr.vStd), uS: Float32Array.from(tr.uS), vS: Float32Array.from(tr.vS),
      layers: tr.layers.map((L) => ({ ...L, u: Float32Array.from(L.u), v: Float32Array.from(L.v), bias: Float32Array.from(L.bias), scale: Float32Array.from(L.scale), shift: Float32Array.from(L.shift) })),
    })),
  }
}

// Every parameter array of a spec with a name, in a fixed order.
function groups(spec: EditorSpec): [string, Float32Array][] {
  const out: [string, Float32Array][] = []
  spec.transforms.forEach((tr, s) => tr.layers.forEach((L, j) => {
    for (const k of ['u', 'v', 'bias', 'scale', 'shift'] as const) out.push([`mend.(${tr.dIn}, ${tr.dOut}).layers.${j}.${k}`, L[k]])
  }))
  out.push(['edit_lrs', spec.editLrs])
  return out
}

t.test('outer gradients of every editor parameter and α match central differences', async (t) => {
  const model = await GPT2LMHeadModel.random(cfg, 3)
  const r = rng(5)
  const spec = randomSpec(new MEND(model, { innerParams: inner, rank: 4 }).editorSpec(), r)
  const edit = batch(r, 2, 7, 3), outer = batch(r, 1, 6, 2), loc = batch(r, 2, 6, 0)
  loc.labels = null
  const opts = { lr: 0, lrLr: 0, cedit: 0.7, cloc: 1.3, gradClip: 1e9, accumulateBs: 1000 }
  const loss = async (s: EditorSpec) => (await native().createTrainer(model.native, s, opts).step(edit, outer, loc, { train: false })).total
  const tr = native().createTrainer(model.native, clone(spec), opts)
  const res = await tr.step(edit, outer, loc, { train: true, updateStats: false })
  t.ok(Math.abs(res.total - (await loss(spec))) < 1e-6 * Math.abs(res.total), `training and evaluation give the same loss ${res.total}`)
  t.ok(res.loc > 0 && res.edit > 0, `L_edit ${res.edit.toFixed(4)}, KL_loc ${res.loc.toExponential(3)}`)
  const grads = groups(tr.grads())
  const base = groups(spec)
  let worst = 0
  for (let gi = 0; gi < base.length; gi++) {
    const [name, w] = base[gi]
    const g = grads[gi][1]
    const d = new Float64Array(w.length).map(() => randn(r))
    const norm = Math.sqrt(d.reduce((a, x) => a + x * x, 0))
    let dot = 0
    for (let i = 0; i < w.length; i++) { d[i] /= norm; dot += g[i] * 1000 * d[i] } // grads are scaled by 1/accumulateBs
    // α moves whole weight updates: the loss is strongly curved along it (the KL of an edit to the
    // lowest block), so its step is smaller.
    const eps = name === 'edit_lrs' ? 1e-3 : 8e-3
    const plus = clone(spec), minus = clone(spec)
    const pw = groups(plus)[gi][1], mw = groups(minus)[gi][1]
    for (let i = 0; i < w.length; i++) { pw[i] = w[i] + eps * d[i]; mw[i] = w[i] - eps * d[i] }
    const fd = ((await loss(plus)) - (await loss(minus))) / (2 * eps)
    // The float32 loss resolves steps of one ulp, so the difference quotient carries ± ulp(L)/(2·eps).
    const quantum = 2 ** (Math.floor(Math.log2(res.total)) - 23) / (2 * eps)
    const err = Math.abs(dot - fd) / (Math.max(Math.abs(fd), 1e-3) + 4 * quantum / 3e-2)
    worst = Math.max(worst, err)
    t.ok(err < 3e-2, `${name}: <∇L, d> = ${dot.toExponential(4)}, central difference = ${fd.toExponential(4)} (± ${quantum.toExponential(1)} float32 quantum), rel err ${err.toExponential(2)}`)
  }
  t.comment(`largest relative error: ${worst.toExponential(2)}`)
})

t.test('a toy training run: edit loss falls and edit accuracy rises', async (t) => {
  const model = await GPT2LMHeadModel.random({ nLayer: 2, nHead: 2, nEmbd: 16, vocabSize: 41, nPositions: 16 }, 9)
  const mend = new MEND(model, { innerParams: ['transformer.h.1.mlp.c_proj.weight', 'transformer.h.1.mlp.c_fc.weight'], rank: 8, editLr: 1e-3 })
  const trainer = new EditTrainer(mend, { lr: 1e-3, lrLr: 1e-3, accumulateBs: 1, cedit: 1, cloc: 1 })
  const r = rng(12)
  // A handful of "facts": prompt of 5 tokens, a 2-token target to write in (the last block's MLP
  // sees one row per target token, and the statistics need two rows, as in EasyEdit).
  const facts = Array.from({ length: 6 }, () => {
    const ids = Array.from({ length: 7 }, () => Math.floor(r() * 41))
    return { inputIds: [ids], attentionMask: [ids.map(() => 1)], labels: [ids.map((v, i) => (i >= 5 ? v : -100))] }
  })
  const locIds = [Array.from({ length: 8 }, () => Math.floor(r() * 41))]
  const loc = { inputIds: locIds, attentionMask: [locIds[0].map(() => 1)] }
  const before = await trainer.validate(facts.map((f) => ({ edit: f, loc })))
  for (let it = 0; it < 25; it++) for (const f of facts) await trainer.trainStep({ edit: f, loc })
  const after = await trainer.validate(facts.map((f) => ({ edit: f, loc })))
  t.comment(`post-edit L_edit ${before.edit.toFixed(3)} → ${after.edit.toFixed(3)}, edit accuracy ${before.editAcc.toFixed(2)} → ${after.editAcc.toFixed(2)}, KL_loc ${after.loc.toExponential(2)}`)
  t.ok(after.edit < 0.95 * before.edit, 'post-edit loss falls by more than 5%')
  t.ok(after.editAcc > before.editAcc, 'edit accuracy rises')
  // The trained editor edits through the normal MEND path.
  const trained = trainer.toMEND()
  const { edited } = await trained.edit(facts[0])
  const out = await edited.model.forward(facts[0])
  t.ok(out.loss! < (await model.forward(facts[0])).loss!, 'the trained editor lowers the target loss of a fact')
})

t.test('run(), checkpoints and exact resume (mid-accumulation)', async (t) => {
  const os = await import('os'), fs = await import('fs'), path = await import('path')
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-train-'))
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
  const model = await GPT2LMHeadModel.random({ nLayer: 2, nHead: 2, nEmbd: 16, vocabSize: 41, nPositions: 16 }, 4)
  const r = rng(21)
  const mk = () => {
    const ids = Array.from({ length: 7 }, () => Math.floor(r() * 41))
    const loc = Array.from({ length: 6 }, () => Math.floor(r() * 41))
    return { edit: { inputIds: [ids], attentionMask: [ids.map(() => 1)], labels: [ids.map((v, i) => (i >= 5 ? v : -100))] }, loc: { inputIds: [loc], attentionMask: [loc.map(() => 1)] } }
  }
  const train = Array.from({ length: 5 }, mk), val = Array.from({ length: 2 }, mk)
  const inner = ['transformer.h.1.mlp.c_proj.weight', 'transformer.h.1.mlp.c_fc.weight']
  const cfgT = { lr: 1e-3, lrLr: 1e-3, accumulateBs: 3, maxIters: 8, valInterval: 4, seed: 3 }
  const straight = new EditTrainer(new MEND(model, { innerParams: inner, rank: 4, editLr: 1e-3 }), cfgT)
  const progress: number[] = []
  const res = await straight.run(train, val, { onProgress: (p) => progress.push(p.step) })
  t.equal(res.steps, 8); t.equal(res.stopped, 'maxIters')
  t.same(progress, [1, 2, 3, 4, 5, 6, 7, 8], 'progress reported every step')
  t.ok(res.best && res.best.step % 4 === 0, `best editor kept from a validation step (${res.best?.step})`)

  const first = new EditTrainer(new MEND(model, { innerParams: inner, rank: 4, editLr: 1e-3 }), { ...cfgT, maxIters: 4 })
  await first.run(train, val)
  const ck = path.join(tmp, 'ck.safetensors')
  await first.saveCheckpoint(ck)
  const resumed = await EditTrainer.resume(model, ck, { maxIters: 8 })
  t.equal(resumed.steps, 4, 'resumed at step 4')
  await resumed.run(train, val)
  const a = groups(straight.nativeTrainer.tensors()), b = groups(resumed.nativeTrainer.tensors())
  let same = true
  a.forEach(([name, x], i) => { if (x.length !== b[i][1].length || x.some((v, k) => v !== b[i][1][k])) { same = false; t.fail(`${name} differs after resume`) } })
  t.ok(same, '8 steps straight equal 4 steps, checkpoint, resume, 4 steps (bit-identical editor)')
  const sa = straight.nativeTrainer.tensors().transforms[0], sb = resumed.nativeTrainer.tensors().transforms[0]
  t.equal(sa.k, sb.k, `statistics continue too (k = ${sa.k})`)
  await t.rejects(EditTrainer.resume(model, path.join(tmp, 'missing.safetensors')), { code: 'ERR_IO' })
})
