/**
 * WorldFacts: a small, fully deterministic factual data set about the 250 countries and
 * territories of the `world-countries` npm package, for pretraining a small GPT-2 on facts and
 * then editing those facts with MEND.
 *
 * Facts are (subject, relation, answer) triples; the subject is `name.common`. Relations:
 *   capital          capital[0]
 *   region           region
 *   subregion        subregion
 *   language         the first listed official language (languages object order)
 *   currency         the name of the first listed currency
 *   demonym          demonyms.eng.m
 *   calling_code     idd.root + idd.suffixes[0] when there is exactly one suffix ("+33"); with
 *                    several suffixes only the shared zones +1 (NANP) and +7 give a fact (the
 *                    root alone); others (e.g. Vatican City, Western Sahara) are ambiguous: skipped
 *   tld              tld[0]
 * A (country, relation) pair whose field is missing or empty is skipped.
 *
 * Each relation is asked in the five {@link FRAMES} (statements and questions, `{s}` = subject,
 * `{r}` = the relation's noun): three are its TRAINING phrasings (the pretraining corpus and the
 * edit prompts), two are HELD-OUT phrasings (rephrase prompts, i.e. generalization). Each frame
 * is held out for some relations and trained with the others. The split does not depend on the
 * seed.
 *
 * Subjects are split (by seed) into train and held-out subjects: the pretraining corpus covers
 * ALL subjects (the model must know every fact), the split only separates the edits used to
 * train the MEND editor from the edits used to evaluate it.
 *
 * Everything is deterministic given the seed (mulberry32 PRNG below; no Math.random).
 */
import { mendError } from '../core/errors'
import { mulberry32, shuffle } from '../core/random'

export { mulberry32 } from '../core/random'
import { EditRequest, LocalityPrompt, exportCounterFact, exportZsre } from './editdata'
import { invalidArg } from '../core/check'

// eslint-disable-next-line @typescript-eslint/no-var-requires
const countries: RawCountry[] = require('world-countries')

interface RawCountry {
  name: { common: string }
  capital?: string[]
  region?: string
  subregion?: string
  languages?: Record<string, string>
  currencies?: Record<string, { name?: string }>
  demonyms?: { eng?: { m?: string } }
  idd?: { root?: string; suffixes?: string[] }
  tld?: string[]
}

// ---------------------------------------------------------------------------------------------
// Types

export interface Fact {
  subject: string
  relation: string
  answer: string
}

export interface RelationInfo {
  name: string
  /** Training phrasings (with `{s}` for the subject); the prompt is followed by ' ' + answer. */
  trainTemplates: string[]
  /** Held-out phrasings (disjoint from trainTemplates). */
  heldOutTemplates: string[]
}

export interface WorldFacts {
  facts: Fact[]
  relations: RelationInfo[]
  trainSubjects: string[]
  heldOutSubjects: string[]
}

export interface BuildOptions {
  /** PRNG seed for the subject split. Default 0. */
  seed?: number
  /** Fraction of subjects held out (0 <= f < 1). Default 0.55: 1092 evaluation edits (the held-out subjects' facts) and 887 editor-training edits. */
  heldOutSubjectFraction?: number
}

export interface EditRequestOptions {
  /** PRNG seed for targets, prompts and locality facts. Default 0. */
  seed?: number
  /** Which subjects' facts to edit. Default 'train'. */
  subjects?: 'train' | 'heldOut' | 'all'
  /** At most this many requests (a seeded sample); default all facts of those subjects. */
  n?: number
}

// ---------------------------------------------------------------------------------------------
// Relations and phrasings

/**
 * The phrasing frames every relation is asked in (`{r}` = the relation's noun, `{s}` = subject).
 * A held-out phrasing of one relation is a frame the model has seen with OTHER relations, so
 * generalization means recombining a known frame with a known fact, not guessing an answer
 * format it never saw.
 */
export const FRAMES: readonly string[] = [
  'The {r} of {s} is', // 0
  "{s}'s {r} is", // 1
  'Q: What is the {r} of {s}? A:', // 2
  'In {s}, the {r} is', // 3
  'Question: which {r} does {s} have? Answer:', // 4
]

/** Number of training phrasings per relation; the remaining phrasings are held out. */
export const TRAIN_TEMPLATES_PER_RELATION = 3

