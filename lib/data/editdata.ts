/**
 * Edit data sets (EasyEdit's zsRE and ROME/EasyEdit's CounterFact JSON files) and the batch
 * builders that turn prompts into token tensors (the one place in node-mend where that happens).
 *
 * Both formats are read into the same {@link EditRequest}. Every record is validated field by
 * field; a record with any problem (missing or ill-typed field, empty prompt or target, ...) is
 * never "repaired": it is listed in `skipped` with its index and the reasons, or, with
 * `strict: true`, the load fails with ERR_DATA naming the file and the record index.
 *
 * zsRE (EasyEdit `ZsreDataset`): `[{ src, alt, answers, rephrase, loc, loc_ans, subject }, ...]`
 *   src -> prompt, alt -> targetNew, answers[0] -> groundTruth, rephrase -> rephrasePrompts,
 *   (loc, loc_ans) -> localityPrompts (`loc` kept verbatim, e.g. "nq question: who ..."),
 *   subject -> subject. `answers`, `rephrase`, `loc`/`loc_ans` and `subject` may be absent.
 *   Extension (written by {@link exportZsre} only when a request has several): `rephrase` may be
 *   an array of strings, and `loc`/`loc_ans` may be equally long arrays of strings.
 *
 * CounterFact (ROME): `[{ requested_rewrite: { prompt, subject, target_new: { str },
 *   target_true: { str } }, paraphrase_prompts, neighborhood_prompts }, ...]`
 *   prompt.replace('{}', subject) -> prompt (as Python's `prompt.format(subject)`; a template
 *   with more than one `{}` is malformed), target_new.str -> targetNew, target_true.str ->
 *   groundTruth, paraphrase_prompts -> rephrasePrompts, neighborhood_prompts -> localityPrompts
 *   whose answer is target_true.str (ROME/EasyEdit). `target_true` may be absent only when there
 *   are no neighborhood prompts; `paraphrase_prompts` / `neighborhood_prompts` may be absent.
 *   Other keys (case_id, generation_prompts, ...) are ignored.
 *
 * Batches use Hugging Face label semantics (see lib/model.ts): a row is
 * encode(prompt) ++ encode(' ' + target), labels equal the input ids on the target tokens and
 * are -100 elsewhere (the model shifts them: logits[:, t] predicts labels[:, t + 1]).
 */
import { promises as fsp } from 'fs'
import { mendError } from '../core/errors'
import { IGNORE_INDEX, padRows } from '../core/tensor'
import type { GPT2Tokenizer } from '../tokenizer/tokenizer'
import { invalidArg } from '../core/check'

// ---------------------------------------------------------------------------------------------
// Types

export interface LocalityPrompt {
  prompt: string
  answer: string
}

export interface EditRequest {
  prompt: string
  targetNew: string
  groundTruth?: string
  subject?: string
  rephrasePrompts: string[]
  localityPrompts: LocalityPrompt[]
  /** Questions whose answer follows from the edit (portability), with their post-edit answers. */
  portabilityPrompts?: LocalityPrompt[]
}

export interface LoadOptions {
  /** Throw ERR_DATA on the first malformed record instead of skipping it. Default false. */
  strict?: boolean
}

export interface SkippedRecord {
  /** Index of the record in the file's top-level array. */
  index: number
  /** What is wrong with it (all problems found, joined by '; '). */
  reason: string
}

export interface LoadResult {
  records: EditRequest[]
  skipped: SkippedRecord[]
}

/** A token batch in the layout of lib/model.ts's `Batch`, always fully populated. */
export interface TokenBatch {
  inputIds: number[][]
  attentionMask: number[][]
  labels: number[][]
}

export interface BatchOptions {
  /**
   * Maximum row length in tokens. A longer row loses prompt tokens from the left; if not even
   * one prompt token plus the whole target fits, ERR_DATA is thrown.
   */
  maxLength?: number
}

export interface RequestBatches {
  /** prompt -> targetNew. */
  edit: TokenBatch
  /** Each rephrase prompt -> targetNew (absent when there are none). */
  rephrase?: TokenBatch
  /** Each locality prompt -> its answer (absent when there are none). */
  loc?: TokenBatch
}

/** Label value ignored by the loss (PyTorch's CrossEntropyLoss ignore_index). */
export { IGNORE_INDEX } from '../core/tensor'

// ---------------------------------------------------------------------------------------------
// Record validation (shared by both formats)

