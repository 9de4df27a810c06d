// 46.worldfacts — lib/data/worldfacts.ts: the WorldFacts data set built from the world-countries
// package (facts checked against the package's own records), phrasing and subject splits,
// determinism, CounterFact-style edit requests, portability prompts and export round trips
// through editdata's loaders.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { MendError } from '../lib/core/errors'
import { loadCounterFact, loadZsre } from '../lib/data/editdata'
import {
  buildWorldFacts,
  counterFactRequests,
  editRequests,
  exportWorldFacts,
  fillTemplate,
  portabilityPrompts,
  trainingCorpus,
  WorldFacts,
} from '../lib/data/worldfacts'

// eslint-disable-next-line @typescript-eslint/no-var-requires
const countries: any[] = require('world-countries')
const raw = (name: string) => countries.find((c) => c.name.common === name)

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'node-mend-worldfacts-'))
t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))

const wf = buildWorldFacts()
// every filled training prompt -> its fact
const byTrainPrompt = new Map<string, { subject: string; relation: string; answer: string }>()
for (const f of wf.facts) {
  for (const tm of wf.relations.find((r) => r.name === f.relation)!.trainTemplates) byTrainPrompt.set(fillTemplate(tm, f.subject), f)
}
const answerOf = (w: WorldFacts, subject: string, relation: string) =>
  w.facts.find((f) => f.subject === subject && f.relation === relation)?.answer

t.test('counts', async (tt) => {
  const subjects = new Set(wf.facts.map((f) => f.subject))
  tt.ok(subjects.size >= 200, `>= 200 subjects (${subjects.size})`)
  tt.ok(wf.relations.length >= 6, `>= 6 relations (${wf.relations.length})`)
  tt.ok(wf.facts.length >= 1000, `>= 1000 facts (${wf.facts.length})`)
  tt.equal(wf.trainSubjects.length + wf.heldOutSubjects.length, subjects.size, 'split covers every subject')
  tt.ok(wf.heldOutSubjects.length > 0, 'some held-out subjects')
  const keys = wf.facts.map((f) => `${f.subject}\u0000${f.relation}`)
  tt.equal(new Set(keys).size, keys.length, 'one fact per (subject, relation)')
  for (const f of wf.facts) {
    if (typeof f.answer !== 'string' || f.answer.trim() === '') tt.fail(`empty answer ${f.subject}/${f.relation}`)
  }
  for (const r of wf.relations) tt.ok(wf.facts.some((f) => f.relation === r.name), `relation ${r.name} has facts`)
})

t.test('known facts match the package data', async (tt) => {
  tt.equal(answerOf(wf, 'France', 'capital'), 'Paris')
  tt.equal(answerOf(wf, 'Japan', 'currency'), 'Japanese yen')
  tt.equal(answerOf(wf, 'Brazil', 'region'), 'Americas')
  tt.equal(answerOf(wf, 'France', 'calling_code'), '+33')
  tt.equal(answerOf(wf, 'United States', 'calling_code'), '+1', 'NANP: root only')
  tt.equal(answerOf(wf, 'France', 'tld'), '.fr')
  tt.equal(answerOf(wf, 'France', 'language'), 'French')
  tt.equal(answerOf(wf, 'France', 'demonym'), 'French')
  // against the raw package records
  tt.equal(answerOf(wf, 'France', 'capital'), raw('France').capital[0])
  tt.equal(answerOf(wf, 'Japan', 'currency'), raw('Japan').currencies.JPY.name)
  tt.equal(answerOf(wf, 'Brazil', 'region'), raw('Brazil').region)
  tt.equal(answerOf(wf, 'Germany', 'subregion'), raw('Germany').subregion)
  // missing fields are skipped, not filled in
  tt.equal(answerOf(wf, 'Antarctica', 'capital'), undefined, 'no capital for Antarctica')
  tt.equal(answerOf(wf, 'Antarctica', 'currency'), undefined, 'no currency for Antarctica')
  tt.equal(answerOf(wf, 'Vatican City', 'calling_code'), undefined, 'ambiguous calling code skipped')
})

