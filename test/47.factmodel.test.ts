// 47.factmodel — lib/factmodel.ts, the pipeline behind `npm run assets`, at toy size: the corpus
// vocabulary, pretraining a small GPT-2 until it knows a handful of facts, the greedy fact
// accuracy (checked against real greedy generation), the editor's training requests (held-out
// phrasings never used) and a short editor training run whose editor then edits.
import t from 'tap'
import { buildWorldFacts, fillTemplate, trainingCorpus, WorldFacts } from '../lib/data/worldfacts'
import { corpusRows, editorTrainingRequests, factAccuracy, factVocabulary, pretrainFactModel, trainFactEditor } from '../lib/app/factmodel'
import { BaseEditor } from '../lib/easyedit/base-editor'

const full = buildWorldFacts()
// A toy world: 12 subjects (10 train, 2 held out), two relations.
const subjects = [...full.trainSubjects.slice(0, 10), ...full.heldOutSubjects.slice(0, 2)]
const wf: WorldFacts = {
  facts: full.facts.filter((f) => subjects.includes(f.subject) && (f.relation === 'capital' || f.relation === 'region')),
  relations: full.relations.filter((r) => r.name === 'capital' || r.name === 'region'),
  trainSubjects: subjects.slice(0, 10),
  heldOutSubjects: subjects.slice(10),
}

t.test('corpus vocabulary', async (tt) => {
  const { bpe, tokenizer } = factVocabulary(wf, 400)
  tt.equal(tokenizer.vocabSize, Object.keys(bpe.vocab).length, 'tokenizer size = vocab.json entries')
  tt.ok(tokenizer.vocabSize <= 400, `vocab ${tokenizer.vocabSize} <= 400`)
  for (const s of trainingCorpus(wf)) tt.equal(tokenizer.decode(tokenizer.encode(s)), s, `round trip: ${s}`)
  const rows = corpusRows(wf, tokenizer)
  tt.ok(rows.every((r) => r[r.length - 1] === tokenizer.eosTokenId), 'every corpus row ends with <|endoftext|>')
  // the vocabulary is fitted to the corpus: far fewer tokens than bytes
  const bytes = trainingCorpus(wf).reduce((n, s) => n + Buffer.byteLength(s), 0)
  const toks = rows.reduce((n, r) => n + r.length - 1, 0)
  tt.ok(toks < bytes / 3, `corpus ${toks} tokens for ${bytes} bytes`)
})

t.test('editor training requests use training phrasings only', async (tt) => {
  const reqs = editorTrainingRequests(full, 'train')
  tt.ok(reqs.length > 800, `${reqs.length} requests (113 training countries)`)
  let bad = 0
  for (const r of reqs) {
    const rel = full.relations.find((x) => x.trainTemplates.some((tm) => fillTemplate(tm, r.subject!) === r.prompt))!
    const train = rel.trainTemplates.map((tm) => fillTemplate(tm, r.subject!))
    const held = rel.heldOutTemplates.map((tm) => fillTemplate(tm, r.subject!))
    if (r.rephrasePrompts.length !== train.length - 1 || r.rephrasePrompts.includes(r.prompt)) bad++
    if (r.rephrasePrompts.some((p) => held.includes(p) || !train.includes(p))) bad++
    if (!full.trainSubjects.includes(r.subject!)) bad++
  }
  tt.equal(bad, 0, 'rephrasings = the other training phrasings, subjects = training subjects')
})

t.test('pretrain a toy fact model, measure it, train an editor', async (tt) => {
  const { tokenizer } = factVocabulary(wf, 400)
  let first = NaN, last = NaN
  const model = await pretrainFactModel(wf, tokenizer, {
    nLayer: 2, nEmbd: 64, nHead: 2, epochs: 60, batchSize: 8, lr: 3e-3, warmupSteps: 20,
    onProgress: (p) => { if (p.step === 1) first = p.loss; last = p.loss },
  })
  tt.ok(last < first / 4, `pretraining loss ${first.toFixed(3)} -> ${last.toFixed(3)}`)
  const acc = await factAccuracy(model, tokenizer, wf, 'train')
  tt.equal(acc.n, wf.facts.length * 3, 'one pair per fact and training phrasing')
  tt.ok(acc.accuracy >= 0.9, `training-phrasing accuracy ${acc.accuracy}`)
  tt.same(Object.keys(acc.byRelation).sort(), ['capital', 'region'])

  // factAccuracy's "correct" must mean "greedy decoding produces the answer": check every pair
  // (held-out phrasings included, so that both outcomes occur)
  let agree = 0, n = 0, correct = 0
  const eos = tokenizer.eosTokenId!
  for (const f of wf.facts) {
    const rel = wf.relations.find((r) => r.name === f.relation)!
    for (const tm of [...rel.trainTemplates, ...rel.heldOutTemplates]) {
      const prompt = fillTemplate(tm, f.subject)
      const ids = tokenizer.encode(prompt)
      const answer = tokenizer.encode(' ' + f.answer)
      const [out] = await model.generate([ids], { maxNewTokens: answer.length, eosTokenId: eos })
      const gen = out
      const single = await factAccuracy(model, tokenizer, { ...wf, facts: [f], relations: [{ ...rel, trainTemplates: [tm] }] }, 'train')
      const greedyOk = gen.length === answer.length && gen.every((x, k) => x === answer[k])
      if (greedyOk === (single.accuracy === 1)) agree++
      if (greedyOk) correct++
      n++
    }
  }
  tt.equal(agree, n, `factAccuracy agrees with greedy generation on ${agree}/${n} pairs (${correct} correct)`)
  tt.ok(correct > 0 && correct < n, 'both outcomes were compared')

  const ed = await trainFactEditor(model, tokenizer, wf, { mend: { rank: 32 }, trainer: { maxIters: 40, valInterval: 20, lr: 1e-4, lrLr: 1e-3 }, valRequests: 4 })
  tt.equal(ed.steps, 40, '40 editor steps')
  tt.ok(ed.best && ed.best.step > 0, 'a best editor was chosen on validation')
  const editor = new BaseEditor(ed.mend, tokenizer)
  const [r] = (await editor.edit({ prompts: 'The capital of ' + wf.heldOutSubjects[0] + ' is', targetNew: 'Paris' })).metrics
  tt.ok(Number.isFinite(r.post.rewrite_acc), `the trained editor edits (rewrite_acc ${r.pre.rewrite_acc} -> ${r.post.rewrite_acc})`)
})

