/**
 * BaseEditor: EasyEdit's `BaseEditor.edit` for MEND. Takes text requests (prompt -> targetNew, with
 * optional rephrase, locality and portability inputs), edits the model with a MEND controller and
 * reports EasyEdit's metrics before and after each edit:
 *
 *   rewrite_acc     teacher-forced token accuracy of targetNew after the prompt: run
 *                   prompt ++ ' ' + target, compare argmax(logits[t - 1]) with each target token t,
 *                   mean over the target tokens.
 *   rephrase_acc    the same on the rephrase prompt(s) with targetNew.
 *   portability     the same on the portability prompt(s) with their answers.
 *   locality        (post only) share of the locality answer's tokens, teacher-forced on
 *                   prompt ++ ' ' + answer, whose post-edit argmax equals the pre-edit argmax.
 *
 * Several prompts for one request (rephrase, locality, portability) are scored per prompt and
 * averaged. Modes: default, every request edits the original model on its own and is measured
 * right after its edit; `sequentialEdit`, edits accumulate and every post metric is measured after
 * the last edit (pre metrics before any edit); `batchEdit`, all requests form one edit batch.
 */
import * as fs from 'fs'
import * as path from 'path'
import { BUNDLED_EDITOR_FILE, BUNDLED_MODEL_DIR } from '../data/assets'
import { buildEditBatch, EditRequest, LocalityPrompt } from '../data/editdata'
import { mendError } from '../core/errors'
import { padRows } from '../model/batch'
import { EditedMEND, MEND } from '../mend/mend'
import { GPT2Inference, GPT2LMHeadModel, ForwardOutput, Batch } from '../model/gpt2'
import { GPT2Tokenizer } from '../tokenizer/tokenizer'
import { checkOptions, invalidArg } from '../core/check'

/** Per-request prompts with their answers: one entry per request, each a string or several. */
export interface PromptAnswerInputs {
  prompt: string | (string | string[])[]
  groundTruth: string | (string | string[])[]
}

export interface BaseEditorRequest {
  prompts: string | string[]
  targetNew: string | string[]
  groundTruth?: string | string[]
  /** One per request (or several per request as a nested array; [] = none for that request). */
  rephrasePrompts?: string | (string | string[])[]
  /** Flat `{ prompt, groundTruth }`, or EasyEdit's named groups `{ neighborhood: { prompt, ground_truth }, … }`. */
  localityInputs?: PromptAnswerInputs | Record<string, PromptAnswerInputs>
  /** As localityInputs. */
  portabilityInputs?: PromptAnswerInputs | Record<string, PromptAnswerInputs>
  /** Edits accumulate; post metrics after the last edit. */
  sequentialEdit?: boolean
  /** All requests in one edit. */
  batchEdit?: boolean
  /**
   * Also measure `rewrite_greedy` (node-mend's, not an EasyEdit metric): 1 when greedy generation
   * from the prompt produces exactly targetNew's tokens, else 0. Teacher-forced accuracy credits a
   * target whose first token is wrong; generation does not.
   */
  greedyMatch?: boolean
}

export interface Metrics {
  rewrite_acc: number
  /** With `greedyMatch`: greedy exact match of targetNew after the prompt (0 or 1). */
  rewrite_greedy?: number
  rephrase_acc?: number
  /** Post only. The mean over every locality prompt (with named groups: over all of them). */
  locality?: number
  portability?: number
  /** With named locality groups: EasyEdit's nested form, `{ <group>_acc }` (post only). */
  locality_groups?: Record<string, number>
  /** With named portability groups: `{ <group>_acc }`. */
  portability_groups?: Record<string, number>
}

export interface RequestMetrics {
  caseId: number
  requestedRewrite: { prompt: string; targetNew: string; groundTruth?: string }
  pre: Metrics
  post: Metrics
  /** Milliseconds of the edit that applied this request. */
  time: number
}

/** EasyEdit's `summary_metrics`: each metric's mean over the requests that have it, before and after. */
export interface SummaryMetrics {
  pre: Partial<Metrics>
  post: Partial<Metrics>
}

