// 24.coded-errors — misuse of the API is a coded Error, never a bare TypeError (issue 13, findings 9
// and 10): option values of the wrong type, null where an object belongs, an edit request that the
// edit log could not store (refused at edit time, not at save time), setNumThreads and generate's
// seed out of range, config sizes beyond 32 bits, and editor metadata errors naming the file and key.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { GPT2LMHeadModel, MEND, FunctionalGPT2LMHeadModel, EditTrainer, setNumThreads, numThreads } from '../lib/index'
import { native } from '../lib/core/native'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-coded-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const cfg = { nLayer: 1, nHead: 2, nEmbd: 8, vocabSize: 20, nPositions: 10 }
const batch = { inputIds: [[1, 2, 3]], labels: [[1, 2, 3]] }
const inner = ['h.0.mlp.c_fc.weight']

async function coded(t: Tap, p: () => unknown, code: string, pattern: RegExp, what: string) {
  try {
    await p()
    t.fail(`${what}: accepted`)
  } catch (e) {
    t.equal((e as { code?: string }).code, code, `${what}: ${(e as Error).constructor.name} ${(e as { code?: string }).code}: ${(e as Error).message}`)
    t.match((e as Error).message, pattern, `${what}: the message names it`)
  }
}
type Tap = typeof t

t.test('wrong types are ERR_INVALID_ARG, not TypeError', async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 1)
  const mend = new MEND(m, { rank: 4, innerParams: inner })
  await coded(t, () => m.lossAndGrad(batch, { params: 'h.0.mlp.c_fc.weight' as never }), 'ERR_INVALID_ARG', /lossAndGrad params/, 'params as a string')
  await coded(t, () => m.lossAndGrad(batch, { capture: 'h.0.mlp.c_fc.weight' as never }), 'ERR_INVALID_ARG', /lossAndGrad capture/, 'capture as a string')
  await coded(t, () => new MEND(m, { innerParams: 'h.0.mlp.c_fc.weight' as never }), 'ERR_INVALID_ARG', /innerParams/, 'innerParams as a string')
  await coded(t, () => GPT2LMHeadModel.random(null as never), 'ERR_CONFIG', /received null/, 'random(null)')
  await coded(t, () => MEND.fromPretrained(null as never, path.join(tmp, 'x.safetensors')), 'ERR_INVALID_ARG', /GPT2LMHeadModel for MEND\.fromPretrained/, 'MEND.fromPretrained(null, f)')
  await coded(t, () => MEND.fromPretrained(m, 42 as never), 'ERR_INVALID_ARG', /editor file path/, 'MEND.fromPretrained(m, 42)')
  await coded(t, () => FunctionalGPT2LMHeadModel.fromEdits(m, [null as never]), 'ERR_INVALID_ARG', /fromEdits edits\[0\]/, 'fromEdits(m, [null])')
  await coded(t, () => FunctionalGPT2LMHeadModel.fromEdits(m, [{ factors: { x: 1 }, alphas: {} } as never]), 'ERR_INVALID_ARG', /factors\["x"\]/, 'fromEdits with a bad factor')
  await coded(t, () => FunctionalGPT2LMHeadModel.fromEdits(m, 'edits' as never), 'ERR_INVALID_ARG', /array of edit records/, 'fromEdits(m, string)')
  const trainer = new EditTrainer(mend, { maxIters: 1 })
  await coded(t, () => trainer.run([undefined as never], []), 'ERR_INVALID_ARG', /EditTrainer\.run train\[0\]/, 'trainer.run([undefined])')
  await coded(t, () => trainer.run([{ edit: batch, loc: batch }], [null as never]), 'ERR_INVALID_ARG', /EditTrainer\.run val\[0\]/, 'trainer.run(train, [null])')
  await coded(t, () => m.generate([[1, 2]], { maxNewTokens: 2, seed: NaN }), 'ERR_INVALID_ARG', /generate seed/, 'generate seed NaN')
  await coded(t, () => m.generate([[1, 2]], { maxNewTokens: 2, seed: -1 }), 'ERR_INVALID_ARG', /generate seed/, 'generate seed -1')
  await coded(t, () => m.generate([[1, 2]], { maxNewTokens: 2, useCache: 'no' as never }), 'ERR_INVALID_ARG', /useCache/, 'generate useCache a string')
  // null options are no options (they were a TypeError)
  t.ok((await m.forward(batch, null as never)).logits, 'forward(batch, null)')
  t.ok(Number.isFinite((await m.lossAndGrad(batch, null as never)).loss), 'lossAndGrad(batch, null)')
  t.ok((await mend.edit(batch, null as never)).edited, 'edit(batch, null)')
})