interface RelationDef {
  name: string
  /** The relation's noun in the frames ("capital", "official language", ...). */
  noun: string
  /** Indices into FRAMES of the two HELD-OUT frames; the other three are training frames. Each
   * frame is held out for 3–4 relations and trained with the other 4–5. */
  heldOut: [number, number]
  get: (c: RawCountry) => string | undefined
}

const nonEmpty = (s: string | undefined): string | undefined => (typeof s === 'string' && s.trim() !== '' ? s.trim() : undefined)
const firstValue = <T>(o: Record<string, T> | undefined): T | undefined => {
  if (!o) return undefined
  const k = Object.keys(o)
  return k.length > 0 ? o[k[0]] : undefined
}

function callingCode(c: RawCountry): string | undefined {
  const root = nonEmpty(c.idd?.root)
  const suffixes = (c.idd?.suffixes ?? []).filter((s) => nonEmpty(s) !== undefined)
  if (root === undefined) return undefined
  if (suffixes.length === 1) return root + suffixes[0]
  if (suffixes.length > 1 && (root === '+1' || root === '+7')) return root
  return undefined
}

const RELATION_DEFS: RelationDef[] = [
  { name: 'capital', noun: 'capital', heldOut: [2, 3], get: (c) => nonEmpty(c.capital?.[0]) },
  { name: 'region', noun: 'region', heldOut: [0, 4], get: (c) => nonEmpty(c.region) },
  { name: 'subregion', noun: 'subregion', heldOut: [1, 2], get: (c) => nonEmpty(c.subregion) },
  { name: 'language', noun: 'official language', heldOut: [3, 4], get: (c) => nonEmpty(firstValue(c.languages)) },
  { name: 'currency', noun: 'currency', heldOut: [0, 1], get: (c) => nonEmpty(firstValue(c.currencies)?.name) },
  { name: 'demonym', noun: 'demonym', heldOut: [2, 4], get: (c) => nonEmpty(c.demonyms?.eng?.m) },
  { name: 'calling_code', noun: 'calling code', heldOut: [1, 3], get: callingCode },
  { name: 'tld', noun: 'internet domain', heldOut: [0, 2], get: (c) => nonEmpty(c.tld?.[0]) },
]

/** Fills a template with a subject (or any noun phrase); "{s}'s" becomes "Xs'" for a subject ending in s. */
export function fillTemplate(template: string, subject: string): string {
  const t = /s$/.test(subject) ? template.split("{s}'s").join(`${subject}'`) : template
  return t.split('{s}').join(subject)
}

// ---------------------------------------------------------------------------------------------
// Seeded PRNG (mulberry32) and helpers

function hashSeed(seed: number, stream: string): number {
  let h = (Math.trunc(seed) ^ 0x9e3779b9) >>> 0
  for (let i = 0; i < stream.length; i++) {
    h = Math.imul(h ^ stream.charCodeAt(i), 0x85ebca6b) >>> 0
    h = (h ^ (h >>> 13)) >>> 0
  }
  return h
}

const rngFor = (seed: number, stream: string) => mulberry32(hashSeed(seed, stream))
const pick = <T>(rng: () => number, xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)]

function checkSeed(seed: unknown, where: string): number {
  if (seed === undefined) return 0
  if (typeof seed !== 'number' || !Number.isInteger(seed)) throw invalidArg('an integer', `${where} seed`, seed)
  return seed
}

// ---------------------------------------------------------------------------------------------
// Building

/** Builds the data set from the `world-countries` package. */
export function buildWorldFacts(opts: BuildOptions = {}): WorldFacts {
  const seed = checkSeed(opts.seed, 'buildWorldFacts')
  const frac = opts.heldOutSubjectFraction ?? 0.55
  if (typeof frac !== 'number' || !(frac >= 0 && frac < 1)) {
    throw invalidArg('a number in [0, 1)', 'buildWorldFacts heldOutSubjectFraction', frac)
  }
  const facts: Fact[] = []
  const subjects: string[] = []
  for (const c of countries) {
    const subject = nonEmpty(c.name?.common)
    if (subject === undefined || subjects.includes(subject)) continue
    let any = false
    for (const rel of RELATION_DEFS) {
      const answer = rel.get(c)
      if (answer === undefined) continue
      facts.push({ subject, relation: rel.name, answer })
      any = true
    }
    if (any) subjects.push(subject)
  }
  const relations: RelationInfo[] = RELATION_DEFS.map((r) => {
    const phrasings = FRAMES.map((f) => f.split('{r}').join(r.noun))
    return {
      name: r.name,
      trainTemplates: phrasings.filter((_, i) => !r.heldOut.includes(i)),
      heldOutTemplates: r.heldOut.map((i) => phrasings[i]),
    }
  })
  const shuffled = shuffle(rngFor(seed, 'subjects'), subjects)
  const nHeld = Math.floor(frac * subjects.length)
  const held = new Set(shuffled.slice(0, nHeld))
  return {
    facts,
    relations,
    trainSubjects: subjects.filter((s) => !held.has(s)),
    heldOutSubjects: subjects.filter((s) => held.has(s)),
  }
}