/** The mean of every metric (and of every named group) over the requests that report it. */
export function summaryMetrics(ms: RequestMetrics[]): SummaryMetrics {
  const avg = (which: 'pre' | 'post'): Partial<Metrics> => {
    const sums: Record<string, [number, number]> = {}
    const groups: Record<string, Record<string, [number, number]>> = {}
    for (const m of ms) {
      for (const [k, v] of Object.entries(m[which])) {
        if (typeof v === 'number') { const x = (sums[k] ??= [0, 0]); x[0] += v; x[1]++ }
        else if (v && typeof v === 'object') for (const [g, w] of Object.entries(v as Record<string, number>)) { const x = ((groups[k] ??= {})[g] ??= [0, 0]); x[0] += w; x[1]++ }
      }
    }
    const out: Record<string, unknown> = Object.fromEntries(Object.entries(sums).map(([k, [a, b]]) => [k, a / b]))
    for (const [k, gs] of Object.entries(groups)) out[k] = Object.fromEntries(Object.entries(gs).map(([g, [a, b]]) => [g, a / b]))
    return out as Partial<Metrics>
  }
  return { pre: avg('pre'), post: avg('post') }
}

export interface BaseEditorOptions {
  /** A Hugging Face model directory or a loaded model; default the bundled WorldFacts model. */
  model?: string | GPT2LMHeadModel
  /** An editor file or a MEND controller (over `model`); default the bundled editor, only when
   * `model` is omitted or is the bundled model directory. */
  editor?: string | MEND
  /** A tokenizer directory or a loaded tokenizer; default the model directory. */
  tokenizer?: string | GPT2Tokenizer
}

/** Anything with GPT-2's forward (a plain or an edited model). */
export interface ForwardModel {
  forward(batch: Batch): Promise<ForwardOutput>
}

/** Teacher-forced predictions of one (prompt, target) pair: argmax and true token per target token. */
export interface TokenPredictions {
  predicted: number[]
  target: number[]
}

/**
 * Teacher-forced argmax predictions for (prompt, target) pairs in one padded forward, in the
 * layout of {@link buildEditBatch}: for every target token t of a row, argmax(logits[t - 1]).
 */
export async function teacherForcedPredictions(model: ForwardModel, tok: GPT2Tokenizer, prompts: string[], targets: string[]): Promise<TokenPredictions[]> {
  const batch = buildEditBatch(tok, prompts, targets)
  const { logits } = await model.forward({ inputIds: batch.inputIds, attentionMask: batch.attentionMask })
  const [, T, V] = logits.shape
  return batch.labels.map((row, b) => {
    const out: TokenPredictions = { predicted: [], target: [] }
    for (let t = 1; t < row.length; t++) {
      if (row[t] === -100) continue
      const off = (b * T + t - 1) * V
      let best = 0, bestV = logits.data[off]
      for (let v = 1; v < V; v++) if (logits.data[off + v] > bestV) { bestV = logits.data[off + v]; best = v }
      out.predicted.push(best)
      out.target.push(row[t])
    }
    return out
  })
}

/**
 * Greedy completions of `prompts` on `model` (a plain or an edited model) in one left-padded
 * batch; rows stop at <|endoftext|>. `text` drops special tokens when `skipSpecialTokens`.
 */
export async function greedyCompletions(model: GPT2Inference, tok: GPT2Tokenizer, prompts: string[], maxNewTokens: number,
  opts: { skipSpecialTokens?: boolean } = {}): Promise<{ ids: number[][]; text: string[] }> {
  const { inputIds, attentionMask } = padRows(prompts.map((p) => tok.encode(p)), tok.padTokenId ?? 0, { side: 'left' })
  const ids = await model.generate(inputIds, { maxNewTokens, eosTokenId: tok.eosTokenId, attentionMask })
  return { ids, text: ids.map((x) => tok.decode(x, { skipSpecialTokens: opts.skipSpecialTokens ?? false })) }
}

/** Per named group, `{ <group>_acc: mean }` of `values` (aligned with `items`); undefined without groups. */
function groupMeans(items: { group?: string }[], values: number[]): Record<string, number> | undefined {
  if (!items.some((x) => x.group !== undefined)) return undefined
  const sums: Record<string, [number, number]> = {}
  items.forEach((x, i) => { const k = `${x.group}_acc`; const s = (sums[k] ??= [0, 0]); s[0] += values[i]; s[1]++ })
  return Object.fromEntries(Object.entries(sums).map(([k, [a, b]]) => [k, a / b]))
}