type Obj = Record<string, unknown>

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v)
const kind = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'an array' : `a ${typeof v}`)

/** Collects the problems of one record while reading its fields. */
class FieldReader {
  readonly problems: string[] = []

  problem(msg: string): void {
    this.problems.push(msg)
  }

  /** A string field. Absent (undefined) is a problem unless `optional`; blank strings always are. */
  str(obj: Obj, key: string, name: string, optional = false): string | undefined {
    const v = obj[key]
    if (v === undefined) {
      if (!optional) this.problem(`missing ${name}`)
      return undefined
    }
    return this.strValue(v, name)
  }

  /** A non-blank string value. */
  strValue(v: unknown, name: string): string | undefined {
    if (typeof v !== 'string') {
      this.problem(`${name} must be a string, got ${kind(v)}`)
      return undefined
    }
    if (v.trim() === '') {
      this.problem(`${name} is empty`)
      return undefined
    }
    return v
  }

  /** An array of non-blank strings (absent -> [] when `optional`). */
  strList(obj: Obj, key: string, name: string, optional = true): string[] | undefined {
    const v = obj[key]
    if (v === undefined) {
      if (!optional) this.problem(`missing ${name}`)
      return optional ? [] : undefined
    }
    if (!Array.isArray(v)) {
      this.problem(`${name} must be an array of strings, got ${kind(v)}`)
      return undefined
    }
    const out: string[] = []
    let ok = true
    v.forEach((s, i) => {
      const r = this.strValue(s, `${name}[${i}]`)
      if (r === undefined) ok = false
      else out.push(r)
    })
    return ok ? out : undefined
  }

  /** A string or an array of strings, as a list (absent -> []). */
  strOrList(obj: Obj, key: string, name: string): string[] | undefined {
    const v = obj[key]
    if (Array.isArray(v)) return this.strList(obj, key, name)
    if (v === undefined) return []
    const s = this.strValue(v, name)
    return s === undefined ? undefined : [s]
  }

  /** A nested object (absent is a problem unless `optional`). */
  obj(obj: Obj, key: string, name: string, optional = false): Obj | undefined {
    const v = obj[key]
    if (v === undefined) {
      if (!optional) this.problem(`missing ${name}`)
      return undefined
    }
    if (!isObj(v)) {
      this.problem(`${name} must be an object, got ${kind(v)}`)
      return undefined
    }
    return v
  }
}

/** Parses one raw record: an EditRequest, or undefined after reporting problems to `f`. */
type RecordParser = (raw: Obj, f: FieldReader) => EditRequest | undefined

function parseZsre(r: Obj, f: FieldReader): EditRequest | undefined {
  const prompt = f.str(r, 'src', 'src')
  const targetNew = f.str(r, 'alt', 'alt')
  const subject = f.str(r, 'subject', 'subject', true)
  const answers = f.strList(r, 'answers', 'answers')
  const rephrasePrompts = f.strOrList(r, 'rephrase', 'rephrase')

  let localityPrompts: LocalityPrompt[] | undefined
  const loc = r.loc
  const locAns = r.loc_ans
  if (loc === undefined && locAns === undefined) {
    localityPrompts = []
  } else if (loc === undefined || locAns === undefined) {
    f.problem(loc === undefined ? 'loc_ans without loc' : 'loc without loc_ans')
  } else if (Array.isArray(loc) !== Array.isArray(locAns)) {
    f.problem('loc and loc_ans must both be strings or both be arrays')
  } else {
    const ps = f.strOrList(r, 'loc', 'loc')
    const as = f.strOrList(r, 'loc_ans', 'loc_ans')
    if (ps && as) {
      if (ps.length !== as.length) f.problem(`loc has ${ps.length} entries but loc_ans has ${as.length}`)
      else localityPrompts = ps.map((prompt, i) => ({ prompt, answer: as[i] }))
    }
  }

  if (f.problems.length > 0 || prompt === undefined || targetNew === undefined || !answers || !rephrasePrompts || !localityPrompts) {
    return undefined
  }
  const req: EditRequest = { prompt, targetNew, rephrasePrompts, localityPrompts }
  if (answers.length > 0) req.groundTruth = answers[0]
  if (subject !== undefined) req.subject = subject
  return req
}

const countPlaceholders = (s: string): number => s.split('{}').length - 1

