// MEND training: the outer gradients of L = c_edit·L_edit + c_loc·KL_loc for every editor parameter
// group and α against central finite differences of the training loss; a toy training run.
import t from 'tap'
import { GPT2LMHeadModel, MEND, EditTrainer } from '../lib/index'
import { rng } from './helpers/reference'
import { batch as batchOf, checkOuterGradients, groups, randomSpec } from './helpers/editor-grads'

const cfg = { nLayer: 2, nHead: 2, nEmbd: 8, vocabSize: 37, nPositions: 24 }
const inner = ['transformer.h.1.mlp.c_proj.weight', 'transformer.h.1.mlp.c_fc.weight', 'transformer.h.0.mlp.c_fc.weight']

const batch = (r: () => number, B: number, T: number, nTarget: number) => batchOf(r, cfg.vocabSize, B, T, nTarget)

t.test('outer gradients of every editor parameter and α match central differences', async (t) => {
  const model = await GPT2LMHeadModel.random(cfg, 3)
  const r = rng(5)
  const spec = randomSpec(new MEND(model, { innerParams: inner, rank: 4 }).editorSpec(), r)
  const edit = batch(r, 2, 7, 3), outer = batch(r, 1, 6, 2), loc = batch(r, 2, 6, 0)
  loc.labels = null
  // α moves whole weight updates: the loss is strongly curved along it (the KL of an edit to the
  // lowest block), so its step is smaller.
  await checkOuterGradients(t, { model: model.native, spec, edit, outer, loc, r, cedit: 0.7, cloc: 1.3, eps: (name) => (name === 'edit_lrs' ? 1e-3 : 8e-3) })
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