/** Share of positions where a[i] === b[i]. */
function agreement(a: number[], b: number[]): number {
  let n = 0
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) n++
  return a.length === 0 ? 0 : n / a.length
}

const mean = (xs: number[]): number => xs.reduce((s, x) => s + x, 0) / xs.length

/** One request, normalised. */
interface Case {
  prompt: string
  targetNew: string
  groundTruth?: string
  rephrase: string[]
  locality: { prompt: string; answer: string; group?: string }[]
  portability: { prompt: string; answer: string; group?: string }[]
  greedy: boolean
}

/** The requested rewrite of a case, as reported in RequestMetrics. */
const rewrite = (c: Case): RequestMetrics['requestedRewrite'] =>
  ({ prompt: c.prompt, targetNew: c.targetNew, ...(c.groundTruth !== undefined ? { groundTruth: c.groundTruth } : {}) })

function checkString(v: unknown, name: string): string {
  if (typeof v !== 'string' || v.trim() === '') throw invalidArg('a non-empty string', name, v)
  return v
}

/** string | string[] -> string[] (a bare string is one request). */
function list(v: unknown, name: string): string[] {
  const xs = typeof v === 'string' ? [v] : v
  if (!Array.isArray(xs)) throw invalidArg('a string or an array of strings', name, v)
  return xs.map((x, i) => checkString(x, `${name}[${i}]`))
}

/** Per-request groups: string (one request) or an array with one string or string[] per request. */
function groups(v: unknown, n: number, name: string, allowEmpty = false): string[][] {
  const xs = typeof v === 'string' ? [v] : v
  if (!Array.isArray(xs)) throw invalidArg('a string or an array with one entry per request', name, v)
  if (xs.length !== n) throw mendError('ERR_INVALID_ARG', `${name} has ${xs.length} entries but there are ${n} prompts`)
  return xs.map((x, i) => {
    if (Array.isArray(x)) {
      if (x.length === 0 && !allowEmpty) throw mendError('ERR_INVALID_ARG', `${name}[${i}] is an empty array`)
      return x.map((y, j) => checkString(y, `${name}[${i}][${j}]`))
    }
    return [checkString(x, `${name}[${i}]`)]
  })
}

/**
 * Prompt/answer pairs per request; an empty array means none for that request. EasyEdit's named
 * groups (`{ neighborhood: { prompt, ground_truth } }`) give the pairs of every group, each tagged.
 */
function pairs(v: PromptAnswerInputs | Record<string, PromptAnswerInputs> | undefined, n: number, name: string): { prompt: string; answer: string; group?: string }[][] {
  if (v === undefined) return Array.from({ length: n }, () => [])
  if (!v || typeof v !== 'object') throw invalidArg('{ prompt, groundTruth }', name, v)
  const keys = Object.keys(v)
  const named = keys.length > 0 && !keys.some((k) => ['prompt', 'groundTruth', 'ground_truth'].includes(k)) &&
    Object.values(v).every((g) => g && typeof g === 'object' && !Array.isArray(g))
  if (named) {
    const out: { prompt: string; answer: string; group?: string }[][] = Array.from({ length: n }, () => [])
    for (const [g, inputs] of Object.entries(v as Record<string, PromptAnswerInputs>)) {
      pairs(inputs, n, `${name}.${g}`).forEach((items, i) => out[i].push(...items.map((x) => ({ ...x, group: g }))))
    }
    return out
  }
  v = checkOptions<PromptAnswerInputs>(v, name, ['prompt', 'groundTruth'])
  const p = groups(v.prompt, n, `${name}.prompt`, true)
  const a = groups(v.groundTruth, n, `${name}.groundTruth`, true)
  return p.map((ps, i) => {
    if (ps.length !== a[i].length) throw mendError('ERR_INVALID_ARG', `${name}[${i}]: ${ps.length} prompts but ${a[i].length} groundTruth answers`)
    return ps.map((prompt, j) => ({ prompt, answer: a[i][j] }))
  })
}

const REQUEST_KEYS = ['prompts', 'targetNew', 'groundTruth', 'rephrasePrompts', 'localityInputs', 'portabilityInputs', 'sequentialEdit', 'batchEdit', 'greedyMatch'] as const

