// Models from tensors, and full-model AdamW training on the native engine (Pretrainer).
import t from 'tap'
import { GPT2LMHeadModel, Pretrainer } from '../lib/index'
import { maxAbsDiff, rng } from './helpers/reference'

const cfg = { nLayer: 2, nHead: 2, nEmbd: 16, vocabSize: 29, nPositions: 16 }

t.test('fromTensors gives the same model; bad tensors are coded errors', async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 1)
  const tensors: Record<string, Float32Array> = {}
  for (const { name } of m.parameters()) tensors[name] = m.parameter(name).data
  const copy = await GPT2LMHeadModel.fromTensors(cfg, tensors)
  const ids = [[1, 2, 3, 4, 5]]
  t.equal(maxAbsDiff((await m.forward({ inputIds: ids })).logits.data, (await copy.forward({ inputIds: ids })).logits.data), 0, 'identical logits')
  const missing = { ...tensors }
  delete missing['transformer.h.1.ln_2.bias']
  await t.rejects(GPT2LMHeadModel.fromTensors(cfg, missing), { code: 'ERR_MISSING_TENSOR', message: /transformer\.h\.1\.ln_2\.bias/ })
  const nan = { ...tensors, 'transformer.wpe.weight': tensors['transformer.wpe.weight'].map((v, i) => (i === 3 ? NaN : v)) }
  await t.rejects(GPT2LMHeadModel.fromTensors(cfg, nan), { code: 'ERR_NON_FINITE' })
  const short = { ...tensors, 'transformer.wte.weight': new Float32Array(5) }
  await t.rejects(GPT2LMHeadModel.fromTensors(cfg, short), { code: 'ERR_SHAPE_MISMATCH' })
})

t.test('Pretrainer: AdamW steps make a tiny model memorise its corpus', async (t) => {
  const model = await GPT2LMHeadModel.random(cfg, 2)
  const r = rng(3)
  const seqs = Array.from({ length: 4 }, () => Array.from({ length: 10 }, () => Math.floor(r() * cfg.vocabSize)))
  const batch = { inputIds: seqs, labels: seqs }
  const before = (await model.forward(batch)).loss!
  const pt = new Pretrainer(model, { lr: 1e-2, weightDecay: 0.01 })
  let last = 0
  for (let i = 0; i < 80; i++) last = await pt.step(batch)
  const after = (await pt.model.forward(batch)).loss!
  t.comment(`loss ${before.toFixed(3)} → ${after.toFixed(3)} (last step ${last.toFixed(3)})`)
  t.ok(after < 0.2 * before, 'the loss falls by more than 5×')
  t.equal((await model.forward(batch)).loss, before, "the caller's model is untouched")
})