function relationOf(wf: WorldFacts, name: string): RelationInfo {
  const r = wf.relations.find((x) => x.name === name)
  if (!r) throw mendError('ERR_DATA', `worldfacts: unknown relation ${name}`)
  return r
}

/** Every fact in every TRAINING phrasing, as "prompt answer" sentences. */
export function trainingCorpus(wf: WorldFacts): string[] {
  const out: string[] = []
  for (const f of wf.facts) {
    for (const t of relationOf(wf, f.relation).trainTemplates) out.push(`${fillTemplate(t, f.subject)} ${f.answer}`)
  }
  return out
}

/**
 * CounterFact-style edit requests, one per selected fact: prompt = a (seeded) training phrasing
 * with the subject, targetNew = the answer of the same relation for another subject (different
 * from the true answer, seeded), groundTruth = the true answer, rephrasePrompts = the held-out
 * phrasings of the same fact, localityPrompts = two facts of two other subjects (any relation,
 * training phrasing) with their true answers. Locality facts come from the training subjects only
 * (all subjects when there are fewer than three): so no held-out fact is ever seen in editor
 * training, and no locality fact of an evaluation request is itself edited when a whole
 * evaluation set is applied in sequence.
 */
export function editRequests(wf: WorldFacts, opts: EditRequestOptions = {}): EditRequest[] {
  const seed = checkSeed(opts.seed, 'editRequests')
  const which = opts.subjects ?? 'train'
  if (which !== 'train' && which !== 'heldOut' && which !== 'all') {
    throw invalidArg("'train', 'heldOut' or 'all'", 'editRequests subjects', which)
  }
  if (opts.n !== undefined && (!Number.isInteger(opts.n) || opts.n < 0)) {
    throw invalidArg('a non-negative integer', 'editRequests n', opts.n)
  }
  const allowed = new Set(which === 'train' ? wf.trainSubjects : which === 'heldOut' ? wf.heldOutSubjects : [...wf.trainSubjects, ...wf.heldOutSubjects])
  let selected = wf.facts.filter((f) => allowed.has(f.subject))
  if (opts.n !== undefined && opts.n < selected.length) {
    // a seeded sample, kept in data-set order
    const idx = new Set(shuffle(rngFor(seed, 'sample'), selected.map((_, i) => i)).slice(0, opts.n))
    selected = selected.filter((_, i) => idx.has(i))
  }

  const answersByRel = new Map<string, string[]>()
  for (const f of wf.facts) {
    const xs = answersByRel.get(f.relation) ?? []
    if (!xs.includes(f.answer)) xs.push(f.answer)
    answersByRel.set(f.relation, xs)
  }

  const trainSet = new Set(wf.trainSubjects)
  const localityPool = trainSet.size >= 3 ? wf.facts.filter((f) => trainSet.has(f.subject)) : wf.facts
  const rng = rngFor(seed, 'requests')
  const out: EditRequest[] = []
  for (const f of selected) {
    const rel = relationOf(wf, f.relation)
    const others = (answersByRel.get(f.relation) ?? []).filter((a) => a !== f.answer)
    if (others.length === 0) continue // no alternative answer exists for this relation
    const targetNew = pick(rng, others)
    const prompt = fillTemplate(pick(rng, rel.trainTemplates), f.subject)
    const localityPrompts: LocalityPrompt[] = []
    const usedSubjects = new Set([f.subject])
    for (let tries = 0; localityPrompts.length < 2 && tries < 1000; tries++) {
      const g = pick(rng, localityPool)
      if (usedSubjects.has(g.subject)) continue
      usedSubjects.add(g.subject)
      localityPrompts.push({ prompt: fillTemplate(pick(rng, relationOf(wf, g.relation).trainTemplates), g.subject), answer: g.answer })
    }
    out.push({
      prompt,
      targetNew,
      groundTruth: f.answer,
      subject: f.subject,
      rephrasePrompts: rel.heldOutTemplates.map((t) => fillTemplate(t, f.subject)),
      localityPrompts,
    })
  }
  return out
}

