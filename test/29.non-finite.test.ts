// 29.non-finite — nothing non-finite is ever accepted into a model, an overlay, an editor or a saved
// file (issue 13, finding 4): ERR_NON_FINITE, and nothing changes. Covers F32 model files with NaN,
// Inf or overflowing weights, editors (config, spec and file) with huge or NaN tensors, edits whose
// factors or whose effect on the weights is not finite (MEND.edit, fromEdits, loadEdits), and the
// library's writers (no NaN reaches a file).
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { GPT2LMHeadModel, MEND, FunctionalGPT2LMHeadModel } from '../lib/index'
import { native } from '../lib/core/native'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-nonfinite-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const cfg = { nLayer: 1, nHead: 2, nEmbd: 8, vocabSize: 20, nPositions: 10 }
const batch = { inputIds: [[1, 2, 3]], labels: [[1, 2, 3]] }
const inner = ['h.0.mlp.c_fc.weight']

async function refused(t: Tap, p: () => Promise<unknown> | unknown, pattern: RegExp, what: string) {
  try {
    await p()
    t.fail(`${what}: accepted`)
  } catch (e) {
    t.equal((e as { code?: string }).code, 'ERR_NON_FINITE', `${what}: ERR_NON_FINITE (${(e as Error).message})`)
    t.match((e as Error).message, pattern, `${what}: the message names it`)
  }
}
type Tap = typeof t

t.test('F32 model files with NaN, Inf or overflowing weights are refused at load, like fromTensors', async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 1)
  const dir = path.join(tmp, 'model')
  await m.savePretrained(dir)
  const file = path.join(dir, 'model.safetensors')
  const r = await native().safetensorsRead(file)
  for (const [v, what] of [[NaN, 'NaN'], [Infinity, 'Inf'], [-3e38, 'near -FLT_MAX'], [1e30, '1e30']] as const) {
    const d = path.join(tmp, `model-${what}`)
    fs.cpSync(dir, d, { recursive: true })
    const tensors = Object.entries(r.tensors).map(([name, x]) => {
      const data = Float32Array.from(x.data!)
      if (name.endsWith('h.0.mlp.c_fc.weight')) data[5] = v
      return { name, shape: x.shape, data }
    })
    await native().safetensorsWrite(path.join(d, 'model.safetensors'), tensors, r.metadata) // the raw writer keeps any float
    await refused(t, () => GPT2LMHeadModel.fromPretrained(d), /model\.safetensors: tensor "(transformer\.)?h\.0\.mlp\.c_fc\.weight" holds/, `model file with ${what}`)
    const byName = Object.fromEntries(tensors.map((x) => [x.name, x.data]))
    await refused(t, () => GPT2LMHeadModel.fromTensors(cfg, byName), /h\.0\.mlp\.c_fc\.weight/, `fromTensors with ${what}`)
  }
})

t.test('editors with huge or NaN tensors are refused (config, spec, file)', async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 1)
  await refused(t, () => new MEND(m, { rank: 4, innerParams: inner, editLr: 1e30 }), /edit_lrs holds 1e\+30/, 'editLr 1e30')
  const good = new MEND(m, { rank: 4, innerParams: inner })
  for (const [key, v] of [['scale', 1e30], ['shift', 1e30], ['bias', 1e30], ['u', NaN], ['v', Infinity]] as const) {
    const spec = good.editorSpec()
    spec.transforms[0].layers[0][key][0] = v
    await refused(t, () => MEND.fromEditorSpec(m, spec, { innerParams: inner, rank: 4 }), /mend\.\(8, 32\)\.mlp\.layers\.0\./, `spec with ${key} = ${v}`)
  }
  // The same in a file: the editor file's edit_lrs set to 1e30 with the raw writer.
  const file = path.join(tmp, 'editor.safetensors')
  await good.save(file)
  const r = await native().safetensorsRead(file)
  const tensors = Object.entries(r.tensors).map(([name, x]) => ({ name, shape: x.shape, data: name === 'edit_lrs' ? new Float32Array(x.data!.length).fill(1e30) : x.data! }))
  const bad = path.join(tmp, 'editor-huge-lr.safetensors')
  await native().safetensorsWrite(bad, tensors, r.metadata)
  await refused(t, () => MEND.fromPretrained(m, bad), /editor-huge-lr\.safetensors: edit_lrs holds 1e\+30/, 'editor file with edit_lrs 1e30')
})

