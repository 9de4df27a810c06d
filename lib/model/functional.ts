/**
 * FunctionalGPT2LMHeadModel: an edited model = an untouched base + a low-rank overlay (DESIGN §6).
 * Like `higher`'s functional modules, the weights are an argument rather than owned state: the
 * base is shared and never written, and the edit log (oldest first) rebuilds any earlier state.
 */
import { createHash } from 'crypto'
import * as fs from 'fs'
import * as path from 'path'
import { checkOptions, describe, invalidArg } from '../core/check'
import { mendError } from '../core/errors'
import { makeDirectory } from '../core/files'
import { GPT2Inference, GPT2LMHeadModel } from './gpt2'
import { isConv1DWeight } from './names'
import { buildOverlay, callNative, materialize, NativeOverlay, safetensorsRead, safetensorsWrite } from '../core/native'
import { Tensor } from '../core/tensor'

/**
 * One edit in the log. A classic MEND edit holds, per inner param, Ũ [N, d_in] and D̃ [N, d_out]
 * (before α) and α. A lifelong edit (editor kind "malmen", DESIGN §5b) holds no factors but, per
 * inner param, its keys K [N, d_in] and value shifts V [N, d_out] on the base, and the fact it edits.
 */
export interface EditRecord {
  factors: Record<string, { u: Tensor; d: Tensor }>
  alphas: Record<string, number>
  /** Free-form description of the request (kept in saved edit logs). */
  request?: unknown
  /** Lifelong edits only. */
  lifelong?: LifelongRows
}

/** A lifelong edit's rows: keys and value shifts per inner param, and the fact it edits. */
export interface LifelongRows {
  rows: Record<string, { k: Tensor; v: Tensor }>
  /** The fact this edit sets: a later edit of the same fact supersedes this one. */
  factKey?: string
  /** The requests (batch rows) this edit holds, each one edit of the solve (the μ schedule counts them). Default 1. */
  requests?: number
  /** The edit's tokens ([B, T] row-major ids, mask (null: all 1) and labels): what MEND.refine proposes on again. */
  tokens?: LifelongTokens
}

/** The token batch of a lifelong edit (kept in the log for its refinement). */
export interface LifelongTokens {
  B: number
  T: number
  ids: Int32Array
  mask: Int32Array | null
  labels: Int32Array
  /** The edit's key mask ([B, T] of 0/1; null: every kept row). */
  keyMask: Int32Array | null
}

/**
 * Rebuilds edited models whose edits are not independent overlays (the lifelong mode solves over
 * the whole log): implemented by the MEND controller that made them.
 */
export interface EditSolver {
  /** The edited model of `edits` (oldest first) on the solver's base. */
  rebuild(edits: EditRecord[]): Promise<FunctionalGPT2LMHeadModel>
  /** Which edits are live (not superseded by a later edit of the same fact). */
  live(edits: readonly EditRecord[]): boolean[]
}

/** metadata.format of a saved edit log. */
export const EDITS_FORMAT = 'node-mend-edits'

export class FunctionalGPT2LMHeadModel extends GPT2Inference {
  /** The untouched model every edit is applied on. */
  readonly base: GPT2LMHeadModel
  /** The edit log, oldest first. */
  readonly edits: readonly EditRecord[]
  private readonly overlay: NativeOverlay | null
  /** The lifelong solver and its state (lifelong logs only); internal. */
  readonly solver: EditSolver | null
  readonly solverState: unknown

  /** Internal: use MEND.edit, loadEdits, without or upTo. */
  constructor(base: GPT2LMHeadModel, edits: EditRecord[], overlay: NativeOverlay | null, solver: EditSolver | null = null, solverState: unknown = null) {
    super(base.native, base.config)
    this.base = base
    this.edits = Object.freeze([...edits])
    this.overlay = overlay
    this.solver = solver
    this.solverState = solverState
  }

  protected get overlayHandle(): NativeOverlay | null {
    return this.overlay
  }

  /** The native overlay (null without edits); internal, used by MEND.edit. */
  get nativeOverlay(): NativeOverlay | null {
    return this.overlay
  }