t.test('phrasing split and subject split', async (tt) => {
  for (const r of wf.relations) {
    tt.ok(r.trainTemplates.length > 0 && r.heldOutTemplates.length > 0, `${r.name}: both non-empty`)
    tt.ok(r.trainTemplates.length + r.heldOutTemplates.length >= 4, `${r.name}: >= 4 phrasings`)
    tt.notOk(r.trainTemplates.some((x) => r.heldOutTemplates.includes(x)), `${r.name}: disjoint`)
    for (const x of [...r.trainTemplates, ...r.heldOutTemplates]) tt.ok(x.includes('{s}'), `${r.name}: ${x} has {s}`)
  }
  const train = new Set(wf.trainSubjects)
  tt.notOk(wf.heldOutSubjects.some((s) => train.has(s)), 'held-out subjects not in train subjects')
  const none = buildWorldFacts({ heldOutSubjectFraction: 0 })
  tt.equal(none.heldOutSubjects.length, 0)
  const half = buildWorldFacts({ heldOutSubjectFraction: 0.5 })
  tt.equal(half.heldOutSubjects.length, Math.floor(0.5 * (half.trainSubjects.length + half.heldOutSubjects.length)))
  tt.throws(() => buildWorldFacts({ heldOutSubjectFraction: 1 }), MendError)
  tt.throws(() => buildWorldFacts({ seed: 1.5 }), MendError)
})

t.test('training corpus uses only training phrasings', async (tt) => {
  const corpus = trainingCorpus(wf)
  const nTrain = wf.facts.reduce((n, f) => n + wf.relations.find((r) => r.name === f.relation)!.trainTemplates.length, 0)
  tt.equal(corpus.length, nTrain, 'every fact in every training phrasing')
  const set = new Set(corpus)
  tt.ok(set.has('The capital of France is Paris'), 'contains a known sentence')
  const heldOut = new Set<string>()
  for (const f of wf.facts) {
    const r = wf.relations.find((x) => x.name === f.relation)!
    for (const h of r.heldOutTemplates) heldOut.add(`${fillTemplate(h, f.subject)} ${f.answer}`)
  }
  tt.notOk(corpus.some((s) => heldOut.has(s)), 'no held-out phrasing in the corpus')
  tt.notOk(corpus.some((s) => s.includes('{s}')), 'all templates filled')
})

t.test('edit requests', async (tt) => {
  const reqs = editRequests(wf, { seed: 1 })
  const trainFacts = wf.facts.filter((f) => wf.trainSubjects.includes(f.subject))
  tt.equal(reqs.length, trainFacts.length, "default: every fact of the 'train' subjects")
  const answers = new Map<string, Set<string>>()
  for (const f of wf.facts) answers.set(f.relation, (answers.get(f.relation) ?? new Set()).add(f.answer))
  const train = new Set(wf.trainSubjects)
  let bad = 0
  for (const q of reqs) {
    const f = byTrainPrompt.get(q.prompt)
    const r = f && wf.relations.find((x) => x.name === f.relation)!
    const ok =
      f !== undefined &&
      r !== undefined &&
      train.has(q.subject!) &&
      q.targetNew !== q.groundTruth &&
      answers.get(f.relation)!.has(q.targetNew) &&
      q.prompt.includes(q.subject!) &&
      q.rephrasePrompts.length === r.heldOutTemplates.length &&
      q.rephrasePrompts.every((p, i) => p === fillTemplate(r.heldOutTemplates[i], q.subject!)) &&
      q.localityPrompts.length === 2 &&
      f.subject === q.subject &&
      f.answer === q.groundTruth &&
      q.localityPrompts.every((l) => {
        const g = byTrainPrompt.get(l.prompt)
        return g !== undefined && g.subject !== q.subject && g.answer === l.answer
      }) &&
      byTrainPrompt.get(q.localityPrompts[0].prompt)!.subject !== byTrainPrompt.get(q.localityPrompts[1].prompt)!.subject
    if (!ok) {
      bad++
      if (bad <= 3) tt.fail(`bad request ${JSON.stringify(q)}`)
    }
  }
  tt.equal(bad, 0, 'every request: training prompt, real other answer of the same relation, held-out rephrases, locality about other subjects')

  const held = editRequests(wf, { subjects: 'heldOut' })
  const heldSet = new Set(wf.heldOutSubjects)
  tt.ok(held.length > 0 && held.every((q) => heldSet.has(q.subject!)), "'heldOut' requests are about held-out subjects")
  tt.equal(editRequests(wf, { subjects: 'all' }).length, wf.facts.length, "'all': one request per fact")
  tt.equal(editRequests(wf, { n: 7, seed: 4 }).length, 7, 'n limits the count')
  tt.throws(() => editRequests(wf, { subjects: 'x' as 'all' }), MendError)
  tt.throws(() => editRequests(wf, { n: -1 }), MendError)
})

