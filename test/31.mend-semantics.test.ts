// EasyEdit's editor network, pinned: LRLinear clamps max(·, 0) on EVERY layer (EasyEdit's and the
// original MEND's LRLinear.forward; IDMLP's relu=idx<n_hidden argument is never used). A tiny
// hand-built editor (D = 4) whose last layer has negative pre-activations, with Ũ, D̃ written out from
// the formula; editor files that say which network they hold; legacy node-mend files (linear last
// layer) keep their meaning; the training step computes the same network as the edit; the trainer
// trains a copy, and saving the untrained source after training warns.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { EditTrainer, FunctionalGPT2LMHeadModel, GPT2LMHeadModel, MEND } from '../lib/index'
import { EditorSpec, native } from '../lib/core/native'
import { maxAbs, maxAbsDiff, rng } from './helpers/reference'

// One block of width 2, one head: attn.c_proj is a (2, 2) Conv1D weight, so its editor has D = 4.
const cfg = { nLayer: 1, nHead: 1, nEmbd: 2, vocabSize: 7, nPositions: 8 }
const inner = ['transformer.h.0.attn.c_proj.weight']
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-sem-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const ONE = Math.fround(1 - 1e-7) // σ + 1e-7 = 1: the normalisation is the identity

// The hand-built editor (rank 2, nHidden 1, one mode). Row-major: U (D, r), V (r, D), scale/shift (1, D).
//   layer 0: h = z·V0ᵀ = [z0, z2];  pre0 = (h·U0ᵀ + b0) ⊙ s0 + t0 = [0.5·z0, 0.1, 0, 0.05 − z2]
//   layer 1: h = [z0 + z1, z2 + z3]; pre1 = [0.25(z0 + z1) − 1, 1.0, 0.5(z2 + z3) − 2, 0.35]
// With |z| ≲ 1, pre1[0] and pre1[2] are negative: the clamp zeroes them, a linear layer would not.
const L0 = {
  v: [1, 0, 0, 0, 0, 0, 1, 0], u: [0.5, 0, 0, 0, 0, 0, 0, -1], bias: [0, 0.1, 0, 0], scale: [1, 1, 2, 1], shift: [0, 0, 0, 0.05],
}
const L1 = {
  v: [1, 1, 0, 0, 0, 0, 1, 1], u: [0.25, 0, 0, 0, 0, 0.5, 0, 0], bias: [-1, 0.5, -2, 0.25], scale: [1, 2, 1, 1], shift: [0, 0, 0, 0.1],
}
const ALPHA = 0.5

// Ũ, D̃ of one row (u, δ) from the formula above, the last layer clamped (EasyEdit) or linear (legacy).
function expectedRow(u: number[], d: number[], lastLinear: boolean): { ut: number[]; dt: number[]; pre1: number[] } {
  const relu = (a: number) => Math.max(a, 0)
  const z0 = [u[0], u[1], d[0], d[1]]
  const z1 = [z0[0] + relu(0.5 * z0[0]), z0[1] + relu(0.1), z0[2] + relu(0), z0[3] + relu(0.05 - z0[2])]
  const pre1 = [0.25 * (z1[0] + z1[1]) - 1, 0.5 * 2, 0.5 * (z1[2] + z1[3]) - 2, 0.25 + 0.1]
  const act = lastLinear ? (a: number) => a : relu
  const z2 = z1.map((z, k) => z + act(pre1[k]))
  return { ut: z2.slice(0, 2), dt: z2.slice(2), pre1 }
}

function handBuiltSpec(model: GPT2LMHeadModel, relu: [boolean, boolean] | null): EditorSpec {
  const spec = new MEND(model, { innerParams: inner, rank: 2, nHidden: 1 }).editorSpec()
  const tr = spec.transforms[0]
  if (tr.dIn + tr.dOut !== 4 || tr.rank !== 2) throw new Error(`expected D = 4 and rank 2, got D = ${tr.dIn + tr.dOut}, rank ${tr.rank}`)
  ;[L0, L1].forEach((src, j) => {
    const L = tr.layers[j]
    L.u.set(src.u); L.v.set(src.v); L.bias.set(src.bias); L.scale.set(src.scale); L.shift.set(src.shift)
    if (relu) L.relu = relu[j]
    else delete L.relu
  })
  tr.uMean.fill(0); tr.vMean.fill(0); tr.uStd.fill(ONE); tr.vStd.fill(ONE); tr.k = 10
  spec.editLrs.fill(ALPHA)
  return spec
}

