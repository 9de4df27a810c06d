// Refinement on the bundled WorldFacts model and lifelong editor: after 50 sequential edits of
// held-out facts, the refined log (the editor's settings: gradient descent on the log's edit loss)
// holds more of them than the log as made, and loses less locality than it gains reliability (it
// trades some: the README's table). The full curve is `node-mend eval --sequential 1000` (README).
import t from 'tap'
import { BUNDLED_EDITOR_FILE, BUNDLED_MODEL_DIR, GPT2LMHeadModel, GPT2Tokenizer, MEND, buildEditBatch, teacherForcedPredictions, worldFactsEvalRequests } from '../lib/index'

t.test('refinement holds more of 50 sequential edits, at a smaller cost in locality', async (t) => {
  const model = await GPT2LMHeadModel.fromPretrained(BUNDLED_MODEL_DIR)
  const tok = await GPT2Tokenizer.fromPretrained(BUNDLED_MODEL_DIR)
  const mend = await MEND.fromPretrained(model, BUNDLED_EDITOR_FILE)
  t.same(mend.config.refine, { rounds: 12, step: 0.1, method: 'gradient', weighting: 'token' }, 'the bundled lifelong editor refines by 12 rounds of gradient descent on the log\'s summed target-token loss')
  const reqs = worldFactsEvalRequests().slice(0, 50)
  let cur = mend as MEND
  for (const r of reqs) cur = (await cur.edit(buildEditBatch(tok, [r.prompt], [r.targetNew]))).edited
  const refined = await cur.refine()
  const acc = async (m: MEND) => {
    const p = await teacherForcedPredictions(m.model, tok, reqs.map((r) => r.prompt), reqs.map((r) => r.targetNew))
    return p.reduce((a, x) => a + x.predicted.filter((v, i) => v === x.target[i]).length / x.target.length, 0) / p.length
  }
  const loc = async (m: MEND) => {
    const lp = reqs.flatMap((r) => r.localityPrompts)
    const pre = await teacherForcedPredictions(model, tok, lp.map((x) => x.prompt), lp.map((x) => x.answer))
    const post = await teacherForcedPredictions(m.model, tok, lp.map((x) => x.prompt), lp.map((x) => x.answer))
    return post.reduce((a, x, i) => a + x.predicted.filter((v, j) => v === pre[i].predicted[j]).length / x.predicted.length, 0) / post.length
  }
  const [r0, r1, l0, l1] = [await acc(cur), await acc(refined), await loc(cur), await loc(refined)]
  t.ok(r1 > r0 + 0.05, `reliability after 50 edits: ${(100 * r0).toFixed(1)}% as made, ${(100 * r1).toFixed(1)}% refined`)
  t.ok(l0 - l1 < r1 - r0, `locality after 50 edits: ${(100 * l0).toFixed(1)}% as made, ${(100 * l1).toFixed(1)}% refined (lost ${(100 * (l0 - l1)).toFixed(1)} points, reliability gained ${(100 * (r1 - r0)).toFixed(1)})`)
})