  /** An edited model from an edit log on `base` (rebuilds the overlay). */
  static async fromEdits(base: GPT2LMHeadModel, edits: EditRecord[], opts: { solver?: EditSolver } = {}): Promise<FunctionalGPT2LMHeadModel> {
    if (!(base instanceof GPT2LMHeadModel)) throw invalidArg('a GPT2LMHeadModel', 'fromEdits base', base)
    if (!Array.isArray(edits)) throw invalidArg('an array of edit records', 'fromEdits edits', edits)
    const shapes = new Map(base.parameters().map((p) => [p.name, p.shape]))
    edits.forEach((e, i) => {
      if (!e || typeof e !== 'object' || !e.factors || typeof e.factors !== 'object' || !e.alphas || typeof e.alphas !== 'object') {
        throw invalidArg('an edit record { factors, alphas, request? }', `fromEdits edits[${i}]`, e)
      }
      for (const [name, f] of Object.entries(e.factors)) {
        const ok = (x: unknown) => !!x && typeof x === 'object' && (x as { data?: unknown }).data instanceof Float32Array && Array.isArray((x as { shape?: unknown }).shape)
        if (!f || !ok(f.u) || !ok(f.d)) throw invalidArg('{ u: Tensor, d: Tensor } with Float32Array data', `fromEdits edits[${i}].factors["${name}"]`, f)
        // Only the editable weights (Conv1D) take edits, and the factors are (rows, d_in) and (rows, d_out) exactly:
        // factors for wte, or 3-D factors, were applied reinterpreted.
        const shape = shapes.get(name)
        if (!shape || !isConv1DWeight(name)) throw mendError('ERR_SHAPE_MISMATCH', `edit ${i}: "${name}" is not an editable Conv1D weight of the base model`)
        const [u, d] = [f.u, f.d]
        if (u.shape.length !== 2 || d.shape.length !== 2 || u.shape[1] !== shape[0] || d.shape[1] !== shape[1] || u.shape[0] !== d.shape[0] ||
            u.data.length !== u.shape[0] * u.shape[1] || d.data.length !== d.shape[0] * d.shape[1]) {
          throw mendError('ERR_SHAPE_MISMATCH', `edit ${i}: factors for "${name}" have shapes [${u.shape}] and [${d.shape}], expected [rows, ${shape[0]}] and [rows, ${shape[1]}]`)
        }
      }
    })
    const lifelong = edits.filter((e) => e.lifelong !== undefined).length
    if (lifelong > 0 && lifelong < edits.length) throw mendError('ERR_INVALID_ARG', 'fromEdits: a log mixes lifelong and classic MEND edits')
    if (lifelong > 0 || opts.solver) {
      if (!opts.solver) throw mendError('ERR_INVALID_ARG', 'fromEdits: a lifelong edit log is solved by the editor that made it: use mend.fromEdits(edits) or mend.loadEdits(file)')
      return opts.solver.rebuild(edits)
    }
    if (edits.length === 0) return new FunctionalGPT2LMHeadModel(base, [], null)
    const index = new Map(base.parameters().map((p, i) => [p.name, i]))
    const factors = edits.map((e, i) => Object.entries(e.factors).map(([name, f]) => {
      const param = index.get(name)
      if (param === undefined) throw mendError('ERR_SHAPE_MISMATCH', `edit ${i}: "${name}" is not a parameter of the base model`)
      const alpha = e.alphas[name]
      if (typeof alpha !== 'number' || !Number.isFinite(alpha)) throw mendError('ERR_NON_FINITE', `edit ${i}: α of "${name}" is not a finite number`)
      // a = α·Ũ rounded like the native edit does (float32 multiply), so a replay is bit-exact.
      const a = new Float32Array(f.u.data.length)
      for (let k = 0; k < a.length; k++) a[k] = Math.fround(f.u.data[k] * alpha)
      return { param, a, b: f.d.data }
    }))
    const overlay = await callNative(() => buildOverlay(base.native, factors))
    return new FunctionalGPT2LMHeadModel(base, edits, overlay)
  }