function editBatch(r: () => number) {
  const ids = Array.from({ length: 6 }, () => Math.floor(r() * cfg.vocabSize))
  return { inputIds: [ids], attentionMask: [ids.map(() => 1)], labels: [ids.map((v, i) => (i >= 4 ? v : -100))] }
}

// A model whose attention outputs are O(1), so that u matters next to the editor's constants.
async function model(): Promise<GPT2LMHeadModel> {
  const base = await GPT2LMHeadModel.random(cfg, 5)
  const tensors: Record<string, Float32Array> = {}
  const r = rng(17)
  for (const p of base.parameters()) {
    const d = Float32Array.from(base.parameter(p.name).data)
    if (/attn\.c_attn\.(weight|bias)$/.test(p.name)) for (let i = 0; i < d.length; i++) d[i] = 2 * r() - 1
    tensors[p.name] = d
  }
  return GPT2LMHeadModel.fromTensors(cfg, tensors)
}

// Kept rows (X and D both nonzero) of the edit's pre-edit pass, and the expected factors of each.
async function expected(m: GPT2LMHeadModel, batch: ReturnType<typeof editBatch>, lastLinear: boolean) {
  const g = await m.lossAndGrad(batch, { params: [], capture: inner })
  const { x, d } = g.captures[inner[0]]
  const U: number[] = [], Dt: number[] = [], pre1: number[] = []
  for (let i = 0; i < x.shape[0]; i++) {
    const u = Array.from(x.data.subarray(i * 2, i * 2 + 2)), dd = Array.from(d.data.subarray(i * 2, i * 2 + 2))
    if (!u.some((v) => v !== 0) || !dd.some((v) => v !== 0)) continue
    const e = expectedRow(u, dd, lastLinear)
    U.push(...e.ut); Dt.push(...e.dt); pre1.push(...e.pre1)
  }
  return { U, Dt, pre1 }
}

t.test('hand-built D = 4 editor: Ũ, D̃ are EasyEdit\'s (clamp on the last layer too), and ΔW = α ŨᵀD̃', async (t) => {
  const m = await model()
  const mend = MEND.fromEditorSpec(m, handBuiltSpec(m, null), { innerParams: inner, rank: 2, nHidden: 1 })
  t.same(mend.layerActivations, ['clamp', 'clamp'], 'a spec without relu flags is EasyEdit\'s network')
  const batch = editBatch(rng(3))
  const { U, Dt, pre1 } = await expected(m, batch, false)
  const lin = await expected(m, batch, true)
  const negative = pre1.filter((_, k) => k % 4 === 0 || k % 4 === 2).filter((a) => a < 0).length
  t.ok(U.length >= 4 && negative >= 4, `${U.length / 2} rows kept; ${negative} negative last-layer pre-activations (the clamp matters)`)
  const { edited, info } = await mend.edit(batch, { returnFactors: true })
  const f = info.factors![inner[0]]
  const du = maxAbsDiff(f.u.data, U), dd = maxAbsDiff(f.d.data, Dt)
  t.ok(du <= 1e-6 * Math.max(1, maxAbs(U)), `Ũ max diff ${du.toExponential(2)} (|Ũ| max ${maxAbs(U).toFixed(3)})`)
  t.ok(dd <= 1e-6 * Math.max(1, maxAbs(Dt)), `D̃ max diff ${dd.toExponential(2)} (|D̃| max ${maxAbs(Dt).toFixed(3)})`)
  // A linear last layer gives other factors, far outside that tolerance.
  const lu = maxAbsDiff(f.u.data, lin.U), ld = maxAbsDiff(f.d.data, lin.Dt)
  t.ok(lu > 0.1 && ld > 0.1, `a linear last layer would differ: Ũ by ${lu.toFixed(3)}, D̃ by ${ld.toFixed(3)}`)
  // W' − W = α Σ ũᵀδ̃.
  const merged = await (edited.model as FunctionalGPT2LMHeadModel).materialize()
  const W = m.parameter(inner[0]).data, W2 = merged.parameter(inner[0]).data
  let worst = 0
  for (let i = 0; i < 2; i++) for (let j = 0; j < 2; j++) {
    let s = 0
    for (let q = 0; q < U.length / 2; q++) s += U[q * 2 + i] * Dt[q * 2 + j]
    worst = Math.max(worst, Math.abs(W2[i * 2 + j] - W[i * 2 + j] - ALPHA * s))
  }
  t.ok(worst <= 1e-5, `W' − W = α ŨᵀD̃ (max diff ${worst.toExponential(2)})`)
})