t.test('the bundled model knows its facts (issue targets: >= 95% training, >= 80% held-out phrasings)', async (tt) => {
  const { BUNDLED_MODEL_DIR } = await import('../lib/data/assets')
  const { GPT2LMHeadModel } = await import('../lib/model/gpt2')
  const { GPT2Tokenizer } = await import('../lib/tokenizer/tokenizer')
  const model = await GPT2LMHeadModel.fromPretrained(BUNDLED_MODEL_DIR)
  const tok = await GPT2Tokenizer.fromPretrained(BUNDLED_MODEL_DIR)
  const train = await factAccuracy(model, tok, full, 'train')
  const held = await factAccuracy(model, tok, full, 'heldOut')
  tt.ok(train.accuracy >= 0.95, `training phrasings: ${(100 * train.accuracy).toFixed(1)}% of ${train.n}`)
  tt.ok(held.accuracy >= 0.8, `held-out phrasings: ${(100 * held.accuracy).toFixed(1)}% of ${held.n}`)
  model.dispose()
})

t.test('scripts/build-assets.js (npm run assets) at toy size writes a loadable model directory, editor and report', async (tt) => {
  const { spawnSync } = await import('node:child_process')
  const fs = await import('node:fs')
  const os = await import('node:os')
  const path = await import('node:path')
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-assets-'))
  tt.teardown(() => fs.rmSync(out, { recursive: true, force: true }))
  const script = path.join(__dirname, '..', 'scripts', 'build-assets.js')
  const r = spawnSync(process.execPath, [script, '--out', out, '--vocab-size', '600', '--layers', '1', '--width', '32', '--heads', '1',
    '--epochs', '1', '--editor-steps', '4', '--editor-rank', '8', '--eval-n', '3', '--eval-sequential', '3', '--lifelong-steps', '2', '--lifelong-edits', '2', '--lifelong-background', '2'], { encoding: 'utf8' })
  tt.equal(r.status, 0, `exit 0 ${r.stderr}`)
  for (const f of ['vocab.json', 'merges.txt', 'config.json', 'model.safetensors', 'tokenizer_config.json', 'mend-editor.safetensors', 'malmen-editor.safetensors', 'metrics.json', 'report.md', 'plot.svg']) {
    tt.ok(fs.existsSync(path.join(out, f)), `wrote ${f}`)
  }
  tt.match(r.stdout, /pretrained and saved in [\d.]+ s/, 'prints the pretraining time')
  tt.match(r.stdout, /done in [\d.]+ s/, 'prints the total time')
  const metrics = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'))
  tt.equal(metrics.eval.lifelong.single.requests, 3, 'evaluated 3 held-out edits with the lifelong editor')
  tt.equal(metrics.eval.mend.single.requests, 3, 'and the same 3 with the classic editor')
  tt.equal(metrics.eval.lifelong.sequential.at(-1).edits, 3, 'sequential up to 3')
  tt.equal(metrics.lifelong.steps, 2, 'the lifelong editor trained 2 steps through the solve')
  tt.ok(metrics.timings_s.pretrain_s >= 0 && metrics.total_s >= metrics.timings_s.pretrain_s, 'stage timings recorded')
  const { BaseEditor } = await import('../lib/easyedit/base-editor')
  const ed = await BaseEditor.fromPretrained({ model: out, editor: path.join(out, 'mend-editor.safetensors') })
  tt.equal(ed.tokenizer.vocabSize, 600, 'the directory loads with its own 600-token vocabulary')
  const ll = await BaseEditor.fromPretrained({ model: out, editor: path.join(out, 'malmen-editor.safetensors') })
  tt.equal(ll.mend.kind, 'malmen', 'the lifelong editor loads as kind malmen')
  tt.equal(ed.model.config.nPositions, JSON.parse(fs.readFileSync(path.join(out, 'tokenizer_config.json'), 'utf8')).model_max_length, 'tokenizer_config model_max_length = n_positions')
})