  /** The model with edit `editIndex` removed (the others replayed on the base). */
  async without(editIndex: number): Promise<FunctionalGPT2LMHeadModel> {
    if (!Number.isInteger(editIndex) || editIndex < 0 || editIndex >= this.edits.length) {
      throw mendError('ERR_INVALID_ARG', `Expected an edit index in [0, ${this.edits.length}) for without() but received ${describe(editIndex)}`)
    }
    return FunctionalGPT2LMHeadModel.fromEdits(this.base, this.edits.filter((_, i) => i !== editIndex), this.solverOpts())
  }

  /** Which edits of the log hold (false: superseded by a later edit of the same fact; lifelong mode only). */
  get liveEdits(): boolean[] {
    return this.solver ? this.solver.live(this.edits) : this.edits.map(() => true)
  }

  private solverOpts(): { solver?: EditSolver } {
    return this.solver ? { solver: this.solver } : {}
  }

  /** The model with only the first n edits. */
  async upTo(n: number): Promise<FunctionalGPT2LMHeadModel> {
    if (!Number.isInteger(n) || n < 0 || n > this.edits.length) {
      throw mendError('ERR_INVALID_ARG', `Expected a count in [0, ${this.edits.length}] for upTo() but received ${describe(n)}`)
    }
    return FunctionalGPT2LMHeadModel.fromEdits(this.base, this.edits.slice(0, n), this.solverOpts())
  }

  /** A plain model whose edited weights are merged (W + ΔW); other weights are shared with the base. */
  async materialize(): Promise<GPT2LMHeadModel> {
    const handle = await callNative(() => materialize(this.base.native, this.overlay))
    return GPT2LMHeadModel.fromNative(handle, this.config, this.base.rawConfig)
  }

  /** Writes a Hugging Face directory with the merged weights. */
  async savePretrained(dir: string): Promise<void> {
    const m = await this.materialize()
    try {
      await m.savePretrained(dir)
    } finally {
      m.dispose()
    }
  }

  /** Bytes the overlay holds (factors and any folded merged weights). */
  get overlayBytes(): number {
    return this.overlay ? this.overlay.bytes() : 0
  }

  /** Writes the edit log (factors, α, requests, order) as safetensors. */
  async saveEdits(file: string): Promise<void> {
    const tensors: { name: string; shape: number[]; data: Float32Array }[] = []
    const meta = this.edits.map((e, i) => {
      if (e.lifelong) {
        for (const [name, r] of Object.entries(e.lifelong.rows)) {
          tensors.push({ name: `edits.${i}.${name}.k`, shape: r.k.shape, data: r.k.data })
          tensors.push({ name: `edits.${i}.${name}.v`, shape: r.v.shape, data: r.v.data })
        }
        const t = e.lifelong.tokens
        const tokens = t ? { B: t.B, T: t.T, ids: Array.from(t.ids), mask: t.mask ? Array.from(t.mask) : null, labels: Array.from(t.labels), key_mask: t.keyMask ? Array.from(t.keyMask) : null } : null
        return { params: Object.keys(e.lifelong.rows), kind: 'malmen', fact_key: e.lifelong.factKey ?? null, requests: e.lifelong.requests ?? 1, request: e.request ?? null, tokens }
      }
      for (const [name, f] of Object.entries(e.factors)) {
        tensors.push({ name: `edits.${i}.${name}.u`, shape: f.u.shape, data: f.u.data })
        tensors.push({ name: `edits.${i}.${name}.d`, shape: f.d.shape, data: f.d.data })
      }
      return { params: Object.keys(e.factors), alphas: e.alphas, request: e.request ?? null }
    })
    const c = this.config
    const params = [...new Set(this.edits.flatMap((e) => Object.keys(e.lifelong ? e.lifelong.rows : e.factors)))].sort()
    makeDirectory(path.dirname(path.resolve(file)))
    await callNative(() => safetensorsWrite(file, tensors, {
      format: EDITS_FORMAT,
      version: '1',
      edits: JSON.stringify(meta),
      base: JSON.stringify({ n_layer: c.nLayer, n_embd: c.nEmbd, n_head: c.nHead, vocab_size: c.vocabSize, n_positions: c.nPositions }),
      base_fingerprint: JSON.stringify({ sha256: baseFingerprint(this.base, params), params }),
    }))
  }