function parseCounterFact(r: Obj, f: FieldReader): EditRequest | undefined {
  const rw = f.obj(r, 'requested_rewrite', 'requested_rewrite')
  let template: string | undefined
  let subject: string | undefined
  let targetNew: string | undefined
  let groundTruth: string | undefined
  let hasTrue = false
  if (rw) {
    template = f.str(rw, 'prompt', 'requested_rewrite.prompt')
    subject = f.str(rw, 'subject', 'requested_rewrite.subject')
    const tn = f.obj(rw, 'target_new', 'requested_rewrite.target_new')
    if (tn) targetNew = f.str(tn, 'str', 'requested_rewrite.target_new.str')
    const tt = f.obj(rw, 'target_true', 'requested_rewrite.target_true', true)
    if (tt) {
      hasTrue = true
      groundTruth = f.str(tt, 'str', 'requested_rewrite.target_true.str')
    }
    if (template !== undefined && countPlaceholders(template) > 1) {
      f.problem('requested_rewrite.prompt has more than one {} placeholder')
    }
    if (subject !== undefined && subject.includes('{}')) f.problem('requested_rewrite.subject contains {}')
  }
  const rephrasePrompts = f.strList(r, 'paraphrase_prompts', 'paraphrase_prompts')
  const neighborhood = f.strList(r, 'neighborhood_prompts', 'neighborhood_prompts')
  if (rw && !hasTrue && neighborhood && neighborhood.length > 0) {
    f.problem('neighborhood_prompts need requested_rewrite.target_true.str (their answer)')
  }

  if (f.problems.length > 0 || template === undefined || subject === undefined || targetNew === undefined || !rephrasePrompts || !neighborhood) {
    return undefined
  }
  const req: EditRequest = {
    prompt: template.replace('{}', subject),
    targetNew,
    subject,
    rephrasePrompts,
    localityPrompts: groundTruth === undefined ? [] : neighborhood.map((prompt) => ({ prompt, answer: groundTruth as string })),
  }
  if (groundTruth !== undefined) req.groundTruth = groundTruth
  return req
}

// ---------------------------------------------------------------------------------------------
// Loading

async function readJsonArray(file: string): Promise<unknown[]> {
  let text: string
  try {
    text = await fsp.readFile(file, 'utf8')
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    const why = code === 'ENOENT' ? 'does not exist' : `cannot be read: ${e instanceof Error ? e.message : String(e)}`
    throw mendError('ERR_IO', `data file ${file} ${why}`)
  }
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch (e) {
    throw mendError('ERR_DATA', `${file}: not valid JSON: ${e instanceof Error ? e.message : String(e)}`)
  }
  if (!Array.isArray(data)) throw mendError('ERR_DATA', `${file}: expected a JSON array of records, got ${kind(data)}`)
  return data
}

async function loadWith(file: string, parse: RecordParser, opts: LoadOptions = {}): Promise<LoadResult> {
  if (typeof file !== 'string' || file === '') throw invalidArg('a non-empty file path', 'the data file', file)
  const strict = opts.strict === true
  const data = await readJsonArray(file)
  const records: EditRequest[] = []
  const skipped: SkippedRecord[] = []
  data.forEach((raw, index) => {
    const f = new FieldReader()
    const req = isObj(raw) ? parse(raw, f) : (f.problem(`record must be an object, got ${kind(raw)}`), undefined)
    if (req !== undefined && f.problems.length === 0) {
      records.push(req)
      return
    }
    const reason = f.problems.length > 0 ? f.problems.join('; ') : 'malformed record'
    if (strict) throw mendError('ERR_DATA', `${file}: record ${index}: ${reason}`)
    skipped.push({ index, reason })
  })
  return { records, skipped }
}

/** Load an EasyEdit zsRE JSON file (see the module comment for the field mapping). */
export function loadZsre(file: string, opts?: LoadOptions): Promise<LoadResult> {
  return loadWith(file, parseZsre, opts)
}

/** Load a ROME/EasyEdit CounterFact JSON file (see the module comment for the field mapping). */
export function loadCounterFact(file: string, opts?: LoadOptions): Promise<LoadResult> {
  return loadWith(file, parseCounterFact, opts)
}

// ---------------------------------------------------------------------------------------------
// Export

