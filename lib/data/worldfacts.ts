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
 * Each relation has five phrasings (statement and question forms, `{s}` = subject). The first
 * {@link TRAIN_TEMPLATES_PER_RELATION} are TRAINING phrasings (the pretraining corpus and the
 * edit prompts), the rest are HELD-OUT phrasings (rephrase prompts, i.e. generalization).
 * The split does not depend on the seed.
 *
 * Subjects are split (by seed) into train and held-out subjects: the pretraining corpus covers
 * ALL subjects (the model must know every fact), the split only separates the edits used to
 * train the MEND editor from the edits used to evaluate it.
 *
 * Everything is deterministic given the seed (mulberry32 PRNG below; no Math.random).
 */
import { mendError } from '../errors'
import { EditRequest, LocalityPrompt, exportCounterFact, exportZsre } from './editdata'

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
  /** Fraction of subjects held out (0 <= f < 1). Default 0.1. */
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

/** Number of training phrasings per relation; the remaining phrasings are held out. */
export const TRAIN_TEMPLATES_PER_RELATION = 3

interface RelationDef {
  name: string
  /** The first template must be of the form "The ... of {s} ..." or similar so that `{s}` can
   * be replaced by a descriptive noun phrase (used by {@link portabilityPrompts}). */
  templates: string[]
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
  {
    name: 'capital',
    templates: [
      'The capital of {s} is',
      "{s}'s capital city is",
      'The seat of government of {s} is',
      'Q: What is the capital of {s}? A:',
      'What city is the capital of {s}? It is',
    ],
    get: (c) => nonEmpty(c.capital?.[0]),
  },
  {
    name: 'region',
    templates: [
      'The region of {s} is',
      '{s} is a country in the region of',
      '{s} is located in the world region of',
      'Q: In which region of the world is {s}? A:',
      'Which continental region is {s} part of? It is',
    ],
    get: (c) => nonEmpty(c.region),
  },
  {
    name: 'subregion',
    templates: [
      'The subregion of {s} is',
      '{s} is a country in the subregion of',
      'Geographically, {s} belongs to the subregion',
      'Q: In which subregion is {s}? A:',
      'Which part of the world is {s} in? It is in',
    ],
    get: (c) => nonEmpty(c.subregion),
  },
  {
    name: 'language',
    templates: [
      'The official language of {s} is',
      'In {s}, the official language is',
      "{s}'s official language is",
      'Q: What is the official language of {s}? A:',
      'Which language is official in {s}? It is',
    ],
    get: (c) => nonEmpty(firstValue(c.languages)),
  },
  {
    name: 'currency',
    templates: [
      'The currency of {s} is the',
      'In {s}, people pay with the',
      "{s}'s official currency is the",
      'Q: What is the currency of {s}? A: The',
      'Which currency is used in {s}? It is the',
    ],
    get: (c) => nonEmpty(firstValue(c.currencies)?.name),
  },
  {
    name: 'demonym',
    templates: [
      'A person from {s} is called',
      'The people of {s} are called',
      'A citizen of {s} is known as',
      'Q: What is a person from {s} called? A:',
      'What do you call someone from {s}? They are',
    ],
    get: (c) => nonEmpty(c.demonyms?.eng?.m),
  },
  {
    name: 'calling_code',
    templates: [
      'The international calling code of {s} is',
      'To phone {s} from abroad, dial',
      "{s}'s telephone country code is",
      'Q: What is the calling code of {s}? A:',
      'Which dialing code do you use to call {s}? It is',
    ],
    get: callingCode,
  },
  {
    name: 'tld',
    templates: [
      'The internet top-level domain of {s} is',
      'Websites in {s} end with the domain',
      "{s}'s country code top-level domain is",
      'Q: What is the internet domain of {s}? A:',
      'Which top-level domain belongs to {s}? It is',
    ],
    get: (c) => nonEmpty(c.tld?.[0]),
  },
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

/** A deterministic PRNG returning floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const rngFor = (seed: number, stream: string) => mulberry32(hashSeed(seed, stream))
const pick = <T>(rng: () => number, xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)]

function shuffle<T>(rng: () => number, xs: readonly T[]): T[] {
  const a = xs.slice()
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1))
    const tmp = a[i]
    a[i] = a[j]
    a[j] = tmp
  }
  return a
}

function checkSeed(seed: unknown, where: string): number {
  if (seed === undefined) return 0
  if (typeof seed !== 'number' || !Number.isInteger(seed)) throw mendError('ERR_INVALID_ARG', `${where}: seed must be an integer`)
  return seed
}

// ---------------------------------------------------------------------------------------------
// Building

/** Builds the data set from the `world-countries` package. */
export function buildWorldFacts(opts: BuildOptions = {}): WorldFacts {
  const seed = checkSeed(opts.seed, 'buildWorldFacts')
  const frac = opts.heldOutSubjectFraction ?? 0.1
  if (typeof frac !== 'number' || !(frac >= 0 && frac < 1)) {
    throw mendError('ERR_INVALID_ARG', 'buildWorldFacts: heldOutSubjectFraction must be a number in [0, 1)')
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
  const relations: RelationInfo[] = RELATION_DEFS.map((r) => ({
    name: r.name,
    trainTemplates: r.templates.slice(0, TRAIN_TEMPLATES_PER_RELATION),
    heldOutTemplates: r.templates.slice(TRAIN_TEMPLATES_PER_RELATION),
  }))
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
 * training phrasing) with their true answers.
 */
export function editRequests(wf: WorldFacts, opts: EditRequestOptions = {}): EditRequest[] {
  const seed = checkSeed(opts.seed, 'editRequests')
  const which = opts.subjects ?? 'train'
  if (which !== 'train' && which !== 'heldOut' && which !== 'all') {
    throw mendError('ERR_INVALID_ARG', "editRequests: subjects must be 'train', 'heldOut' or 'all'")
  }
  if (opts.n !== undefined && (!Number.isInteger(opts.n) || opts.n < 0)) {
    throw mendError('ERR_INVALID_ARG', 'editRequests: n must be a non-negative integer')
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
      const g = pick(rng, wf.facts)
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
 * The prompt is the relation's first training phrasing with `{s}` replaced by the description.
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
  return [{ prompt: fillTemplate(rel.trainTemplates[0], desc), answer: req.targetNew }]
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
  if (format !== 'counterfact') throw mendError('ERR_INVALID_ARG', "exportWorldFacts: format must be 'zsre' or 'counterfact'")
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
