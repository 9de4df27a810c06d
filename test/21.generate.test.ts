// 21.generate — generation the transformers way: ragged prompts (left-padded internally) give each
// row's own greedy continuation; eos from the config by default; doSample; nucleus (topP) and the
// repetition penalty against a JavaScript reference; includePrompt; the tokenizer's batch encode.
import t from 'tap'
import { GPT2LMHeadModel } from '../lib/index'
import { gpt2Tokenizer } from './helpers/tiny'

const cfg = { nLayer: 2, nHead: 2, nEmbd: 32, vocabSize: 50257, nPositions: 48 }
const tok = gpt2Tokenizer()
let model: GPT2LMHeadModel
t.before(async () => { model = await GPT2LMHeadModel.random(cfg, 11) })

const argmax = (row: ArrayLike<number>) => { let b = 0; for (let i = 1; i < row.length; i++) if (row[i] > row[b]) b = i; return b }

t.test('ragged prompts: left-padded internally, each row continues as if alone; includePrompt', async (t) => {
  const prompts = ['The capital of France is', 'Hi', 'Water boils at one hundred degrees']
  const ids = prompts.map((p) => tok.encode(p))
  const batched = await model.generate(ids, { maxNewTokens: 5, eosTokenId: -1 })
  for (let i = 0; i < ids.length; i++) {
    const alone = await model.generate([ids[i]], { maxNewTokens: 5, eosTokenId: -1 })
    t.same(batched[i], alone[0], `row ${i} (${ids[i].length} tokens): the same greedy tokens as alone`)
  }
  const full = await model.generate(ids, { maxNewTokens: 5, eosTokenId: -1, includePrompt: true })
  t.same(full, ids.map((p, i) => [...p, ...batched[i]]), 'includePrompt: each row is its prompt (no padding) + the new tokens')
  const enc = tok.encodeBatch(prompts, { padding: true, paddingSide: 'left' })
  t.same(enc.attentionMask.map((m) => m.reduce((a, b) => a + b, 0)), ids.map((p) => p.length), 'encodeBatch: the mask counts the real tokens')
  t.same(await model.generate(enc.inputIds, { attentionMask: enc.attentionMask, maxNewTokens: 5, eosTokenId: -1 }), batched, 'encodeBatch(padding, left) + mask = the ragged call')
  const right = tok.encodeBatch(prompts, { padding: true })
  t.same(right.inputIds[1].slice(0, ids[1].length), ids[1], 'right padding by default')
})

t.test('eosTokenId defaults to the config\'s eos_token_id', async (t) => {
  const ids = [tok.encode('The capital of France is')]
  const [free] = await model.generate(ids, { maxNewTokens: 4, eosTokenId: -1 })
  const hf = { vocab_size: cfg.vocabSize, n_embd: cfg.nEmbd, n_layer: cfg.nLayer, n_head: cfg.nHead, n_positions: cfg.nPositions, eos_token_id: free[1] }
  const withEos = await GPT2LMHeadModel.random(hf, 11)
  const [stopped] = await withEos.generate(ids, { maxNewTokens: 4 })
  t.same(stopped, free.slice(0, free.indexOf(free[1]) + 1), `stops at the config's eos ${free[1]} (greedy: ${JSON.stringify(free)})`)
  t.same((await withEos.generate(ids, { maxNewTokens: 4, eosTokenId: -1 }))[0], free, 'eosTokenId: -1 never stops early')
})

t.test('doSample, topP and the repetition penalty', async (t) => {
  const ids = [tok.encode('The capital of France is')]
  const greedy = await model.generate(ids, { maxNewTokens: 6, eosTokenId: -1 })
  t.same(await model.generate(ids, { maxNewTokens: 6, eosTokenId: -1, doSample: false, temperature: 2 }), greedy, 'doSample: false is greedy whatever the temperature')
  const s1 = await model.generate(ids, { maxNewTokens: 6, eosTokenId: -1, doSample: true, seed: 3 })
  t.same(await model.generate(ids, { maxNewTokens: 6, eosTokenId: -1, temperature: 1, seed: 3 }), s1, 'doSample: true samples at temperature 1 (as temperature: 1)')
  t.same(await model.generate(ids, { maxNewTokens: 6, eosTokenId: -1, temperature: 1, topP: 1, seed: 3 }), s1, 'topP 1 changes nothing')
  t.same(await model.generate(ids, { maxNewTokens: 6, eosTokenId: -1, temperature: 5, topP: 1e-6, seed: 3 }), greedy, 'a tiny nucleus keeps only the most likely token: greedy')
  // A nucleus only ever draws tokens inside the JavaScript nucleus of the first step (at a low
  // temperature, so that the random model's flat distribution has a small nucleus).
  const { logits } = await model.forward({ inputIds: ids }, { lastOnly: true })
  const l = Array.from(logits.data), mx = Math.max(...l), T = 0.02
  const p = l.map((x) => Math.exp((x - mx) / T)), Z = p.reduce((a, b) => a + b, 0)
  const order = p.map((x, i) => [x / Z, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1])
  const nucleus = new Set<number>()
  let cum = 0
  for (const [q, i] of order) { if (nucleus.size > 0 && cum >= 0.5) break; nucleus.add(i); cum += q }
  const firsts = new Set<number>()
  const all = new Set<number>()
  for (let seed = 0; seed < 40; seed++) {
    firsts.add((await model.generate(ids, { maxNewTokens: 1, eosTokenId: -1, temperature: T, topP: 0.5, seed }))[0][0])
    all.add((await model.generate(ids, { maxNewTokens: 1, eosTokenId: -1, temperature: T, seed }))[0][0])
  }
  t.ok(nucleus.size >= 2 && nucleus.size < 50, `the reference nucleus at topP 0.5 has ${nucleus.size} tokens`)
  t.ok([...firsts].every((x) => nucleus.has(x)), `topP 0.5: 40 draws use ${firsts.size} distinct first tokens, all inside it`)
  t.ok([...all].some((x) => !nucleus.has(x)), `without topP, draws fall outside it (${[...all].filter((x) => !nucleus.has(x)).length} of ${all.size} distinct)`)
  // Repetition penalty: one greedy step against HF's processor applied in JavaScript.
  const pen = 1.7
  const seen = new Set(ids[0])
  const lp = l.map((x, i) => (seen.has(i) ? (x > 0 ? x / pen : x * pen) : x))
  t.equal((await model.generate(ids, { maxNewTokens: 1, eosTokenId: -1, repetitionPenalty: pen }))[0][0], argmax(lp), 'repetitionPenalty: the first token is the argmax of the penalised logits')
  const heavy = (await model.generate(ids, { maxNewTokens: 8, eosTokenId: -1, repetitionPenalty: 1e4 }))[0]
  t.ok(heavy.every((x, i) => !seen.has(x) && heavy.indexOf(x) === i), `a huge penalty repeats no token of the prompt or of the output: ${JSON.stringify(heavy)}`)
  await t.rejects(model.generate(ids, { topP: 0 }), { code: 'ERR_INVALID_ARG', message: /topP/ })
  await t.rejects(model.generate(ids, { repetitionPenalty: -1 }), { code: 'ERR_INVALID_ARG', message: /repetitionPenalty/ })
  await t.rejects(model.generate(ids, { doSample: true, temperature: 0 }), { code: 'ERR_INVALID_ARG', message: /temperature > 0 with doSample/ })
})
