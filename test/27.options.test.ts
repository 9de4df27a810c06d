// 27.options — option objects: EasyEdit's / transformers' snake_case names are aliases of the
// camelCase ones and give the same results; any other unknown key is ERR_INVALID_ARG naming the
// key and the nearest valid one (before this, `generate(ids, { max_new_tokens: 3 })` silently
// produced 20 tokens and `edit({ sequential_edit: true })` silently edited one request at a time).
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { BaseEditor, EditTrainer, GPT2LMHeadModel, GPT2Tokenizer, MEND } from '../lib/index'
import { checkOptions } from '../lib/core/check'
import { gpt2Tokenizer } from './helpers/tiny'

const cfg = { nLayer: 2, nHead: 2, nEmbd: 16, vocabSize: 50257, nPositions: 32 }
const inner = ['transformer.h.1.mlp.c_proj.weight', 'transformer.h.1.mlp.c_fc.weight']
let model: GPT2LMHeadModel
let tok: GPT2Tokenizer
t.before(async () => {
  model = await GPT2LMHeadModel.random(cfg, 3)
  tok = gpt2Tokenizer()
})

t.test('checkOptions: camelCase keys, snake_case aliases, unknown keys refused with the nearest one', async (t) => {
  const keys = ['maxNewTokens', 'eosTokenId', 'topK']
  t.same(checkOptions({ maxNewTokens: 3, top_k: 2 }, 'generate', keys), { maxNewTokens: 3, topK: 2 })
  t.same(checkOptions({ max_new_tokens: 3, eosTokenId: undefined }, 'generate', keys), { maxNewTokens: 3 }, 'undefined values are dropped')
  t.throws(() => checkOptions({ max_new_token: 3 }, 'generate', keys), { code: 'ERR_INVALID_ARG', message: /Unknown option "max_new_token" for generate; did you mean "maxNewTokens"\?/ })
  t.throws(() => checkOptions({ maxNewTokens: 3, max_new_tokens: 4 }, 'generate', keys), { code: 'ERR_INVALID_ARG', message: /given twice/ })
  t.throws(() => checkOptions(5, 'generate', keys), { code: 'ERR_INVALID_ARG', message: /Expected an options object for generate but received 5/ })
})

t.test('generate: max_new_tokens, do_sample are honoured; num_beams is refused', async (t) => {
  const ids = [tok.encode('The capital of France is')]
  const a = await model.generate(ids, { maxNewTokens: 3 })
  const b = await model.generate(ids, { max_new_tokens: 3 } as never)
  t.equal(b[0].length, 3, 'max_new_tokens: 3 gives 3 tokens (it gave 20 before)')
  t.same(b, a, 'the same tokens as maxNewTokens')
  t.same(await model.generate(ids, { max_new_tokens: 3, do_sample: false, temperature: 3 } as never), a, 'do_sample: false is doSample (greedy)')
  await t.rejects(model.generate(ids, { num_beams: 4 } as never), { code: 'ERR_INVALID_ARG', message: /Unknown option "num_beams" for generate/ }, 'beam search is not supported: refused, not ignored')
  await t.rejects(model.forward({ inputIds: ids }, { last_only: true, lastonly: 1 } as never), { code: 'ERR_INVALID_ARG', message: /"lastonly"/ })
  const f1 = await model.forward({ input_ids: ids } as never, { last_only: true } as never)
  t.same(f1.logits.shape, [1, cfg.vocabSize], 'batch input_ids and last_only are aliases too')
})

t.test('BaseEditor.edit: EasyEdit\'s names are aliases; an unknown name is refused', async (t) => {
  const ed = new BaseEditor(new MEND(model, { innerParams: inner, rank: 4, editLr: -10 }), tok)
  const camel = await ed.edit({ prompts: ['The capital of France is', 'Water boils at'], targetNew: ['Lyon', 'fifty'], rephrasePrompts: ['France has its capital in', 'The boiling point of water is'],
    localityInputs: { prompt: ['The sky is', 'Who wrote Hamlet?'], groundTruth: ['blue', 'Shakespeare'] }, sequentialEdit: true })
  const snake = await ed.edit({ prompts: ['The capital of France is', 'Water boils at'], target_new: ['Lyon', 'fifty'], rephrase_prompts: ['France has its capital in', 'The boiling point of water is'],
    locality_inputs: { prompt: ['The sky is', 'Who wrote Hamlet?'], ground_truth: ['blue', 'Shakespeare'] }, sequential_edit: true } as never)
  t.same(snake.metrics, camel.metrics.map((m, i) => ({ ...m, time: snake.metrics[i].time })), 'the same metrics with EasyEdit\'s names (sequential_edit honoured)')
  t.equal((snake.edited.model as { edits: unknown[] }).edits.length, 2, 'sequential_edit: both edits are in the log')
  await t.rejects(ed.edit({ prompts: ['a'], targetNew: ['b'], keep_original_weight: true } as never), { code: 'ERR_INVALID_ARG', message: /Unknown option "keep_original_weight" for BaseEditor\.edit/ })
  await t.rejects(ed.edit({ prompts: ['a'], targetNew: ['b'], localityInputs: { neighborhood: { prompt: ['x'], groundtruth: ['y'] } } } as never),
    { code: 'ERR_INVALID_ARG', message: /Unknown option "groundtruth" for localityInputs\.neighborhood; did you mean "groundTruth"/ }, 'a misspelt key inside a named locality group is refused, not ignored')
  await t.rejects(ed.edit({ prompts: ['a'], targetNew: ['b'], localityInputs: { prompt: ['x'], answers: ['y'] } } as never),
    { code: 'ERR_INVALID_ARG', message: /Unknown option "answers" for localityInputs/ }, 'and in flat locality inputs')
})

