// Bad input to the engine (DESIGN §8): every case is an Error with a code and a message naming the
// argument, file or tensor; the process survives and the model still works afterwards.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { GPT2LMHeadModel } from '../lib/index'
import { toHFConfig } from '../lib/model/config'

const cfg = { nLayer: 1, nHead: 2, nEmbd: 8, vocabSize: 20, nPositions: 10 }
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-err-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

async function rejects(t: Tap, p: () => Promise<unknown>, code: string, pattern: RegExp, what: string) {
  try {
    await p()
    t.fail(`${what}: expected ${code}, but it succeeded`)
  } catch (e) {
    const err = e as Error & { code?: string }
    t.equal(err.code, code, `${what}: code ${err.code}`)
    t.match(err.message, pattern, `${what}: message "${err.message}"`)
  }
}
type Tap = typeof t

t.test('batch errors', async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 1)
  const good = [[1, 2, 3]]
  const before = (await m.forward({ inputIds: good })).logits.data.slice()
  await rejects(t, () => m.forward({ inputIds: [[1, 20, 3]] }), 'ERR_TOKEN_OUT_OF_RANGE', /inputIds\[0\]\[1\] = 20/, 'id = vocab size')
  await rejects(t, () => m.forward({ inputIds: [[1, -1, 3]] }), 'ERR_TOKEN_OUT_OF_RANGE', /inputIds\[0\]\[1\]/, 'negative id')
  await rejects(t, () => m.forward({ inputIds: [[1.5]] }), 'ERR_INVALID_ARG', /inputIds\[0\]\[0\]/, 'non-integer id')
  await rejects(t, () => m.forward({ inputIds: [new Array(11).fill(1)] }), 'ERR_SEQUENCE_TOO_LONG', /11 > n_positions 10/, 'too long')
  await rejects(t, () => m.forward({ inputIds: [[1, 2], [3]] }), 'ERR_INVALID_ARG', /inputIds\[1\]/, 'ragged rows')
  await rejects(t, () => m.forward({ inputIds: [] }), 'ERR_INVALID_ARG', /inputIds/, 'empty')
  await rejects(t, () => m.forward({ inputIds: 'abc' as never }), 'ERR_INVALID_ARG', /inputIds/, 'a string')
  await rejects(t, () => m.forward({ inputIds: { data: new Int32Array(5), shape: [2, 3] } }), 'ERR_INVALID_ARG', /6 elements/, 'typed array of the wrong length')
  await rejects(t, () => m.forward({ inputIds: good, attentionMask: [[1, 1]] }), 'ERR_SHAPE_MISMATCH', /attentionMask/, 'mask shape')
  await rejects(t, () => m.forward({ inputIds: good, attentionMask: [[1, 2, 1]] }), 'ERR_INVALID_ARG', /attentionMask/, 'mask value')
  await rejects(t, () => m.forward({ inputIds: good, labels: [[1, 2]] }), 'ERR_SHAPE_MISMATCH', /labels/, 'labels shape')
  await rejects(t, () => m.lossAndGrad({ inputIds: good, labels: [[5, -100, -100]] }), 'ERR_NO_TARGET_TOKENS', /no target/, 'labels with no target')
  await rejects(t, () => m.lossAndGrad({ inputIds: good, labels: [[-100, 20, -100]] }), 'ERR_TOKEN_OUT_OF_RANGE', /labels\[0\]\[1\]/, 'label out of range')
  await rejects(t, () => m.lossAndGrad({ inputIds: good }), 'ERR_INVALID_ARG', /labels/, 'labels missing')
  await rejects(t, () => m.lossAndGrad({ inputIds: good, labels: good }, { params: ['h.0.nope'] }), 'ERR_INVALID_ARG', /unknown parameter "h.0.nope"/, 'unknown param')
  await rejects(t, () => m.lossAndGrad({ inputIds: good, labels: good }, { capture: ['h.0.ln_1.weight'] }), 'ERR_INVALID_ARG', /not a Conv1D weight/, 'capture a LayerNorm')
  await rejects(t, () => m.generate(good, { maxNewTokens: 8 }), 'ERR_SEQUENCE_TOO_LONG', /maxNewTokens 8/, 'generate past n_positions')
  await rejects(t, () => m.generate(good, { temperature: -1 }), 'ERR_INVALID_ARG', /temperature/, 'negative temperature')
  await rejects(t, () => m.generate(good, { eosTokenId: 99 }), 'ERR_TOKEN_OUT_OF_RANGE', /eosTokenId/, 'eos out of range')
  // Native checks too (bypassing the TypeScript validation).
  await rejects(t, () => m.native.forward(new Int32Array([1, 25]), 1, 2, null, null, false), 'ERR_TOKEN_OUT_OF_RANGE', /25/, 'native id check')
  await rejects(t, () => m.native.forward(new Int32Array([1, 2]), 1, 3, null, null, false), 'ERR_INVALID_ARG', /expected B\*T/, 'native length check')
  const after = (await m.forward({ inputIds: good })).logits.data
  t.same(Array.from(after), Array.from(before), 'the model is unchanged after the errors')
  m.dispose()
  await rejects(t, () => m.forward({ inputIds: good }), 'ERR_DISPOSED', /disposed/, 'use after dispose')
})