  /**
   * Replays a saved edit log on `base`, which must be the model the edits were made on: the log
   * records a fingerprint of that base (SHA-256 of the config and of the edited weights), and a
   * different base is ERR_BASE_MISMATCH unless `allowBaseMismatch` (logs written before the
   * fingerprint existed cannot be checked).
   */
  static async loadEdits(base: GPT2LMHeadModel, file: string, opts: { allowBaseMismatch?: boolean; solver?: EditSolver } = {}): Promise<FunctionalGPT2LMHeadModel> {
    opts = checkOptions(opts, 'loadEdits', ['allowBaseMismatch', 'solver'])
    const r = await callNative(() => safetensorsRead(file))
    if (r.metadata.format !== EDITS_FORMAT) throw mendError('ERR_SAFETENSORS', `${file} is not a node-mend edit log (metadata.format = ${JSON.stringify(r.metadata.format)})`)
    if (r.metadata.base_fingerprint !== undefined && !opts.allowBaseMismatch) {
      let fp: { sha256: string; params: string[] }
      try {
        fp = JSON.parse(r.metadata.base_fingerprint)
        if (typeof fp.sha256 !== 'string' || !Array.isArray(fp.params)) throw new Error('not { sha256, params }')
      } catch (e) {
        throw mendError('ERR_SAFETENSORS', `${file}: metadata "base_fingerprint" is malformed (${(e as Error).message})`)
      }
      const known = new Set(base.parameters().map((p) => p.name))
      const missing = fp.params.find((n) => !known.has(n))
      if (missing !== undefined || baseFingerprint(base, fp.params) !== fp.sha256) {
        throw mendError('ERR_BASE_MISMATCH', `${file} was made on another base model (its fingerprint of ${fp.params.length} edited weights and the config differs from this model's${missing ? `; "${missing}" does not exist here` : ''}); ` +
          'replay it on the model it was made on, or pass { allowBaseMismatch: true } to apply it anyway')
      }
    }
    let meta: { params: string[]; alphas: Record<string, number>; request: unknown; kind?: string; fact_key?: string | null; requests?: number; tokens?: unknown }[]
    try {
      meta = JSON.parse(r.metadata.edits)
      if (!Array.isArray(meta)) throw new Error('not a list')
    } catch (e) {
      throw mendError('ERR_SAFETENSORS', `${file}: metadata "edits" is malformed (${(e as Error).message})`)
    }
    const shapes = new Map(base.parameters().map((p) => [p.name, p.shape]))
    const edits: EditRecord[] = meta.map((m, i) => {
      if (m.kind === 'malmen') {
        const rows: LifelongRows['rows'] = {}
        for (const name of m.params) {
          const shape = shapes.get(name)
          const k = r.tensors[`edits.${i}.${name}.k`], v = r.tensors[`edits.${i}.${name}.v`]
          if (!k || !v || !k.data || !v.data) throw mendError('ERR_MISSING_TENSOR', `${file}: missing keys or value shifts of edit ${i} for "${name}"`)
          if (!shape || k.shape[1] !== shape[0] || v.shape[1] !== shape[1] || k.shape[0] !== v.shape[0]) {
            throw mendError('ERR_SHAPE_MISMATCH', `${file}: rows of edit ${i} for "${name}" do not fit this model`)
          }
          for (const t of [k, v]) if (!t.data!.every(Number.isFinite)) throw mendError('ERR_NON_FINITE', `${file}: rows of edit ${i} for "${name}" hold NaN or Inf`)
          rows[name] = { k: { shape: k.shape, data: k.data }, v: { shape: v.shape, data: v.data } }
        }
        const requests = m.requests ?? 1
        if (!Number.isInteger(requests) || requests < 1) throw mendError('ERR_SAFETENSORS', `${file}: edit ${i} has requests = ${JSON.stringify(m.requests)}; expected a positive integer`)
        const tokens = m.tokens == null ? undefined : readTokens(m.tokens, `${file}: edit ${i}`)
        return { factors: {}, alphas: {}, request: m.request ?? undefined, lifelong: { rows, factKey: m.fact_key ?? undefined, requests, ...(tokens ? { tokens } : {}) } }
      }
      const factors: EditRecord['factors'] = {}
      for (const name of m.params) {
        const shape = shapes.get(name)
        const u = r.tensors[`edits.${i}.${name}.u`], d = r.tensors[`edits.${i}.${name}.d`]
        if (!u || !d || !u.data || !d.data) throw mendError('ERR_MISSING_TENSOR', `${file}: missing factors of edit ${i} for "${name}"`)
        if (!shape || !isConv1DWeight(name) || u.shape.length !== 2 || d.shape.length !== 2 || u.shape[1] !== shape[0] || d.shape[1] !== shape[1] || u.shape[0] !== d.shape[0]) {
          throw mendError('ERR_SHAPE_MISMATCH', `${file}: factors of edit ${i} for "${name}" do not fit this model`)
        }
        for (const t of [u, d]) if (!t.data!.every(Number.isFinite)) throw mendError('ERR_NON_FINITE', `${file}: factors of edit ${i} for "${name}" hold NaN or Inf`)
        factors[name] = { u: { shape: u.shape, data: u.data }, d: { shape: d.shape, data: d.data } }
      }
      return { factors, alphas: m.alphas, request: m.request ?? undefined }
    })
    if (edits.some((e) => e.lifelong) && !opts.solver) {
      throw mendError('ERR_INVALID_ARG', `${file} is a lifelong edit log: it is solved by the editor that made it, so load it with mend.loadEdits(file)`)
    }
    return FunctionalGPT2LMHeadModel.fromEdits(base, edits, opts.solver ? { solver: opts.solver } : {})
  }
}