t.test('configs: MEND, EditTrainer, Pretrainer refuse unknown keys and take snake_case', async (t) => {
  t.throws(() => new MEND(model, { innerParams: inner, ranks: 4 } as never), { code: 'ERR_INVALID_ARG', message: /Unknown option "ranks" for the MEND config; did you mean "rank"\?/ })
  const a = new MEND(model, { inner_params: inner, rank: 4, edit_lr: 1e-3, n_hidden: 1 } as never)
  t.same(a.config.innerParams, inner, 'inner_params')
  t.equal(a.config.editLr, 1e-3, 'edit_lr')
  t.throws(() => new EditTrainer(a, { lr: 1e-3, grad_clipping: 1 } as never), { code: 'ERR_INVALID_ARG', message: /"grad_clipping".*did you mean "gradClip"/ })
  const tr = new EditTrainer(a, { accumulate_bs: 3, grad_clip: 5 } as never)
  t.equal(tr.config.accumulateBs, 3); t.equal(tr.config.gradClip, 5)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-opts-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  await t.rejects(BaseEditor.fromPretrained({ model: dir, editor: 'x', tokeniser: dir } as never), { code: 'ERR_INVALID_ARG', message: /"tokeniser".*did you mean "tokenizer"/ })
})

t.test('model configs: config.json keys as Hugging Face writes them, or camelCase; a missing key is named', async (t) => {
  const camel = { vocabSize: 37, nEmbd: 8, nLayer: 1, nHead: 2, nPositions: 16 }
  const hf = { vocab_size: 37, n_embd: 8, n_layer: 1, n_head: 2, n_positions: 16, activation_function: 'gelu_new', architectures: ['GPT2LMHeadModel'] }
  const a = await GPT2LMHeadModel.random(camel, 4), b = await GPT2LMHeadModel.random(hf, 4)
  t.same(b.config, { ...camel, nInner: undefined, layerNormEpsilon: 1e-5, bosTokenId: undefined, eosTokenId: undefined }, 'the HF keys give the same GPT2Config')
  const ids = [[1, 2, 3, 4]]
  t.same(Array.from((await b.forward({ inputIds: ids })).logits.data), Array.from((await a.forward({ inputIds: ids })).logits.data), 'and the same model (same seed): identical logits')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-cfg-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  await b.savePretrained(dir)
  t.same(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).architectures, ['GPT2LMHeadModel'], 'savePretrained keeps the given config.json keys')
  const tensors = Object.fromEntries(a.parameters().map((p) => [p.name, Float32Array.from(a.parameter(p.name).data)]))
  const c = await GPT2LMHeadModel.fromTensors(hf, tensors)
  t.same(Array.from((await c.forward({ inputIds: ids })).logits.data), Array.from((await a.forward({ inputIds: ids })).logits.data), 'fromTensors takes HF keys too')
  const { n_head: _, ...noHead } = hf
  await t.rejects(GPT2LMHeadModel.random(noHead, 0), { code: 'ERR_CONFIG', message: /GPT2LMHeadModel\.random: missing key "n_head"/ })
  const { nHead: __, ...noHeadCamel } = camel
  await t.rejects(GPT2LMHeadModel.random(noHeadCamel as never, 0), { code: 'ERR_CONFIG', message: /missing key "nHead"/ })
  await t.rejects(GPT2LMHeadModel.random({ ...camel, nLayers: 2 } as never, 0), { code: 'ERR_INVALID_ARG', message: /"nLayers".*did you mean "nLayer"/ })
})