/** The request with EasyEdit's names (target_new, rephrase_prompts, locality_inputs, sequential_edit, …) as aliases; unknown keys refused. */
function checkRequest(req: BaseEditorRequest, what: string): BaseEditorRequest {
  if (!req || typeof req !== 'object') throw invalidArg('an edit request { prompts, targetNew, ... }', what, req)
  return checkOptions<BaseEditorRequest>(req, what, REQUEST_KEYS)
}

/** The cases of a request that checkRequest has accepted. */
function normalise(req: BaseEditorRequest): Case[] {
  const prompts = list(req.prompts, 'prompts')
  const targets = list(req.targetNew, 'targetNew')
  if (prompts.length === 0) throw mendError('ERR_INVALID_ARG', 'prompts is empty')
  if (prompts.length !== targets.length) throw mendError('ERR_INVALID_ARG', `${prompts.length} prompts but ${targets.length} targetNew`)
  const n = prompts.length
  let gt: string[] | undefined
  if (req.groundTruth !== undefined) {
    gt = list(req.groundTruth, 'groundTruth')
    if (gt.length !== n) throw mendError('ERR_INVALID_ARG', `${n} prompts but ${gt.length} groundTruth`)
  }
  const reph = req.rephrasePrompts === undefined ? prompts.map(() => []) : groups(req.rephrasePrompts, n, 'rephrasePrompts', true)
  const loc = pairs(req.localityInputs, n, 'localityInputs')
  const port = pairs(req.portabilityInputs, n, 'portabilityInputs')
  if (req.sequentialEdit && req.batchEdit) throw mendError('ERR_INVALID_ARG', 'sequentialEdit and batchEdit cannot both be set')
  return prompts.map((prompt, i) => ({
    prompt, targetNew: targets[i], ...(gt ? { groundTruth: gt[i] } : {}),
    rephrase: reph[i], locality: loc[i], portability: port[i], greedy: req.greedyMatch === true,
  }))
}

/**
 * The BaseEditor request for data-set records (zsRE/CounterFact loaders, WorldFacts): one entry per
 * record, each with its own rephrasings, locality and portability prompts (an empty list where a
 * record has none, so every record's metrics depend on that record alone).
 */
export function editorRequest(rs: EditRequest[]): BaseEditorRequest {
  const req: BaseEditorRequest = { prompts: rs.map((r) => r.prompt), targetNew: rs.map((r) => r.targetNew) }
  if (rs.every((r) => r.groundTruth !== undefined)) req.groundTruth = rs.map((r) => r.groundTruth!)
  if (rs.some((r) => r.rephrasePrompts.length > 0)) req.rephrasePrompts = rs.map((r) => r.rephrasePrompts)
  const pairs = (xs: LocalityPrompt[][]) => ({ prompt: xs.map((x) => x.map((l) => l.prompt)), groundTruth: xs.map((x) => x.map((l) => l.answer)) })
  if (rs.some((r) => r.localityPrompts.length > 0)) req.localityInputs = pairs(rs.map((r) => r.localityPrompts))
  const port = rs.map((r) => r.portabilityPrompts ?? [])
  if (port.some((x) => x.length > 0)) req.portabilityInputs = pairs(port)
  return req
}

const isBundledDir = (dir: string): boolean => {
  if (path.resolve(dir) === path.resolve(BUNDLED_MODEL_DIR)) return true
  try {
    return fs.realpathSync(dir) === fs.realpathSync(BUNDLED_MODEL_DIR)
  } catch {
    return false
  }
}

function requireBundled(file: string, what: string): void {
  if (!fs.existsSync(file)) {
    throw mendError('ERR_IO', `the bundled ${what} is missing (${file}): run \`npm run assets\` to build it, or pass ${what === 'model' ? 'a model directory' : 'an editor file'}`)
  }
}

/** Fills in the bundled model and editor where `opts` omits them (null counts as omitted). */
function resolveBundled(opts: BaseEditorOptions): BaseEditorOptions {
  let model = opts.model ?? undefined
  let editor = opts.editor ?? undefined
  if (model === undefined) {
    requireBundled(path.join(BUNDLED_MODEL_DIR, 'model.safetensors'), 'model')
    model = BUNDLED_MODEL_DIR
  }
  if (editor === undefined) {
    if (typeof model !== 'string' && !(model instanceof GPT2LMHeadModel)) return { ...opts, model } // reported below
    if (typeof model !== 'string' || !isBundledDir(model)) {
      throw mendError('ERR_INVALID_ARG', 'BaseEditor.fromPretrained: editor is missing (an editor file or a MEND); ' +
        'the bundled editor is the default only for the bundled model, so pass the editor trained for this model')
    }
    requireBundled(BUNDLED_EDITOR_FILE, 'editor')
    editor = BUNDLED_EDITOR_FILE
  }
  return { ...opts, model, editor }
}