t.test('an edit whose factors or effect are not finite is refused and changes nothing', async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 1)
  const before = (await m.forward({ inputIds: [[1, 2, 3]] })).logits.data.slice()
  // An editor within the bounds whose output is huge: bias 1e7 on every layer makes Ũ, D̃ ~1e7.
  const spec = new MEND(m, { rank: 4, innerParams: inner }).editorSpec()
  for (const l of spec.transforms[0].layers) l.bias.fill(1e7)
  spec.editLrs.fill(1e4)
  const loud = MEND.fromEditorSpec(m, spec, { innerParams: inner, rank: 4 })
  await refused(t, () => loud.edit(batch), /"transformer\.h\.0\.mlp\.c_fc\.weight" (by up to|holds .* beyond)/, 'MEND.edit with a huge effect')

  const { edited } = await new MEND(m, { rank: 4, innerParams: inner }).edit(batch)
  const rec = edited.model.edits[0]
  const name = Object.keys(rec.factors)[0]
  const editedLogits = (await edited.model.forward({ inputIds: [[1, 2, 3]] })).logits.data.slice()
  const withAlpha = (alpha: number) => [{ ...rec, alphas: { [name]: alpha } }]
  await refused(t, () => FunctionalGPT2LMHeadModel.fromEdits(m, withAlpha(1e30)), /α·Ũ of "transformer\.h\.0\.mlp\.c_fc\.weight" holds .* beyond the largest accepted magnitude/, 'fromEdits with α 1e30')
  // Factors within the bound whose product is not: u = d = 1e7 per element.
  const big = (x: { shape: number[]; data: Float32Array }) => ({ shape: x.shape, data: new Float32Array(x.data.length).fill(1e7) })
  const bigRec = { ...rec, alphas: { [name]: 1 }, factors: { [name]: { u: big(rec.factors[name].u), d: big(rec.factors[name].d) } } }
  await refused(t, () => FunctionalGPT2LMHeadModel.fromEdits(m, [bigRec]), /would change .* by up to/, 'fromEdits with factors 1e7 (finite, huge effect)')
  // A huge factor times a zero one: no change to the weights, but (x·aᵀ)·b would overflow in the middle (found by the fuzzer).
  const zeroD = { ...rec, alphas: { [name]: 1 }, factors: { [name]: { u: { shape: rec.factors[name].u.shape, data: new Float32Array(rec.factors[name].u.data.length).fill(3e38) }, d: { shape: rec.factors[name].d.shape, data: new Float32Array(rec.factors[name].d.data.length) } } } }
  await refused(t, () => FunctionalGPT2LMHeadModel.fromEdits(m, [zeroD]), /α·Ũ .* holds 3e\+38/, 'fromEdits with a 3e38 factor and a zero one')
  const nanU = Float32Array.from(rec.factors[name].u.data)
  nanU[0] = NaN
  const nanRec = { ...rec, factors: { [name]: { u: { shape: rec.factors[name].u.shape, data: nanU }, d: rec.factors[name].d } } }
  await refused(t, () => FunctionalGPT2LMHeadModel.fromEdits(m, [nanRec]), /holds NaN or Inf/, 'fromEdits with a NaN factor')
  // A 200-edit chain of ordinary edits stays accepted (the bound is cumulative but far away).
  const chain = await FunctionalGPT2LMHeadModel.fromEdits(m, Array.from({ length: 200 }, () => rec))
  t.equal(chain.edits.length, 200, '200 ordinary edits are accepted')
  chain.dispose?.()

  // The edit log: NaN factors in the file are refused at load; a log holding NaN is never written.
  const log = path.join(tmp, 'edits.safetensors')
  await edited.model.saveEdits(log)
  const r = await native().safetensorsRead(log)
  const tensors = Object.entries(r.tensors).map(([n, x]) => ({ name: n, shape: x.shape, data: n.endsWith('.d') ? Float32Array.from(x.data!, (v, i) => (i === 0 ? NaN : v)) : x.data! }))
  const badLog = path.join(tmp, 'edits-nan.safetensors')
  await native().safetensorsWrite(badLog, tensors, r.metadata)
  await refused(t, () => FunctionalGPT2LMHeadModel.loadEdits(m, badLog), /edits-nan\.safetensors: factors of edit 0 .* hold NaN or Inf/, 'loadEdits with NaN factors')
  rec.factors[name].d.data[0] = NaN // the record's arrays are the user's: poison them after the fact
  const nanLog = path.join(tmp, 'edits-out.safetensors')
  await refused(t, () => edited.model.saveEdits(nanLog), /edits-out\.safetensors: tensor "edits\.0\..*\.d" holds NaN or Inf/, 'saveEdits of a log holding NaN')
  t.notOk(fs.existsSync(nanLog), 'nothing was written')

  t.same(Array.from((await m.forward({ inputIds: [[1, 2, 3]] })).logits.data), Array.from(before), 'the base model is unchanged')
  t.same(Array.from((await edited.model.forward({ inputIds: [[1, 2, 3]] })).logits.data), Array.from(editedLogits), 'the edited model is unchanged')
  const out = path.join(tmp, 'saved')
  await edited.model.savePretrained(out)
  const back = await GPT2LMHeadModel.fromPretrained(out)
  t.ok((await back.forward({ inputIds: [[1, 2, 3]] })).logits.data.every(Number.isFinite), 'savePretrained wrote finite weights that reload')
})