t.test('an edit request the log cannot store is refused at edit time', async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 1)
  const mend = new MEND(m, { rank: 4, innerParams: inner })
  const circular: Record<string, unknown> = {}
  circular.self = circular
  await coded(t, () => mend.edit(batch, { request: circular }), 'ERR_INVALID_ARG', /JSON-serialisable value for MEND\.edit request/, 'a circular request')
  await coded(t, () => mend.edit(batch, { request: { n: 1n } }), 'ERR_INVALID_ARG', /JSON-serialisable/, 'a BigInt request')
  const { edited } = await mend.edit(batch, { request: { prompt: 'ok' } })
  await edited.model.saveEdits(path.join(tmp, 'ok.safetensors'))
  t.pass('a plain request is stored')
})

t.test('setNumThreads is bounded', async (t) => {
  const before = numThreads()
  for (const n of [2.5, 0, -1, 10000, NaN, '2' as never]) {
    await coded(t, () => setNumThreads(n), 'ERR_INVALID_ARG', /setNumThreads/, `setNumThreads(${String(n)})`)
  }
  t.equal(numThreads(), before, 'the thread count is unchanged')
  t.throws(() => native().setNumThreads(10000), { code: 'ERR_INVALID_ARG', message: /\[1, 256\]/ }, 'the native check too')
  t.throws(() => native().setNumThreads(2.5), { code: 'ERR_INVALID_ARG' }, 'native: 2.5')
})

t.test('config sizes and editor metadata', async (t) => {
  await coded(t, () => GPT2LMHeadModel.random({ ...cfg, vocabSize: 2 ** 31 }), 'ERR_CONFIG', /vocabSize must be a positive integer at most 2147483647 but is 2147483648/, 'vocab_size 2^31')
  await coded(t, () => GPT2LMHeadModel.random({ vocab_size: 2 ** 31, n_embd: 8, n_layer: 1, n_head: 2, n_positions: 10 } as never), 'ERR_CONFIG', /"vocab_size" must be a positive integer at most/, 'HF vocab_size 2^31')
  // Sizes bounded before anything is allocated (they were a bad_alloc, or an OOM kill).
  await coded(t, () => GPT2LMHeadModel.random({ ...cfg, nEmbd: 2 ** 21, nHead: 1 }), 'ERR_CONFIG', /n_embd \(at most 2\^20\)/, 'n_embd 2^21')
  await coded(t, () => GPT2LMHeadModel.random({ ...cfg, vocabSize: 2 ** 24, nEmbd: 1024, nHead: 1 }), 'ERR_CONFIG', /would have \d+ elements/, 'a 2^34-element wte')
  await coded(t, () => GPT2LMHeadModel.random({ ...cfg, nLayer: 1000, nEmbd: 8192, nHead: 1 }), 'ERR_CONFIG', /would have \d+ parameters \(more than 2\^34\)/, '800 billion parameters')
  const m = await GPT2LMHeadModel.random(cfg, 1)
  const file = path.join(tmp, 'editor.safetensors')
  await new MEND(m, { rank: 4, innerParams: inner }).save(file)
  const r = await native().safetensorsRead(file)
  const tensors = Object.entries(r.tensors).map(([name, x]) => ({ name, shape: x.shape, data: x.data! }))
  const bad = path.join(tmp, 'editor-bad-meta.safetensors')
  await native().safetensorsWrite(bad, tensors, { ...r.metadata, n_hidden: '1.5' })
  await coded(t, () => MEND.fromPretrained(m, bad), 'ERR_INVALID_ARG', /editor-bad-meta\.safetensors: metadata "n_hidden" \("1\.5"\)/, 'editor metadata n_hidden 1.5')
  // A network with layers.0 and layers.2 but no layers.1 (finding 7) is refused, not read as one layer.
  const spec = new MEND(m, { rank: 4, innerParams: inner, nHidden: 2 })
  const three = path.join(tmp, 'editor-3.safetensors')
  await spec.save(three)
  const r3 = await native().safetensorsRead(three)
  const gap = path.join(tmp, 'editor-gap.safetensors')
  await native().safetensorsWrite(gap, Object.entries(r3.tensors).filter(([n]) => !n.includes('.layers.1.')).map(([name, x]) => ({ name, shape: x.shape, data: x.data! })), r3.metadata)
  await coded(t, () => MEND.fromPretrained(m, gap), 'ERR_MISSING_TENSOR', /editor-gap\.safetensors: ".*layers\.2\..*" belongs to layer 2 but ".*layers\.1\.u" is missing/, 'an editor with a gap in its layers')
})