export class BaseEditor {
  readonly model: GPT2LMHeadModel
  readonly tokenizer: GPT2Tokenizer
  /** The controller every edit starts from. */
  readonly mend: MEND

  constructor(mend: MEND, tokenizer: GPT2Tokenizer) {
    if (!(mend instanceof MEND)) throw invalidArg('a MEND controller', 'new BaseEditor(mend)', mend)
    if (!(tokenizer instanceof GPT2Tokenizer)) throw invalidArg('a GPT2Tokenizer', 'new BaseEditor(mend, tokenizer)', tokenizer)
    this.mend = mend
    this.model = mend.baseModel
    this.tokenizer = tokenizer
  }

  /**
   * Loads model (directory), editor (file) and tokenizer (directory; default the model's).
   * Without `model`, the bundled WorldFacts model (lib/assets.ts); without `editor`, the bundled
   * editor when the model is the bundled one (omitted or its directory), else ERR_INVALID_ARG.
   * Missing bundled files are ERR_IO (build them with `npm run assets`).
   */
  static async fromPretrained(opts: BaseEditorOptions = {}): Promise<BaseEditor> {
    if (!opts || typeof opts !== 'object') throw invalidArg('{ model?, editor?, tokenizer? }', 'BaseEditor.fromPretrained', opts)
    opts = checkOptions<BaseEditorOptions>(opts, 'BaseEditor.fromPretrained', ['model', 'editor', 'tokenizer'])
    opts = resolveBundled(opts)
    let model: GPT2LMHeadModel
    if (typeof opts.model === 'string') model = await GPT2LMHeadModel.fromPretrained(opts.model)
    else if (opts.model instanceof GPT2LMHeadModel) model = opts.model
    else throw invalidArg('a directory path or a GPT2LMHeadModel', 'BaseEditor.fromPretrained model', opts.model)
    let mend: MEND
    if (typeof opts.editor === 'string') mend = await MEND.fromPretrained(model, path.resolve(opts.editor))
    else if (opts.editor instanceof MEND) {
      mend = opts.editor
      if (mend.baseModel !== model) throw mendError('ERR_INVALID_ARG', 'BaseEditor.fromPretrained: the MEND editor was built for another model than opts.model')
    } else throw invalidArg('an editor file path or a MEND', 'BaseEditor.fromPretrained editor', opts.editor)
    let tok: GPT2Tokenizer
    const t = opts.tokenizer ?? (typeof opts.model === 'string' ? opts.model : undefined)
    if (t === undefined) throw mendError('ERR_INVALID_ARG', 'BaseEditor.fromPretrained: tokenizer is missing (required when model is not a directory)')
    if (typeof t === 'string') tok = await GPT2Tokenizer.fromPretrained(t)
    else if (t instanceof GPT2Tokenizer) tok = t
    else throw invalidArg('a directory path or a GPT2Tokenizer', 'BaseEditor.fromPretrained tokenizer', t)
    return new BaseEditor(mend, tok)
  }

  /** Teacher-forced token accuracy of each (prompt, target) pair on `model`. */
  async tokenAccuracy(model: ForwardModel, prompts: string[], targets: string[]): Promise<number[]> {
    const preds = await teacherForcedPredictions(model, this.tokenizer, prompts, targets)
    return preds.map((p) => agreement(p.predicted, p.target))
  }

  /** 1 when greedy generation from the prompt gives exactly the target's tokens (as buildEditBatch encodes them), else 0. */
  private async greedyMatch(model: ForwardModel, c: Case): Promise<number> {
    const gen = (model as Partial<GPT2Inference>).generate
    if (typeof gen !== 'function') throw invalidArg('a model with generate()', 'greedyMatch', model)
    const target = this.tokenizer.encode(c.targetNew.startsWith(' ') ? c.targetNew : ' ' + c.targetNew)
    const [out] = await gen.call(model, [this.tokenizer.encode(c.prompt)], { maxNewTokens: target.length })
    return out.length === target.length && out.every((t, i) => t === target[i]) ? 1 : 0
  }