// Captures node-mend's warnings while `fn` runs (emitWarning delivers them on the next tick).
async function warningsDuring(fn: () => Promise<unknown>): Promise<string[]> {
  const seen: string[] = []
  const on = (w: Error & { code?: string }) => { if (w.code) seen.push(w.code) }
  process.on('warning', on)
  try {
    await fn()
    await new Promise((r) => setImmediate(r))
  } finally {
    process.off('warning', on)
  }
  return seen
}

t.test('editor files say which network they hold; EasyEdit archives and legacy node-mend files', async (t) => {
  const m = await model()
  const opts = { innerParams: inner, rank: 2, nHidden: 1 }
  const batch = editBatch(rng(4))
  const factors = async (mend: MEND) => (await mend.edit(batch, { returnFactors: true })).info.factors![inner[0]]
  const clampF = await factors(MEND.fromEditorSpec(m, handBuiltSpec(m, null), opts))

  // 1. node-mend writes the activations into the metadata and reads them back.
  const file = path.join(tmp, 'editor.safetensors')
  await MEND.fromEditorSpec(m, handBuiltSpec(m, null), opts).save(file)
  const written = await native().safetensorsRead(file)
  t.equal(written.metadata.layer_activations, '["clamp","clamp"]', 'metadata layer_activations = ["clamp","clamp"]')
  const reloaded = await MEND.fromPretrained(m, file)
  t.same(reloaded.layerActivations, ['clamp', 'clamp'], 'reloaded: clamp on both layers')
  t.same(Array.from((await factors(reloaded)).u.data), Array.from(clampF.u.data), 'reloaded editor: the same Ũ, bit for bit')

  // 2. An EasyEdit archive converted tensor-for-tensor (no node-mend metadata): EasyEdit's network.
  const easy = path.join(tmp, 'easyedit.safetensors')
  await native().safetensorsWrite(easy, Object.entries(written.tensors).map(([name, tt]) => ({ name, shape: tt.shape, data: Float32Array.from(tt.data!) })), {})
  let loadedEasy: MEND | null = null
  const easyWarnings = await warningsDuring(async () => { loadedEasy = await MEND.fromPretrained(m, easy, { innerParams: inner }) })
  t.same(loadedEasy!.layerActivations, ['clamp', 'clamp'], 'a file without node-mend metadata is EasyEdit\'s network')
  t.same(easyWarnings, [], 'no warning for an EasyEdit file')
  const easyF = await factors(loadedEasy!)
  t.same(Array.from(easyF.d.data), Array.from(clampF.d.data), 'EasyEdit file: the same D̃, bit for bit')

  // 3. A node-mend file from before the key (its format tag, no layer_activations): the linear last
  //    layer it was trained with, with a warning, never silently EasyEdit's network.
  const legacy = path.join(tmp, 'legacy.safetensors')
  const legacyMeta = { ...written.metadata }
  delete legacyMeta.layer_activations
  t.equal(legacyMeta.format, 'node-mend-editor', 'the legacy file carries node-mend\'s format tag')
  await native().safetensorsWrite(legacy, Object.entries(written.tensors).map(([name, tt]) => ({ name, shape: tt.shape, data: Float32Array.from(tt.data!) })), legacyMeta)
  let loadedLegacy: MEND | null = null
  const legacyWarnings = await warningsDuring(async () => { loadedLegacy = await MEND.fromPretrained(m, legacy) })
  t.same(legacyWarnings, ['NODE_MEND_LEGACY_EDITOR'], 'loading a legacy file warns (NODE_MEND_LEGACY_EDITOR)')
  t.same(loadedLegacy!.layerActivations, ['clamp', 'identity'], 'legacy file: the last layer stays linear')
  const legacyF = await factors(loadedLegacy!)
  const lin = await expected(m, batch, true)
  const dl = Math.max(maxAbsDiff(legacyF.u.data, lin.U), maxAbsDiff(legacyF.d.data, lin.Dt))
  t.ok(dl <= 1e-6 * Math.max(1, maxAbs(lin.U), maxAbs(lin.Dt)), `legacy file: factors of the linear-last formula (max diff ${dl.toExponential(2)})`)
  t.ok(maxAbsDiff(legacyF.u.data, clampF.u.data) > 0.1, 'and not those of EasyEdit\'s network')
  // Saving it again records the meaning; reloading needs no guess and no warning.
  const resaved = path.join(tmp, 'resaved.safetensors')
  await loadedLegacy!.save(resaved)
  t.equal((await native().safetensorsRead(resaved)).metadata.layer_activations, '["clamp","identity"]', 're-saved: layer_activations = ["clamp","identity"]')
  let again: MEND | null = null
  t.same(await warningsDuring(async () => { again = await MEND.fromPretrained(m, resaved) }), [], 're-saved file loads without a warning')
  t.same(Array.from((await factors(again!)).u.data), Array.from(legacyF.u.data), 're-saved legacy editor: the same Ũ, bit for bit')

  // 4. A malformed key is refused with a coded error.
  for (const bad of ['["clamp"]', '["relu","clamp"]', 'clamp', '{"0":"clamp"}']) {
    const f = path.join(tmp, 'bad.safetensors')
    await native().safetensorsWrite(f, Object.entries(written.tensors).map(([name, tt]) => ({ name, shape: tt.shape, data: Float32Array.from(tt.data!) })), { ...written.metadata, layer_activations: bad })
    await t.rejects(MEND.fromPretrained(m, f), { code: 'ERR_SAFETENSORS', message: /layer_activations/ }, `layer_activations ${bad}: ERR_SAFETENSORS`)
  }
  // 5. A spec's relu flag must be a boolean.
  const badSpec = handBuiltSpec(m, null) as unknown as { transforms: { layers: { relu: unknown }[] }[] }
  badSpec.transforms[0].layers[1].relu = 'yes'
  t.throws(() => MEND.fromEditorSpec(m, badSpec as unknown as EditorSpec, opts), { code: 'ERR_INVALID_ARG' }, 'relu "yes": ERR_INVALID_ARG')
})