/** Checks a request before export (the same rules as loading), throwing ERR_DATA with its index. */
function checkRequest(req: EditRequest, i: number, where: string): void {
  const fail = (msg: string): never => {
    throw mendError('ERR_DATA', `${where}: record ${i}: ${msg}`)
  }
  if (!isObj(req)) fail(`record must be an object, got ${kind(req)}`)
  const f = new FieldReader()
  const r = req as unknown as Obj
  f.str(r, 'prompt', 'prompt')
  f.str(r, 'targetNew', 'targetNew')
  f.str(r, 'groundTruth', 'groundTruth', true)
  f.str(r, 'subject', 'subject', true)
  f.strList(r, 'rephrasePrompts', 'rephrasePrompts', false)
  if (!Array.isArray(req.localityPrompts)) f.problem(`localityPrompts must be an array, got ${kind(req.localityPrompts)}`)
  else {
    req.localityPrompts.forEach((lp, j) => {
      if (!isObj(lp)) return f.problem(`localityPrompts[${j}] must be an object, got ${kind(lp)}`)
      f.str(lp, 'prompt', `localityPrompts[${j}].prompt`)
      f.str(lp, 'answer', `localityPrompts[${j}].answer`)
    })
  }
  if (f.problems.length > 0) fail(f.problems.join('; '))
}

/** zsRE records (EasyEdit shape); loads back to the same requests with {@link loadZsre}. */
export function exportZsre(records: EditRequest[]): object[] {
  if (!Array.isArray(records)) throw invalidArg('an array of records', 'exportZsre', records)
  return records.map((req, i) => {
    checkRequest(req, i, 'exportZsre')
    const out: Obj = {
      src: req.prompt,
      alt: req.targetNew,
      answers: req.groundTruth === undefined ? [] : [req.groundTruth],
    }
    const one = <T>(xs: T[]): T | T[] => (xs.length === 1 ? xs[0] : xs)
    if (req.rephrasePrompts.length > 0) out.rephrase = one(req.rephrasePrompts)
    if (req.localityPrompts.length > 0) {
      out.loc = one(req.localityPrompts.map((l) => l.prompt))
      out.loc_ans = one(req.localityPrompts.map((l) => l.answer))
    }
    if (req.subject !== undefined) out.subject = req.subject
    return out
  })
}

/**
 * CounterFact records (ROME shape); loads back to the same requests with
 * {@link loadCounterFact}. The first occurrence of the subject in the prompt becomes `{}`.
 * Throws ERR_DATA for a request CounterFact cannot represent: no subject, a prompt containing a
 * literal `{}`, or locality prompts whose answer is not the request's groundTruth.
 */
export function exportCounterFact(records: EditRequest[]): object[] {
  if (!Array.isArray(records)) throw invalidArg('an array of records', 'exportCounterFact', records)
  return records.map((req, i) => {
    checkRequest(req, i, 'exportCounterFact')
    const fail = (msg: string): never => {
      throw mendError('ERR_DATA', `exportCounterFact: record ${i}: ${msg}`)
    }
    if (req.subject === undefined) fail('CounterFact needs a subject')
    const subject = req.subject as string
    if (req.prompt.includes('{}')) fail('the prompt contains a literal {}, which CounterFact would fill with the subject')
    if (subject.includes('{}')) fail('the subject contains {}')
    const bad = req.localityPrompts.findIndex((l) => l.answer !== req.groundTruth)
    if (bad >= 0) {
      fail(`localityPrompts[${bad}].answer must equal groundTruth (CounterFact neighborhood prompts are answered by target_true)`)
    }
    const at = req.prompt.indexOf(subject)
    const template = at < 0 ? req.prompt : req.prompt.slice(0, at) + '{}' + req.prompt.slice(at + subject.length)
    const rw: Obj = { prompt: template, subject, target_new: { str: req.targetNew } }
    if (req.groundTruth !== undefined) rw.target_true = { str: req.groundTruth }
    return {
      requested_rewrite: rw,
      paraphrase_prompts: [...req.rephrasePrompts],
      neighborhood_prompts: req.localityPrompts.map((l) => l.prompt),
    }
  })
}

// ---------------------------------------------------------------------------------------------
// Batches

function checkTokenizer(tok: GPT2Tokenizer, where: string): void {
  if (!tok || typeof (tok as { encode?: unknown }).encode !== 'function') {
    throw invalidArg('a GPT2Tokenizer', `${where} tok`, tok)
  }
}

/**
 * The shared row builder: prompt ++ ' ' + target, labels on the target tokens, right padding.
 * `what` names the caller and the second column ('target' or 'answer') in error messages.
 */