  /** rewrite/rephrase/portability accuracies of one case, all pairs in one forward. */
  private async accuracies(model: ForwardModel, c: Case): Promise<Metrics> {
    const prompts = [c.prompt, ...c.rephrase, ...c.portability.map((p) => p.prompt)]
    const targets = [c.targetNew, ...c.rephrase.map(() => c.targetNew), ...c.portability.map((p) => p.answer)]
    const acc = await this.tokenAccuracy(model, prompts, targets)
    const m: Metrics = { rewrite_acc: acc[0] }
    const nr = c.rephrase.length
    if (nr > 0) m.rephrase_acc = mean(acc.slice(1, 1 + nr))
    if (c.portability.length > 0) {
      m.portability = mean(acc.slice(1 + nr))
      const byGroup = groupMeans(c.portability, acc.slice(1 + nr))
      if (byGroup) m.portability_groups = byGroup
    }
    if (c.greedy) m.rewrite_greedy = await this.greedyMatch(model, c)
    return m
  }

  private async localityPredictions(model: ForwardModel, c: Case): Promise<number[][]> {
    if (c.locality.length === 0) return []
    const p = await teacherForcedPredictions(model, this.tokenizer, c.locality.map((l) => l.prompt), c.locality.map((l) => l.answer))
    return p.map((x) => x.predicted)
  }

  private async post(model: ForwardModel, c: Case, preLoc: number[][]): Promise<Metrics> {
    const m = await this.accuracies(model, c)
    if (preLoc.length > 0) {
      const postLoc = await this.localityPredictions(model, c)
      const agree = postLoc.map((p, i) => agreement(p, preLoc[i]))
      m.locality = mean(agree)
      const byGroup = groupMeans(c.locality, agree)
      if (byGroup) m.locality_groups = byGroup
    }
    return m
  }

  /** Pre-edit metrics and locality predictions of every case on the original model. */
  private async preEdit(cases: Case[]): Promise<{ pre: Metrics[]; preLoc: number[][][] }> {
    const pre: Metrics[] = []
    const preLoc: number[][][] = []
    for (const c of cases) {
      pre.push(await this.accuracies(this.mend.model, c))
      preLoc.push(await this.localityPredictions(this.mend.model, c))
    }
    return { pre, preLoc }
  }

  private async doEdit(from: MEND, cs: Case[]): Promise<{ edited: EditedMEND; time: number }> {
    const batch = buildEditBatch(this.tokenizer, cs.map((c) => c.prompt), cs.map((c) => c.targetNew))
    const t0 = process.hrtime.bigint()
    const request = cs.length === 1 ? rewrite(cs[0]) : cs.map(rewrite)
    const { edited } = await from.edit(batch, { request })
    return { edited, time: Number(process.hrtime.bigint() - t0) / 1e6 }
  }

  /**
   * Edits the cases one after another, each on the model the previous edits left; after the k-th
   * edit for every k in `at` (ascending), the post metrics of the first k cases.
   */
  private async sequence(cases: Case[], pre: Metrics[], preLoc: number[][][], at: number[],
    onProgress?: (done: number, total: number) => void): Promise<{ curve: RequestMetrics[][]; edited: EditedMEND }> {
    let edited: EditedMEND | null = null, measured: EditedMEND | null = null
    const times: number[] = []
    const curve: RequestMetrics[][] = []
    // Progress in units of about one model pass each: an edit, a refinement proposal (rounds per
    // live edit at each checkpoint of two or more edits), a case measured at a checkpoint.
    const rounds = this.mend.kind === 'malmen' ? this.mend.config.refine.rounds : 0
    const total = at[at.length - 1] + at.reduce((s, k) => s + k + (k >= 2 ? rounds * k : 0), 0)
    let done = 0
    for (let i = 0; i < cases.length && curve.length < at.length; i++) {
      const r = await this.doEdit(edited ?? this.mend, [cases[i]])
      edited = r.edited
      times.push(r.time)
      onProgress?.(++done, total)
      if (i + 1 !== at[curve.length]) continue
      // The lifelong mode measures the log refined (MENDConfig.refine), and edits on from the log as made.
      const share = i >= 1 ? rounds * (i + 1) : 0, from = done
      measured = i >= 1 ? await refined(edited, onProgress && share > 0 ? (d, t) => onProgress(from + Math.round((d * share) / t), total) : undefined) : edited
      done = from + share
      const rows: RequestMetrics[] = []
      for (let j = 0; j <= i; j++) {
        rows.push({ caseId: j, requestedRewrite: rewrite(cases[j]), pre: pre[j], post: await this.post(measured.model, cases[j], preLoc[j]), time: times[j] })
        onProgress?.(++done, total)
      }
      curve.push(rows)
    }
    return { curve, edited: measured! } // at least one case (normalise refuses an empty request)
  }