/** A saved edit's tokens ({ B, T, ids, mask, labels } of integers), checked. */
function readTokens(t: unknown, where: string): LifelongTokens {
  const o = t as { B?: unknown; T?: unknown; ids?: unknown; mask?: unknown; labels?: unknown; key_mask?: unknown }
  const n = Number.isInteger(o?.B) && Number.isInteger(o?.T) && (o.B as number) > 0 && (o.T as number) > 0 ? (o.B as number) * (o.T as number) : -1
  const ints = (a: unknown) => Array.isArray(a) && a.length === n && a.every((x) => Number.isInteger(x) && Math.abs(x) < 2 ** 31)
  const km = o.key_mask ?? null
  if (n < 0 || !ints(o.ids) || !ints(o.labels) || !(o.mask === null || ints(o.mask)) || !(km === null || ints(km))) {
    throw mendError('ERR_SAFETENSORS', `${where}: "tokens" is malformed (expected { B, T, ids, mask, labels, key_mask } with B·T integers each)`)
  }
  const arr = (a: unknown) => (a ? Int32Array.from(a as number[]) : null)
  return { B: o.B as number, T: o.T as number, ids: arr(o.ids)!, mask: arr(o.mask), labels: arr(o.labels)!, keyMask: arr(km) }
}

/** SHA-256 of a base model's config and of the named weights (what an edit log was computed on). */
function baseFingerprint(base: GPT2LMHeadModel, params: string[]): string {
  const h = createHash('sha256')
  const c = base.config
  h.update(JSON.stringify([c.nLayer, c.nEmbd, c.nHead, c.vocabSize, c.nPositions, c.nInner ?? 0, c.layerNormEpsilon ?? 1e-5]))
  for (const name of params) {
    const d = base.parameter(name).data
    h.update(name)
    h.update(new Uint8Array(d.buffer, d.byteOffset, d.byteLength))
  }
  return h.digest('hex')
}