/** The relation of a request built by {@link editRequests} (matched by its prompt), if any. */
export function requestRelation(wf: WorldFacts, req: EditRequest): RelationInfo | undefined {
  if (req.subject === undefined) return undefined
  const subject = req.subject
  return wf.relations.find((r) => [...r.trainTemplates, ...r.heldOutTemplates].some((t) => fillTemplate(t, subject) === req.prompt))
}

/**
 * Two-hop portability prompts: questions whose answer follows from the edit only by composing
 * it with another (unedited) fact about the same subject. The subject is referred to by a
 * description instead of its name, and the answer is the edit's targetNew:
 *   - relation R other than capital: "The R of the country whose capital is C is" -> targetNew,
 *     where C is the subject's (true) capital; defined only when no other subject has capital C.
 *     E.g. after editing "The currency of France is the -> Japanese yen":
 *     "The currency of the country whose capital is Paris is the" -> "Japanese yen".
 *   - capital: "The capital of the country whose people are called D is" -> targetNew, where D
 *     is the subject's demonym, only when no other subject has demonym D.
 * The prompt is the relation's first training phrasing that does not use "{s}'s", with `{s}` replaced by the description.
 * Returns [] when the request's relation cannot be recognised or the bridge fact is missing or
 * ambiguous.
 */
export function portabilityPrompts(wf: WorldFacts, req: EditRequest): LocalityPrompt[] {
  const rel = requestRelation(wf, req)
  if (!rel || req.subject === undefined) return []
  const subject = req.subject
  const bridgeRel = rel.name === 'capital' ? 'demonym' : 'capital'
  const bridge = wf.facts.find((f) => f.subject === subject && f.relation === bridgeRel)
  if (!bridge) return []
  const shared = wf.facts.some((f) => f.relation === bridgeRel && f.answer === bridge.answer && f.subject !== subject)
  if (shared) return []
  const desc = bridgeRel === 'capital' ? `the country whose capital is ${bridge.answer}` : `the country whose people are called ${bridge.answer}`
  // a training phrasing where the subject is a plain noun phrase (not "{s}'s")
  const tpl = rel.trainTemplates.find((t) => !t.includes("{s}'s")) ?? rel.trainTemplates[0]
  return [{ prompt: fillTemplate(tpl, desc), answer: req.targetNew }]
}

/**
 * Edit requests ({@link editRequests} with `opts`) as a JSON array in zsRE or CounterFact
 * shape (lib/data/editdata.ts exporters). CounterFact neighborhood prompts are answered by
 * target_true, so for 'counterfact' the locality prompts are replaced by ROME-style neighborhood
 * prompts: up to two other subjects with the same relation AND the same true answer (seeded
 * choice, training phrasing); a request with no such neighbor (e.g. a unique capital) has none.
 */
export function exportWorldFacts(wf: WorldFacts, format: 'zsre' | 'counterfact', opts: EditRequestOptions = {}): object[] {
  const reqs = editRequests(wf, opts)
  if (format === 'zsre') return exportZsre(reqs)
  if (format !== 'counterfact') throw invalidArg("'zsre' or 'counterfact'", 'exportWorldFacts format', format)
  return exportCounterFact(counterFactRequests(wf, reqs, checkSeed(opts.seed, 'exportWorldFacts')))
}

/** The requests with ROME-style neighborhood locality prompts (see {@link exportWorldFacts}). */
export function counterFactRequests(wf: WorldFacts, reqs: EditRequest[], seed = 0): EditRequest[] {
  const rng = rngFor(seed, 'neighborhood')
  return reqs.map((req) => {
    const rel = requestRelation(wf, req)
    let localityPrompts: LocalityPrompt[] = []
    if (rel && req.groundTruth !== undefined) {
      const neighbors = wf.facts.filter((f) => f.relation === rel.name && f.answer === req.groundTruth && f.subject !== req.subject)
      localityPrompts = shuffle(rng, neighbors)
        .slice(0, 2)
        .map((f) => ({ prompt: fillTemplate(pick(rng, rel.trainTemplates), f.subject), answer: f.answer }))
    }
    return { ...req, rephrasePrompts: [...req.rephrasePrompts], localityPrompts }
  })
}