t.test('loading errors', async (t) => {
  const m = await GPT2LMHeadModel.random(cfg, 2)
  const dir = path.join(tmp, 'ok')
  await m.savePretrained(dir)
  const variant = (name: string, edit: (d: string) => void) => {
    const d = path.join(tmp, name)
    fs.cpSync(dir, d, { recursive: true })
    edit(d)
    return d
  }
  await rejects(t, () => GPT2LMHeadModel.fromPretrained(path.join(tmp, 'none')), 'ERR_IO', /none.*config\.json/, 'missing directory')
  const noKey = variant('nokey', (d) => {
    const c = JSON.parse(fs.readFileSync(path.join(d, 'config.json'), 'utf8'))
    delete c.n_head
    fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(c))
  })
  await rejects(t, () => GPT2LMHeadModel.fromPretrained(noKey), 'ERR_CONFIG', /config\.json: missing key "n_head"/, 'missing config key')
  const badJson = variant('badjson', (d) => fs.writeFileSync(path.join(d, 'config.json'), '{"n_layer": 1,'))
  await rejects(t, () => GPT2LMHeadModel.fromPretrained(badJson), 'ERR_CONFIG', /config\.json is not valid JSON/, 'config not JSON')
  const act = variant('act', (d) => fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify({ ...toHFConfig(cfg), activation_function: 'relu' })))
  await rejects(t, () => GPT2LMHeadModel.fromPretrained(act), 'ERR_CONFIG', /activation_function "relu"/, 'unsupported activation')
  const wrongShape = variant('shape', (d) => fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(toHFConfig({ ...cfg, nEmbd: 12 }))))
  await rejects(t, () => GPT2LMHeadModel.fromPretrained(wrongShape), 'ERR_SHAPE_MISMATCH', /model\.safetensors: tensor "transformer\.wte\.weight" has shape \[20,8\], expected \[20,12\]/, 'shape mismatch')
  const missing = variant('missing', (d) => fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(toHFConfig({ ...cfg, nLayer: 2 }))))
  await rejects(t, () => GPT2LMHeadModel.fromPretrained(missing), 'ERR_MISSING_TENSOR', /missing tensor "transformer\.h\.1\.ln_1\.weight"/, 'missing tensor')
  const noWeights = variant('noweights', (d) => fs.rmSync(path.join(d, 'model.safetensors')))
  await rejects(t, () => GPT2LMHeadModel.fromPretrained(noWeights), 'ERR_IO', /model\.safetensors does not exist/, 'missing weights')
  const truncated = variant('trunc', (d) => {
    const f = path.join(d, 'model.safetensors')
    fs.writeFileSync(f, fs.readFileSync(f).subarray(0, 200))
  })
  await rejects(t, () => GPT2LMHeadModel.fromPretrained(truncated), 'ERR_SAFETENSORS', /model\.safetensors/, 'truncated weights')
  await rejects(t, () => GPT2LMHeadModel.random({ ...cfg, nHead: 3 }), 'ERR_CONFIG', /multiple of nHead/, 'random with a bad config')
})