t.test('the training step computes the network the edit computes (EasyEdit\'s and legacy); checkpoints keep it', async (t) => {
  // A width-8 model (the width-2 one's final LayerNorm keeps only a sign) and a random editor.
  const cfg8 = { nLayer: 2, nHead: 2, nEmbd: 8, vocabSize: 37, nPositions: 24 }
  const m8 = await GPT2LMHeadModel.random(cfg8, 3)
  const inner8 = ['transformer.h.1.mlp.c_proj.weight', 'transformer.h.1.mlp.c_fc.weight']
  const opts8 = { innerParams: inner8, rank: 4, nHidden: 1 }
  const r = rng(9)
  const randomSpec = (relu: [boolean, boolean]): EditorSpec => {
    const rr = rng(5)
    const spec = new MEND(m8, opts8).editorSpec()
    for (const tr of spec.transforms) {
      tr.layers.forEach((L, j) => {
        for (const a of [L.u, L.v]) for (let i = 0; i < a.length; i++) a[i] = 0.6 * (rr() - 0.5)
        for (let i = 0; i < L.bias.length; i++) L.bias[i] = 0.2 * (rr() - 0.5)
        L.relu = relu[j]
      })
      tr.uStd.fill(0.5); tr.vStd.fill(0.01); tr.k = 10
    }
    spec.editLrs.fill(0.2)
    return spec
  }
  const ids = Array.from({ length: 7 }, () => Math.floor(r() * cfg8.vocabSize))
  const edit = { inputIds: [ids], attentionMask: [ids.map(() => 1)], labels: [ids.map((v, i) => (i >= 4 ? v : -100))] }
  const locIds = [Array.from({ length: 6 }, () => Math.floor(r() * cfg8.vocabSize))]
  const loc = { inputIds: locIds, attentionMask: [locIds[0].map(() => 1)] }
  const postLoss: number[] = []
  for (const relu of [[true, true], [true, false]] as [boolean, boolean][]) {
    const mend = MEND.fromEditorSpec(m8, randomSpec(relu), opts8)
    const viaEdit = (await (await mend.edit(edit)).edited.forward(edit)).loss!
    const viaTrainer = (await new EditTrainer(mend, { cedit: 1, cloc: 1 }).evaluate({ edit, loc })).edit
    t.ok(Math.abs(viaEdit - viaTrainer) <= 1e-5 * Math.abs(viaEdit), `${JSON.stringify(mend.layerActivations)}: training-step L_edit ${viaTrainer.toFixed(6)} = post-edit loss ${viaEdit.toFixed(6)}`)
    postLoss.push(viaEdit)
  }
  t.ok(Math.abs(postLoss[0] - postLoss[1]) > 1e-3, `the two networks give different post-edit losses (${postLoss[0].toFixed(4)} vs ${postLoss[1].toFixed(4)})`)

  const m = m8, opts = opts8
  // A checkpoint records the activations; a legacy checkpoint (no key) resumes with the linear last layer.
  const source = MEND.fromEditorSpec(m, randomSpec([true, true]), opts)
  const trainer = new EditTrainer(source, { cedit: 1, cloc: 1, accumulateBs: 1, lr: 1e-3 })
  t.same(await warningsDuring(() => source.save(path.join(tmp, 'before.safetensors'))), [], 'saving before training: no warning')
  await trainer.trainStep({ edit, loc })
  // The trainer trained a copy: the source controller is unchanged, and saving it says so.
  t.same(Array.from(source.editorSpec().transforms[0].layers[0].u), Array.from(randomSpec([true, true]).transforms[0].layers[0].u), 'the MEND the trainer was built from is unchanged by training')
  t.notSame(Array.from(trainer.toMEND().editorSpec().transforms[0].layers[0].u), Array.from(source.editorSpec().transforms[0].layers[0].u), 'trainer.toMEND() holds the trained editor')
  t.same(await warningsDuring(() => source.save(path.join(tmp, 'untrained.safetensors'))), ['NODE_MEND_UNTRAINED_SAVE'], 'saving the untrained source after training warns (NODE_MEND_UNTRAINED_SAVE)')
  t.same(await warningsDuring(() => trainer.toMEND().save(path.join(tmp, 'trained.safetensors'))), [], 'saving trainer.toMEND(): no warning')
  const ck = path.join(tmp, 'ck.safetensors')
  await trainer.saveCheckpoint(ck)
  const c = await native().safetensorsRead(ck)
  t.equal(c.metadata.layer_activations, '["clamp","clamp"]', 'checkpoint metadata layer_activations = ["clamp","clamp"]')
  t.same((await EditTrainer.resume(m, ck)).toMEND().layerActivations, ['clamp', 'clamp'], 'resumed: EasyEdit\'s network')
  const old = path.join(tmp, 'ck-legacy.safetensors')
  const meta = { ...c.metadata }
  delete meta.layer_activations
  await native().safetensorsWrite(old, Object.entries(c.tensors).map(([name, tt]) => ({ name, shape: tt.shape, data: Float32Array.from(tt.data!) })), meta)
  let resumed: EditTrainer | null = null
  t.same(await warningsDuring(async () => { resumed = await EditTrainer.resume(m, old) }), ['NODE_MEND_LEGACY_EDITOR'], 'a legacy checkpoint warns once')
  t.same(resumed!.toMEND().layerActivations, ['clamp', 'identity'], 'a legacy checkpoint resumes with its linear last layer')
})