t.test('determinism', async (tt) => {
  const a = buildWorldFacts({ seed: 5 })
  const b = buildWorldFacts({ seed: 5 })
  tt.same(a, b, 'same seed -> same data set')
  tt.same(trainingCorpus(a), trainingCorpus(b))
  tt.same(editRequests(a, { seed: 9, n: 50 }), editRequests(b, { seed: 9, n: 50 }), 'same seed -> same requests')
  tt.same(exportWorldFacts(a, 'counterfact', { seed: 2 }), exportWorldFacts(b, 'counterfact', { seed: 2 }))
  const c = buildWorldFacts({ seed: 6 })
  tt.notSame(a.heldOutSubjects, c.heldOutSubjects, 'different seed -> different subject split')
  const t1 = editRequests(wf, { seed: 1, subjects: 'all' }).map((q) => q.targetNew)
  const t2 = editRequests(wf, { seed: 2, subjects: 'all' }).map((q) => q.targetNew)
  tt.equal(t1.length, t2.length)
  tt.notSame(t1, t2, 'different seed -> different edit targets')
})

t.test('portability prompts', async (tt) => {
  const reqs = editRequests(wf, { subjects: 'all', seed: 3 })
  const cap = reqs.find((q) => q.subject === 'France' && q.groundTruth === 'Paris')!
  tt.ok(cap, 'France capital request')
  // "French" is the demonym of more than one subject, so check the capital bridge on Japan
  const jpCap = reqs.find((q) => q.subject === 'Japan' && q.groundTruth === 'Tokyo')!
  tt.same(portabilityPrompts(wf, jpCap), [{ prompt: 'The capital of the country whose people are called Japanese is', answer: jpCap.targetNew }])
  const jpCur = reqs.find((q) => q.subject === 'Japan' && q.groundTruth === 'Japanese yen')!
  tt.same(portabilityPrompts(wf, jpCur), [{ prompt: 'Q: What is the currency of the country whose capital is Tokyo? A:', answer: jpCur.targetNew }])
  const frenchShared = wf.facts.filter((f) => f.relation === 'demonym' && f.answer === 'French').length > 1
  if (frenchShared) tt.same(portabilityPrompts(wf, cap), [], 'ambiguous bridge -> []')
  tt.same(portabilityPrompts(wf, { prompt: 'Something else', targetNew: 'x', rephrasePrompts: [], localityPrompts: [] }), [], 'unknown relation -> []')
  let withP = 0
  for (const q of reqs) {
    const p = portabilityPrompts(wf, q)
    if (p.length > 0) {
      withP++
      if (p[0].answer !== q.targetNew || !p[0].prompt.includes('the country whose')) tt.fail(`bad portability ${JSON.stringify(p)}`)
    }
  }
  tt.ok(withP > reqs.length / 2, `most requests have a portability prompt (${withP}/${reqs.length})`)
})

t.test('export round-trips through the loaders', async (tt) => {
  const opts = { seed: 11, n: 40, subjects: 'all' as const }
  const reqs = editRequests(wf, opts)

  const zf = path.join(root, 'wf-zsre.json')
  fs.writeFileSync(zf, JSON.stringify(exportWorldFacts(wf, 'zsre', opts)))
  const z = await loadZsre(zf, { strict: true })
  tt.equal(z.skipped.length, 0)
  tt.same(z.records, reqs, 'zsRE round trip')

  const cf = path.join(root, 'wf-cf.json')
  fs.writeFileSync(cf, JSON.stringify(exportWorldFacts(wf, 'counterfact', opts)))
  const c = await loadCounterFact(cf, { strict: true })
  tt.equal(c.skipped.length, 0)
  const expected = counterFactRequests(wf, reqs, 11)
  tt.same(c.records, expected, 'CounterFact round trip')
  for (let i = 0; i < expected.length; i++) {
    const q = expected[i]
    tt.equal(q.prompt, reqs[i].prompt)
    const rel = byTrainPrompt.get(q.prompt)!.relation
    const ok = q.localityPrompts.every((l) => {
      const g = byTrainPrompt.get(l.prompt)
      return g !== undefined && l.answer === q.groundTruth && g.answer === q.groundTruth && g.relation === rel && g.subject !== q.subject
    })
    if (!ok) tt.fail(`neighborhood prompts: same relation and true answer, other subjects: ${JSON.stringify(q)}`)
  }
  tt.ok(expected.some((q) => q.localityPrompts.length > 0), 'some neighborhood prompts')
  tt.throws(() => exportWorldFacts(wf, 'x' as 'zsre'), MendError)
})