  /** EasyEdit's BaseEditor.edit: edits and returns per-request metrics and the last controller. */
  async edit(req: BaseEditorRequest): Promise<{ metrics: RequestMetrics[]; edited: EditedMEND; summary: SummaryMetrics }> {
    req = checkRequest(req, 'BaseEditor.edit')
    const cases = normalise(req)
    const { pre, preLoc } = await this.preEdit(cases)
    if (req.sequentialEdit) {
      const { curve, edited } = await this.sequence(cases, pre, preLoc, [cases.length])
      return { metrics: curve[0], edited, summary: summaryMetrics(curve[0]) }
    }
    const times: number[] = []
    const post: Metrics[] = []
    let edited: EditedMEND | null = null
    if (req.batchEdit) {
      const r = await this.doEdit(this.mend, cases)
      edited = cases.length > 1 ? await refined(r.edited) : r.edited
      for (let i = 0; i < cases.length; i++) { times.push(r.time); post.push(await this.post(edited.model, cases[i], preLoc[i])) }
    } else {
      for (let i = 0; i < cases.length; i++) {
        const r = await this.doEdit(this.mend, [cases[i]])
        edited = r.edited
        times.push(r.time)
        post.push(await this.post(edited.model, cases[i], preLoc[i]))
      }
    }
    const metrics = cases.map((c, i) => ({ caseId: i, requestedRewrite: rewrite(c), pre: pre[i], post: post[i], time: times[i] }))
    return { metrics, edited: edited!, summary: summaryMetrics(metrics) }
  }

  /**
   * A sequential-editing curve in one pass: the requests are edited one after another (as with
   * `sequentialEdit`), and after the k-th edit, for every k in `at` (ascending integers in
   * [1, number of requests]), the metrics of the first k requests are taken — exactly what
   * `edit({ ...first k requests, sequentialEdit: true })` reports, without redoing the edits.
   */
  async sequentialCurve(req: BaseEditorRequest, at: number[], opts: { onProgress?: (done: number, total: number) => void } = {}): Promise<RequestMetrics[][]> {
    req = checkRequest(req, 'BaseEditor.sequentialCurve')
    opts = checkOptions(opts, 'BaseEditor.sequentialCurve', ['onProgress'])
    if (opts.onProgress !== undefined && typeof opts.onProgress !== 'function') throw invalidArg('a function', 'BaseEditor.sequentialCurve onProgress', opts.onProgress)
    const cases = normalise(req)
    if (!Array.isArray(at) || at.length === 0 || at.some((k, i) => !Number.isInteger(k) || k < 1 || k > cases.length || (i > 0 && k <= at[i - 1]))) {
      throw mendError('ERR_INVALID_ARG', `sequentialCurve: at must be ascending integers in [1, ${cases.length}]`)
    }
    const { pre, preLoc } = await this.preEdit(cases.slice(0, at[at.length - 1]))
    return (await this.sequence(cases, pre, preLoc, at, opts.onProgress)).curve
  }
}

/** A lifelong log refined as its editor's config says (MENDConfig.refine); any other edited model as it is. */
async function refined(edited: EditedMEND, onProgress?: (done: number, total: number) => void): Promise<EditedMEND> {
  return edited.kind === 'malmen' && edited.config.refine.rounds > 0 ? edited.refine(onProgress ? { onProgress } : {}) : edited
}

/** @deprecated Renamed `BaseEditor` (EasyEdit's name for its front end); this alias goes in the next release. */
export const Editor = BaseEditor
/** @deprecated Renamed `BaseEditor`. */
export type Editor = BaseEditor
/** @deprecated Renamed `BaseEditorRequest`. */
export type EditorEditRequest = BaseEditorRequest
/** @deprecated Renamed `BaseEditorOptions`. */
export type EditorOptions = BaseEditorOptions
