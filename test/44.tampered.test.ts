// 44.tampered — tampered files are refused, naming the file (issue 13, finding 7): training
// checkpoints with negative or non-numeric counters or NaN Adam moments (they used to be taken and
// left the trainer's editor NaN), and edit logs with factors for a weight that is not an editable
// Conv1D weight (wte) or with 3-D factors (they used to be applied, reinterpreted).
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { GPT2LMHeadModel, MEND, EditTrainer, FunctionalGPT2LMHeadModel } from '../lib/index'
import { native } from '../lib/core/native'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-tampered-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const cfg = { nLayer: 1, nHead: 2, nEmbd: 8, vocabSize: 20, nPositions: 10 }
const inner = ['transformer.h.0.mlp.c_fc.weight']
const batch = { inputIds: [[1, 2, 3, 4]], attentionMask: [[1, 1, 1, 1]], labels: [[-100, -100, 3, 4]] }

type Read = Awaited<ReturnType<ReturnType<typeof native>['safetensorsRead']>>
async function rewrite(src: Read, file: string, edit: (name: string, d: Float32Array) => Float32Array | undefined, meta: Record<string, string>, shapes: Record<string, number[]> = {}) {
  const tensors = Object.entries(src.tensors).map(([name, x]) => ({ name, shape: shapes[name] ?? x.shape, data: edit(name, Float32Array.from(x.data!)) ?? Float32Array.from(x.data!) }))
  await native().safetensorsWrite(file, tensors, { ...src.metadata, ...meta })
}

async function refused(t: Tap, p: () => Promise<unknown>, code: string, pattern: RegExp, what: string) {
  try {
    await p()
    t.fail(`${what}: accepted`)
  } catch (e) {
    t.equal((e as { code?: string }).code, code, `${what}: ${code} (${(e as Error).message})`)
    t.match((e as Error).message, pattern, `${what}: the message names it`)
  }
}
type Tap = typeof t

t.test('tampered training checkpoints', async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 1)
  const trainer = new EditTrainer(new MEND(m, { innerParams: inner, rank: 4 }), { accumulateBs: 1, maxIters: 2, lr: 1e-3 })
  await trainer.run([{ edit: batch, loc: { inputIds: [[5, 6, 7]], attentionMask: [[1, 1, 1]] } }], [])
  const ck = path.join(tmp, 'ck.safetensors')
  await trainer.saveCheckpoint(ck)
  const src = await native().safetensorsRead(ck)
  const keep = () => undefined
  for (const [key, v] of [['n_adam', '-1'], ['n_adam', 'x'], ['n_adam', '99999'], ['steps', '-3'], ['steps', 'NaN'], ['adam_t', '-1'], ['adam_t', '1.5']] as const) {
    const f = path.join(tmp, `ck-${key}-${v}.safetensors`)
    await rewrite(src, f, keep, { [key]: v })
    await refused(t, () => EditTrainer.resume(m, f), 'ERR_SAFETENSORS', new RegExp(`ck-${key}-.*metadata "${key}" must be a non-negative integer`), `${key} = ${v}`)
  }
  const nanM = path.join(tmp, 'ck-nan-m.safetensors')
  await rewrite(src, nanM, (n, d) => (n === 'adam.m.0' ? d.fill(NaN) : undefined), {})
  await refused(t, () => EditTrainer.resume(m, nanM), 'ERR_NON_FINITE', /ck-nan-m\.safetensors: tensor "adam\.m\.0" holds NaN/, 'NaN Adam moments')
  const negV = path.join(tmp, 'ck-neg-v.safetensors')
  await rewrite(src, negV, (n, d) => (n === 'adam.v.0' ? d.fill(-1) : undefined), {})
  await refused(t, () => EditTrainer.resume(m, negV), 'ERR_INVALID_ARG', /ck-neg-v\.safetensors: .*negative second moment/, 'negative Adam second moments')
  const resumed = await EditTrainer.resume(m, ck)
  t.equal(resumed.steps, 2, 'the untampered checkpoint still resumes')
})

t.test('tampered edit logs', async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 1)
  const { edited } = await new MEND(m, { innerParams: inner, rank: 4 }).edit(batch)
  const log = path.join(tmp, 'edits.safetensors')
  await edited.model.saveEdits(log)
  const src = await native().safetensorsRead(log)
  const meta = JSON.parse(src.metadata.edits)
  // The factors renamed to wte (a 2-D weight that is not a Conv1D): refused, not applied.
  const wte = path.join(tmp, 'edits-wte.safetensors')
  const renamed = { ...src, tensors: Object.fromEntries(Object.entries(src.tensors).map(([n, x]) => [n.replace(inner[0], 'transformer.wte.weight'), x])) }
  await rewrite(renamed as Read, wte, () => undefined, {
    edits: JSON.stringify(meta.map((e: { params: string[]; alphas: Record<string, number> }) => ({ ...e, params: ['transformer.wte.weight'], alphas: { 'transformer.wte.weight': e.alphas[inner[0]] } }))),
  })
  await refused(t, () => FunctionalGPT2LMHeadModel.loadEdits(m, wte, { allowBaseMismatch: true }), 'ERR_SHAPE_MISMATCH', /edits-wte\.safetensors: factors of edit 0 for "transformer\.wte\.weight" do not fit/, 'factors for wte')
  // 3-D factors with the same number of values: refused, not reinterpreted.
  const u = src.tensors[`edits.0.${inner[0]}.u`]
  const threeD = path.join(tmp, 'edits-3d.safetensors')
  await rewrite(src, threeD, () => undefined, {}, { [`edits.0.${inner[0]}.u`]: [u.shape[0], 1, u.shape[1]] })
  await refused(t, () => FunctionalGPT2LMHeadModel.loadEdits(m, threeD), 'ERR_SHAPE_MISMATCH', /edits-3d\.safetensors: factors of edit 0/, '3-D factors')
  // The same through fromEdits, and natively.
  const rec = edited.model.edits[0]
  const f = rec.factors[inner[0]]
  await refused(t, () => FunctionalGPT2LMHeadModel.fromEdits(m, [{ ...rec, factors: { 'transformer.wte.weight': f }, alphas: { 'transformer.wte.weight': 1 } }]), 'ERR_SHAPE_MISMATCH', /"transformer\.wte\.weight" is not an editable Conv1D weight/, 'fromEdits for wte')
  await refused(t, () => FunctionalGPT2LMHeadModel.fromEdits(m, [{ ...rec, factors: { [inner[0]]: { u: { shape: [f.u.shape[0], 1, f.u.shape[1]], data: f.u.data }, d: f.d } } }]), 'ERR_SHAPE_MISMATCH', /have shapes/, 'fromEdits with 3-D factors')
  const wteIndex = m.parameters().findIndex((p) => p.name === 'transformer.wte.weight')
  await refused(t, () => native().buildOverlay(m.native, [[{ param: wteIndex, a: new Float32Array(8 * 20), b: new Float32Array(8 * 20) }]]), 'ERR_INVALID_ARG', /not an editable Conv1D weight/, 'native buildOverlay for wte')
  t.equal((await FunctionalGPT2LMHeadModel.loadEdits(m, log)).edits.length, 1, 'the untampered log still loads')
})