function buildRows(
  tok: GPT2Tokenizer,
  prompts: readonly string[],
  targets: readonly string[],
  opts: BatchOptions,
  where: string,
  what: string,
): TokenBatch {
  checkTokenizer(tok, where)
  if (!Array.isArray(prompts) || !Array.isArray(targets)) throw invalidArg(`arrays of prompts and ${what}s`, where, Array.isArray(prompts) ? targets : prompts)
  if (prompts.length !== targets.length) {
    throw mendError('ERR_INVALID_ARG', `${where}: ${prompts.length} prompts but ${targets.length} ${what}s`)
  }
  if (prompts.length === 0) throw mendError('ERR_INVALID_ARG', `${where}: empty batch`)
  const maxLength = opts.maxLength
  if (maxLength !== undefined && !(Number.isInteger(maxLength) && maxLength >= 2)) {
    throw invalidArg('an integer >= 2', `${where} maxLength`, maxLength)
  }

  const rows = prompts.map((prompt, i) => {
    const target = targets[i]
    if (typeof prompt !== 'string' || prompt.trim() === '') throw mendError('ERR_DATA', `${where}: row ${i}: prompt must be a non-empty string`)
    if (typeof target !== 'string' || target.trim() === '') throw mendError('ERR_DATA', `${where}: row ${i}: ${what} must be a non-empty string`)
    let p = tok.encode(prompt)
    const tgt = tok.encode(target.startsWith(' ') ? target : ' ' + target)
    // HF labels are shifted inside the model: the first target token needs a prompt token before it.
    if (p.length === 0) throw mendError('ERR_DATA', `${where}: row ${i}: prompt encodes to no tokens`)
    if (maxLength !== undefined && p.length + tgt.length > maxLength) {
      if (tgt.length + 1 > maxLength) {
        throw mendError('ERR_DATA', `${where}: row ${i}: the ${what} (${tgt.length} tokens) does not fit in maxLength ${maxLength} after at least one prompt token`)
      }
      p = p.slice(p.length - (maxLength - tgt.length))
    }
    return { p, tgt }
  })

  const pad = tok.padTokenId ?? tok.eosTokenId ?? 0
  const b = padRows(rows.map(({ p, tgt }) => [...p, ...tgt]), pad, { labels: rows.map(({ p, tgt }) => [...new Array<number>(p.length).fill(IGNORE_INDEX), ...tgt]) })
  return { inputIds: b.inputIds, attentionMask: b.attentionMask, labels: b.labels! }
}

/**
 * Edit batch: row i is encode(prompts[i]) ++ encode(' ' + targets[i]) (no extra space when the
 * target already starts with one); labels are -100 on prompt tokens and padding and the token ids
 * on target tokens; rows right-padded with the tokenizer's pad id (or EOS, or 0); attention mask 1
 * on real tokens.
 */
export function buildEditBatch(tok: GPT2Tokenizer, prompts: string[], targets: string[], opts: BatchOptions = {}): TokenBatch {
  return buildRows(tok, prompts, targets, opts, 'buildEditBatch', 'target')
}

/**
 * Locality batch, in the same layout as {@link buildEditBatch}: prompt ++ ' ' + answer, labels on
 * the answer tokens (for locality metrics; the KL locality loss uses the attention mask).
 */
export function buildLocalityBatch(tok: GPT2Tokenizer, items: LocalityPrompt[], opts: BatchOptions = {}): TokenBatch {
  if (!Array.isArray(items)) throw invalidArg('an array of { prompt, answer }', 'buildLocalityBatch items', items)
  items.forEach((it, i) => {
    if (!isObj(it)) throw mendError('ERR_DATA', `buildLocalityBatch: row ${i}: item must be { prompt, answer }, got ${kind(it)}`)
  })
  return buildRows(tok, items.map((it) => it.prompt), items.map((it) => it.answer), opts, 'buildLocalityBatch', 'answer')
}

/** The batches of one request: the edit itself, its rephrasings (same target) and its locality prompts. */
export function requestToBatches(tok: GPT2Tokenizer, req: EditRequest, opts: BatchOptions = {}): RequestBatches {
  if (!isObj(req)) throw invalidArg('an EditRequest', 'requestToBatches req', req)
  const out: RequestBatches = { edit: buildEditBatch(tok, [req.prompt], [req.targetNew], opts) }
  const reph = req.rephrasePrompts ?? []
  if (reph.length > 0) out.rephrase = buildEditBatch(tok, reph, reph.map(() => req.targetNew), opts)
  const loc = req.localityPrompts ?? []
  if (loc.length > 0) out.loc = buildLocalityBatch(tok, loc, opts)
  return out
}
