/**
 * MEND controller (EasyEdit's MEND for GPT-2): holds an editor — one GradientTransform per inner
 * weight shape — and edits a model into a FunctionalGPT2LMHeadModel. DESIGN §5.
 */
import { mendError } from '../core/errors'
import { FunctionalGPT2LMHeadModel, EditRecord, LifelongRows } from '../model/functional'
import { Batch, prepareBatch } from '../model/batch'
import { GPT2LMHeadModel, ForwardOptions, ForwardOutput } from '../model/gpt2'
import { callNative, createEditor, EditorSpec, malmenPropose, mendEdit, NativeEditor, NativeRidge, ridgeValueGradients } from '../core/native'
import { LifelongSettings, LifelongSolver } from './lifelong'
import { Tensor } from '../core/tensor'
import { loadEditorFile, saveEditorFile } from './editor-file'
import { EditorLayout, editorLayout, freshEditorSpec, GRADIENT_REFINE_DEFAULTS, LayerActivation, layerActivationsOf, MENDConfig, MuStep, RefineSettings, checkRefine, resolveConfig, usesKeyCovariance } from './network'
import { checkOptions, invalidArg } from '../core/check'

export type { MENDConfig, LayerActivation, MuStep } from './network'
export { defaultInnerParams, shapeKey } from './network'

/** Options of MEND.refine (lifelong mode). */
export interface RefineOptions {
  /** Rounds (default the editor's refine.rounds). */
  rounds?: number
  /** 'editor' (default): the editor network's proposals on the edited model, × step. 'gradient': gradient descent on the log's edit loss in value space. */
  method?: 'editor' | 'gradient'
  /** method 'editor': the proposals' weight (default the editor's refine.step). */
  step?: number
  /** method 'editor': drop a round that does not lower the log's edit loss and stop (default true). */
  monotone?: boolean
  /** method 'gradient': heavy-ball momentum in [0, 1) (default 0.5). */
  momentum?: number
  /** method 'gradient': the line search's step sizes, relative to |V|/|∇V| (default [0.005, 0.01, 0.02]). */
  steps?: number[]
  /**
   * method 'gradient': what the log's edit loss weighs equally: 'edit' (default; the sum of each live
   * edit's mean target loss) or 'token' (the sum of every target token's loss).
   */
  weighting?: 'edit' | 'token'
  /** (done, total) after each proposal (editor) or round (gradient); total when refinement stops early. */
  onProgress?: (done: number, total: number) => void
}

export interface EditOptions {
  /** Return Ũ and D̃ (before α) per inner param (lifelong mode: the keys and value shifts, as `rows`). */
  returnFactors?: boolean
  /** Stored with the edit in the log (e.g. the text request). */
  request?: unknown
  /**
   * Lifelong mode: the fact this edit sets. A later edit with the same key supersedes this one (its
   * rows leave the solve). Default, for a one-row batch: its prompt tokens (the tokens before the
   * first label); a batch of several rows supersedes nothing unless a key is given.
   */
  factKey?: string
  /**
   * Lifelong mode: which token rows serve as keys ([B][T] of 0/1, default all kept rows), e.g. the
   * subject's tokens only.
   */
  keyMask?: number[][]
}

export interface EditInfo {
  /** Loss of the edit batch before the edit (on the model being edited). */
  loss: number
  /** Rows kept per inner param (rows where X and D both have a nonzero). */
  keptRows: Record<string, number>
  /** cos(true gradient XᵀD, pseudo-gradient ŨᵀD̃) per inner param. */
  cos: Record<string, number>
  /** Milliseconds: pre-edit pass, editor, overlay, and the whole call. */
  timings: { preMs: number; editorMs: number; overlayMs: number; totalMs: number }
  factors?: Record<string, { u: Tensor; d: Tensor }>
  /** Lifelong mode with returnFactors: the keys and value shifts per inner param. */
  rows?: Record<string, { k: Tensor; v: Tensor }>
}

const INTERNAL = Symbol('node-mend internal')

interface EditorState {
  handle: NativeEditor
  /** α per inner param (a copy of the editor's edit_lrs; reading the whole spec back is ~100 MB). */
  editLrs: Float32Array
  layout: EditorLayout
  config: Required<MENDConfig>
  /** Activation per editor layer (from the spec it was created with). */
  acts: LayerActivation[]
  /** Set when an EditTrainer built from this controller has trained (its own copy). */
  trainedCopy?: boolean
  /** Lifelong mode (kind 'malmen'): the prior and the solver over edit logs. */
  lifelong?: { settings: LifelongSettings; solver: LifelongSolver }
}

/** The controller of an edited state: its model is the FunctionalGPT2LMHeadModel (base + overlay). */
export type EditedMEND = MEND<FunctionalGPT2LMHeadModel>

/** The state of a root controller over `spec` (the native editor is created, and checked, here). */
function editorState(model: GPT2LMHeadModel, spec: EditorSpec, config: Required<MENDConfig>, keyCov?: (Float32Array | null)[]): EditorState {
  const layout = editorLayout(model, config.innerParams)
  const handle = createEditor(model.native, spec)
  const st: EditorState = { handle, editLrs: Float32Array.from(spec.editLrs), layout, config, acts: layerActivationsOf(spec) }
  if (config.kind === 'malmen') st.lifelong = lifelongOf(model, st, keyCov ?? layout.inner.map(() => null))
  return st
}

function lifelongOf(model: GPT2LMHeadModel, st: EditorState, keyCov: (Float32Array | null)[]): EditorState['lifelong'] {
  const { layout, config } = st
  if (usesKeyCovariance(config)) {
    keyCov.forEach((c, k) => {
      const d = layout.shapes[k][0]
      if (!c) throw mendError('ERR_INVALID_ARG', `the lifelong mode with mu > 0 needs a key covariance for "${layout.inner[k]}" (MEND.withKeyCovariance)`)
      if (c.length !== d * d) throw mendError('ERR_SHAPE_MISMATCH', `the key covariance of "${layout.inner[k]}" must be [${d}, ${d}]`)
    })
  }
  const settings: LifelongSettings = { logRidge: layout.inner.map(() => config.logRidge), mu: config.mu, muSchedule: config.muSchedule, keyCov }
  return { settings, solver: new LifelongSolver(model, layout, settings, st.handle) }
}

/** The default fact key of a one-row edit batch: its tokens before the first label. */
function defaultFactKey(ids: Int32Array, labels: Int32Array, mask: Int32Array | null, B: number, T: number): string | undefined {
  if (B !== 1) return undefined
  const out: number[] = []
  for (let t = 0; t < T; t++) {
    if (labels[t] !== -100) break
    if (!mask || mask[t]) out.push(ids[t])
  }
  return JSON.stringify(out)
}

/** @internal The lifelong solver of a controller (EditTrainer's prior), or null for classic MEND. */
export function lifelongSolverOf(mend: MEND): LifelongSolver | null {
  return mend[INTERNAL].lifelong?.solver ?? null
}

/** @internal EditTrainer marks the controller it was built from: training does not change it. */
export function noteTrainedCopy(mend: MEND): void {
  mend[INTERNAL].trainedCopy = true
}

/** An edit record's tokens (kept for refinement) as a batch: its prompt and target labels. */
function recordBatch(e: EditRecord): Batch {
  const t = e.lifelong!.tokens!
  const shaped = (data: Int32Array) => ({ data, shape: [t.B, t.T] })
  return { inputIds: shaped(t.ids), labels: shaped(t.labels), ...(t.mask ? { attentionMask: shaped(t.mask) } : {}) }
}

/** A lifelong log's edit loss on f: the sum over its live edits of each one's mean target loss (× weight[i] when given). */
async function logEditLoss(f: FunctionalGPT2LMHeadModel, live: boolean[], weight?: number[]): Promise<number> {
  let s = 0
  for (const [i, e] of f.edits.entries()) if (live[i]) s += (weight ? weight[i] : 1) * (await f.forward(recordBatch(e))).loss!
  return s
}

/** An edit record's number of target tokens (labels other than -100). */
function targetTokens(e: EditRecord): number {
  let n = 0
  for (const l of e.lifelong!.tokens!.labels) if (l !== -100) n++
  return n
}

/**
 * A MEND controller: an editor network over a model. `M` is the model it holds: the plain
 * GPT2LMHeadModel for the root controller (`new MEND(model)`, `MEND.fromPretrained`), a
 * FunctionalGPT2LMHeadModel (base + overlay) for every controller `edit()` returns — see EditedMEND.
 */
export class MEND<M extends GPT2LMHeadModel | FunctionalGPT2LMHeadModel = GPT2LMHeadModel | FunctionalGPT2LMHeadModel> {
  /** The plain model (root controller) or the FunctionalGPT2LMHeadModel of this edited state. */
  readonly model: M
  /** @internal */
  readonly [INTERNAL]: EditorState

  /** A fresh (identity) editor for `model`. */
  constructor(model: M & GPT2LMHeadModel, config?: MENDConfig)
  /** @internal */
  constructor(model: M, config: MENDConfig, state: EditorState, token: typeof INTERNAL)
  constructor(model: M, config: MENDConfig = {}, state?: EditorState, token?: typeof INTERNAL) {
    this.model = model
    if (state && token === INTERNAL) {
      this[INTERNAL] = state
      return
    }
    if (!(model instanceof GPT2LMHeadModel)) throw mendError('ERR_INVALID_ARG', 'Expected a GPT2LMHeadModel for new MEND(model, config)')
    const cfg = resolveConfig(model, config)
    this[INTERNAL] = editorState(model, freshEditorSpec(editorLayout(model, cfg.innerParams), cfg), cfg)
  }

  /** Loads an editor file (DESIGN §7) and checks it against the model. */
  static async fromPretrained(model: GPT2LMHeadModel, editorPath: string, opts: { innerParams?: string[] } = {}): Promise<MEND<GPT2LMHeadModel>> {
    if (!(model instanceof GPT2LMHeadModel)) throw invalidArg('a GPT2LMHeadModel', 'MEND.fromPretrained(model, file)', model)
    if (typeof editorPath !== 'string') throw invalidArg('an editor file path', 'MEND.fromPretrained(model, file)', editorPath)
    opts = checkOptions(opts, 'MEND.fromPretrained', ['innerParams'])
    const { spec, config, keyCov } = await loadEditorFile(model, editorPath, opts.innerParams)
    let state: EditorState
    try {
      state = editorState(model, spec, config, keyCov)
    } catch (e) {
      const err = e as Error
      err.message = `${editorPath}: ${err.message}`
      throw err
    }
    return new MEND<GPT2LMHeadModel>(model, config, state, INTERNAL)
  }

  /** A MEND controller over an editor given as tensors (e.g. one being trained). */
  static fromEditorSpec(model: GPT2LMHeadModel, spec: EditorSpec, config: MENDConfig = {}, keyCov?: Record<string, Float32Array | null>): MEND<GPT2LMHeadModel> {
    if (!(model instanceof GPT2LMHeadModel)) throw invalidArg('a GPT2LMHeadModel', 'MEND.fromEditorSpec(model, spec)', model)
    if (!spec || typeof spec !== 'object') throw invalidArg('an editor spec object', 'MEND.fromEditorSpec(model, spec)', spec)
    const cfg = resolveConfig(model, config)
    return new MEND<GPT2LMHeadModel>(model, cfg, editorState(model, spec, cfg, keyCov ? cfg.innerParams.map((n) => keyCov[n] ?? null) : undefined), INTERNAL)
  }

  /**
   * A root controller with the same editor network in the lifelong mode ('malmen') with these
   * solve settings: `keyCov` is C0 = E[x·xᵀ] per inner param (see keyCovariances), weighted by `mu`
   * (by the μ of `muSchedule` while the log is short). Options not given keep this controller's.
   */
  withLifelong(opts: { logRidge?: number; mu?: number; muSchedule?: MuStep[]; refine?: RefineSettings; keyCov?: Record<string, Float32Array> } = {}): MEND<GPT2LMHeadModel> {
    opts = checkOptions(opts, 'MEND.withLifelong', ['logRidge', 'mu', 'muSchedule', 'refine', 'keyCov'])
    const st = this[INTERNAL]
    const cfg = resolveConfig(this.baseModel, {
      ...st.config, kind: 'malmen', logRidge: opts.logRidge ?? st.config.logRidge, mu: opts.mu ?? st.config.mu, muSchedule: opts.muSchedule ?? st.config.muSchedule,
      refine: opts.refine ?? st.config.refine,
    })
    const prevCov = st.lifelong?.settings.keyCov
    const keyCov = st.layout.inner.map((name, k) => opts.keyCov?.[name] ?? prevCov?.[k] ?? null)
    const next: EditorState = { ...st, config: cfg, lifelong: undefined, trainedCopy: undefined }
    next.lifelong = lifelongOf(this.baseModel, next, keyCov)
    return new MEND<GPT2LMHeadModel>(this.baseModel, cfg, next, INTERNAL)
  }

  /** 'mend' (EasyEdit's MEND) or 'malmen' (the lifelong least-squares mode, DESIGN §5b). */
  get kind(): 'mend' | 'malmen' {
    return this[INTERNAL].config.kind
  }

  /** Lifelong mode: the preservation covariance C0 per inner param (null where none). */
  get keyCovariance(): Record<string, Float32Array | null> | null {
    const l = this[INTERNAL].lifelong
    return l ? Object.fromEntries(this[INTERNAL].layout.inner.map((n, k) => [n, l.settings.keyCov[k]])) : null
  }

  /** Lifelong mode: the edited model of an edit log (records from this editor's edits), solved on the base. */
  async fromEdits(edits: EditRecord[]): Promise<EditedMEND> {
    const l = this.requireLifelong('fromEdits')
    const fm = await FunctionalGPT2LMHeadModel.fromEdits(this.baseModel, edits, { solver: l.solver })
    return new MEND<FunctionalGPT2LMHeadModel>(fm, this[INTERNAL].config, this[INTERNAL], INTERNAL)
  }

  /** Loads a saved edit log on this controller's base (lifelong logs are solved by this editor). */
  async loadEdits(file: string, opts: { allowBaseMismatch?: boolean } = {}): Promise<EditedMEND> {
    opts = checkOptions(opts, 'MEND.loadEdits', ['allowBaseMismatch'])
    const l = this[INTERNAL].lifelong
    const fm = await FunctionalGPT2LMHeadModel.loadEdits(this.baseModel, file, { ...opts, ...(l ? { solver: l.solver } : {}) })
    return new MEND<FunctionalGPT2LMHeadModel>(fm, this[INTERNAL].config, this[INTERNAL], INTERNAL)
  }

  /**
   * Lifelong mode: this edit log refined (DESIGN §5b). Each of `rounds` passes (default the
   * editor's `refine.rounds`) proposes every live edit again with the editor network, now on the
   * edited model (base + ΔW: its pre-edit pass sees what the other edits did), adds `step` × those
   * value shifts to the edit's own (its keys stay the base's), and solves the log again. A sum of
   * independent proposals on the base gives way to one that accounts for the others: measured on
   * WorldFacts, 100 sequential edits go from 80.3 to 98.4% reliability at the same locality (4 rounds, README).
   * The result depends on the set of live edits, not their order; its records hold the refined
   * values, so `without(i)`, `saveEdits` and replay treat them like any others. With `monotone` (the
   * default) a round that does not lower the log's edit loss (the sum over live edits of each one's
   * mean target loss on the edited model) is dropped and refinement stops there, so a step that
   * overshoots cannot leave the log worse than it was (`onProgress` then reports the total: done).
   * Costs one pre-edit pass, one editor pass and one forward pass per live edit and one solve of the
   * log per round.
   */
  async refine(opts: RefineOptions = {}): Promise<EditedMEND> {
    const l = this.requireLifelong('refine')
    opts = checkOptions(opts, 'MEND.refine', ['rounds', 'step', 'monotone', 'onProgress', 'method', 'momentum', 'steps', 'weighting'])
    if (opts.monotone !== undefined && typeof opts.monotone !== 'boolean') throw invalidArg('a boolean', 'MEND.refine monotone', opts.monotone)
    if (opts.onProgress !== undefined && typeof opts.onProgress !== 'function') throw invalidArg('a function', 'MEND.refine onProgress', opts.onProgress)
    if (opts.method !== undefined && opts.method !== 'editor' && opts.method !== 'gradient') throw invalidArg("'editor' or 'gradient'", 'MEND.refine method', opts.method)
    if ((opts.method ?? this[INTERNAL].config.refine.method) === 'gradient') return this.refineByGradient(l, opts)
    const st = this[INTERNAL]
    // checkRefine refuses momentum, steps and weighting here: they are settings of method 'gradient'
    const { rounds, step } = checkRefine({
      rounds: opts.rounds ?? st.config.refine.rounds, step: opts.step ?? st.config.refine.step,
      ...(opts.momentum !== undefined ? { momentum: opts.momentum } : {}), ...(opts.steps !== undefined ? { steps: opts.steps } : {}),
      ...(opts.weighting !== undefined ? { weighting: opts.weighting } : {}),
    }, 'MEND.refine')
    const m = this.checkRefinable(l)
    const live = l.solver.live(m.edits)
    const base = this.baseModel
    const total = rounds * live.filter(Boolean).length
    let done = 0
    const monotone = opts.monotone ?? true
    const logLoss = (f: FunctionalGPT2LMHeadModel) => logEditLoss(f, live)
    let fm: FunctionalGPT2LMHeadModel = m
    let loss = monotone && rounds > 0 ? await logLoss(m) : 0
    for (let round = 0; round < rounds; round++) {
      const ov = fm.nativeOverlay
      const next: EditRecord[] = []
      for (const [i, e] of fm.edits.entries()) {
        if (!live[i]) { next.push(e); continue }
        const t = e.lifelong!.tokens!
        const p = await callNative(() => malmenPropose(base.native, st.handle, t.ids, t.B, t.T, t.mask, t.labels, t.keyMask, ov))
        const rows: LifelongRows['rows'] = {}
        st.layout.inner.forEach((name, k) => {
          const old = e.lifelong!.rows[name]
          // The kept rows are the ones where X and D both have a nonzero; a row that drops out (or
          // appears) on the edited model leaves this weight's values as they were this round.
          if (!old || p.rows[k] !== old.k.shape[0]) { if (old) rows[name] = old; return }
          const v = new Float32Array(old.v.data.length)
          for (let j = 0; j < v.length; j++) v[j] = old.v.data[j] + step * p.values[k][j]
          rows[name] = { k: old.k, v: { shape: old.v.shape, data: v } }
        })
        next.push({ ...e, lifelong: { ...e.lifelong!, rows } })
        opts.onProgress?.(++done, total)
      }
      const cand = await l.solver.rebuild(next)
      if (monotone) {
        const c = await logLoss(cand)
        if (!(c < loss)) { opts.onProgress?.(total, total); break }  // refinement ends here: report it done
        loss = c
      }
      fm = cand
    }
    return new MEND<FunctionalGPT2LMHeadModel>(fm, st.config, st, INTERNAL)
  }

  /**
   * refine({ method: 'gradient' }): gradient descent on the log's edit loss L (the sum over live
   * edits of each one's mean target loss on the edited model) in value space. ΔW = P·ΣKᵀV is linear
   * in the values, so ∂L/∂Vᵢ = Kᵢ·P·G with G = ∂L/∂ΔW, summed from one backward pass per live edit
   * on the edited model (MALMEN's adjoint). Each round moves along d = ∇V + momentum·d_prev by the
   * candidate of `steps` (× |V|/|d|) with the lowest L, and stops when none lowers it.
   */
  private async refineByGradient(l: NonNullable<EditorState['lifelong']>, opts: RefineOptions): Promise<EditedMEND> {
    const st = this[INTERNAL]
    if (opts.step !== undefined || opts.monotone === false) throw mendError('ERR_INVALID_ARG', "MEND.refine: method 'gradient' takes steps (a line search), not step, and is always monotone")
    const cr = st.config.refine
    const m0 = opts.momentum ?? cr.momentum, s0 = opts.steps ?? cr.steps, w0 = opts.weighting ?? cr.weighting
    const { rounds, momentum = GRADIENT_REFINE_DEFAULTS.momentum, steps = GRADIENT_REFINE_DEFAULTS.steps, weighting = 'edit' } = checkRefine({
      rounds: opts.rounds ?? cr.rounds, step: cr.step, method: 'gradient',
      ...(m0 !== undefined ? { momentum: m0 } : {}), ...(s0 !== undefined ? { steps: s0 } : {}), ...(w0 !== undefined ? { weighting: w0 } : {}),
    }, 'MEND.refine')
    const m = this.checkRefinable(l)
    const live = l.solver.live(m.edits)
    const inner = st.layout.inner
    const total = rounds
    // Each live edit's weight in the loss: 1, or its number of target tokens (weighting 'token').
    const weight = weighting === 'token' ? m.edits.map((e, i) => (live[i] ? targetTokens(e) : 0)) : undefined
    const logLoss = (f: FunctionalGPT2LMHeadModel) => logEditLoss(f, live, weight)
    let fm: FunctionalGPT2LMHeadModel = m
    let loss = rounds > 0 ? await logLoss(fm) : 0
    let prev: (Float32Array | null)[][] | null = null
    const valueScale = l.solver.scaleOf(m.edits)
    for (let round = 0; round < rounds; round++) {
      // G = ∂L/∂ΔW per weight as the factors of one backward pass per live edit (its captured rows
      // x and d, G = Σ xᵀd), and one key block per (live edit, weight with rows).
      const factors: { slot: number; x: Float32Array; d: Float32Array }[] = []
      for (const [i, e] of fm.edits.entries()) {
        if (!live[i]) continue
        const r = await fm.lossAndGrad(recordBatch(e), { params: [], capture: inner })
        const w = weight ? weight[i] : 1
        inner.forEach((name, k) => {
          const d = r.captures[name].d.data
          if (w !== 1) for (let j = 0; j < d.length; j++) d[j] *= w
          factors.push({ slot: k, x: r.captures[name].x.data, d })
        })
      }
      const blocks: { slot: number; k: Float32Array }[] = [], at: [number, number][] = []
      fm.edits.forEach((e, i) => {
        if (!live[i]) return
        inner.forEach((name, k) => { const r = e.lifelong!.rows[name]; if (r && r.k.shape[0] > 0) { blocks.push({ slot: k, k: r.k.data }); at.push([i, k]) } })
      })
      // dir[i][k] = ∂L/∂V of edit i's rows of weight k (+ momentum × the previous direction).
      const grads = await callNative(() => ridgeValueGradients(fm.solverState as NativeRidge, inner.map(() => null), blocks, factors))
      const dir: (Float32Array | null)[][] = fm.edits.map(() => inner.map(() => null))
      grads.forEach((g, b) => {
        const [i, k] = at[b]
        const p = prev?.[i]?.[k]
        if (p && p.length === g.length) for (let j = 0; j < g.length; j++) g[j] += momentum * p[j]
        dir[i][k] = g
      })
      let vv = 0, dd = 0
      at.forEach(([i, k]) => {
        const v = fm.edits[i].lifelong!.rows[inner[k]].v.data, d = dir[i][k]!
        for (let j = 0; j < v.length; j++) { vv += v[j] * v[j]; dd += d[j] * d[j] }
      })
      if (!(dd > 0)) { opts.onProgress?.(total, total); break }
      const scale = Math.sqrt(vv / dd)
      // The candidates V − η·scale·dir for η of steps: ΔW moves by −η·scale·(the step's value scale)·P·ΣKᵀdir.
      const moved = (eta: number): EditRecord[] => fm.edits.map((e, i) => {
        if (!live[i]) return e
        const rows: LifelongRows['rows'] = {}
        inner.forEach((name, k) => {
          const old = e.lifelong!.rows[name], d = dir[i][k]
          if (!old) return
          if (!d) { rows[name] = old; return }
          const v = new Float32Array(old.v.data.length)
          for (let j = 0; j < v.length; j++) v[j] = old.v.data[j] - eta * scale * d[j]
          rows[name] = { k: old.k, v: { shape: old.v.shape, data: v } }
        })
        return { ...e, lifelong: { ...e.lifelong!, rows } }
      })
      // Each candidate holds the log's current records (the loss reads only their tokens); the chosen
      // one is given its moved records.
      const cands = await l.solver.shifted(fm, blocks.map((b, j) => ({ ...b, v: dir[at[j][0]][at[j][1]]! })),
        steps.map((eta) => -eta * scale * valueScale))
      let best: { j: number; loss: number } | null = null
      for (const [j, cand] of cands.entries()) {
        const c = await logLoss(cand)
        if (!best || c < best.loss) best = { j, loss: c }
      }
      if (!best || !(best.loss < loss)) { opts.onProgress?.(total, total); break }
      const chosen = cands[best.j]
      fm = new FunctionalGPT2LMHeadModel(l.solver.base, moved(steps[best.j]), chosen.nativeOverlay, l.solver, chosen.solverState)
      loss = best.loss
      prev = dir
      opts.onProgress?.(round + 1, total)
    }
    // The candidates moved ΔW without a solve: the refined log is solved once from its records, so it
    // is what replaying them gives, bit for bit.
    if (fm !== m) fm = await l.solver.rebuild([...fm.edits])
    return new MEND<FunctionalGPT2LMHeadModel>(fm, st.config, st, INTERNAL)
  }

  /** The edited lifelong model this controller holds, checked for refine(). */
  private checkRefinable(l: NonNullable<EditorState['lifelong']>): FunctionalGPT2LMHeadModel {
    const m = this.model
    if (!(m instanceof FunctionalGPT2LMHeadModel) || m.edits.length === 0) throw mendError('ERR_INVALID_ARG', 'MEND.refine needs an edited model (a lifelong edit log); this controller holds no edits')
    if (m.solver !== l.solver) throw mendError('ERR_INVALID_ARG', 'MEND.refine: this model holds edits of another editor; refine it with the controller that made them')
    const live = l.solver.live(m.edits)
    m.edits.forEach((e, i) => {
      if (live[i] && !e.lifelong?.tokens) {
        throw mendError('ERR_INVALID_ARG', `MEND.refine: edit ${i} has no tokens (a log saved before node-mend kept them): it cannot be proposed again`)
      }
    })
    return m
  }

  private requireLifelong(what: string): NonNullable<EditorState['lifelong']> {
    const l = this[INTERNAL].lifelong
    if (!l) throw mendError('ERR_INVALID_ARG', `MEND.${what} is for the lifelong mode (kind 'malmen'); this editor is kind '${this.kind}'`)
    return l
  }

  /** The resolved configuration (inner params in canonical names). */
  get config(): Readonly<Required<MENDConfig>> {
    return this[INTERNAL].config
  }

  /**
   * The activation of each editor layer. EasyEdit's network — every editor node-mend creates and
   * every file without node-mend metadata — clamps on every layer: `['clamp', 'clamp']` for
   * nHidden 1. Editor files written by node-mend before 0.2 load as `['clamp', 'identity']`.
   */
  get layerActivations(): LayerActivation[] {
    return [...this[INTERNAL].acts]
  }

  /** The editor's tensors (copies), as createEditor/save use them. */
  editorSpec(): EditorSpec {
    return this[INTERNAL].handle.tensors()
  }

  /**
   * Writes the editor as one safetensors file with EasyEdit's MEND names. After training, save the
   * trainer's editor (`trainer.bestMEND().save(file)`): an EditTrainer trains a copy, never this one.
   */
  async save(file: string, opts: { metadata?: Record<string, string> } = {}): Promise<void> {
    opts = checkOptions(opts, 'MEND.save', ['metadata'])
    if (this[INTERNAL].trainedCopy) {
      process.emitWarning(`MEND.save(${JSON.stringify(file)}): this controller's editor is the untrained one an EditTrainer was built from ` +
        '(EditTrainer trains its own copy). To save the trained editor use trainer.bestMEND().save(file) or trainer.toMEND().save(file).',
      { type: 'NodeMendWarning', code: 'NODE_MEND_UNTRAINED_SAVE' })
    }
    await saveEditorFile(file, this.editorSpec(), this.config, this.baseModel.config, opts.metadata, this[INTERNAL].lifelong?.settings.keyCov)
  }

  /** Delegates to `.model.forward`. */
  forward(batch: Batch, opts?: ForwardOptions): Promise<ForwardOutput> {
    return this.model.forward(batch, opts)
  }

  /** The unedited model under this controller (its model, or the base of an edited one). */
  get baseModel(): GPT2LMHeadModel {
    return this.model instanceof FunctionalGPT2LMHeadModel ? this.model.base : this.model
  }

  /**
   * Edits the model with `batch` ({inputIds, attentionMask, labels}; one or many requests). The
   * pre-edit pass runs on this controller's model (base + earlier edits), so edits accumulate.
   */
  async edit(batch: Batch, opts: EditOptions = {}): Promise<{ edited: EditedMEND; info: EditInfo }> {
    opts = checkOptions<EditOptions>(opts, 'MEND.edit', ['returnFactors', 'request', 'factKey', 'keyMask'])
    if (opts.factKey !== undefined && typeof opts.factKey !== 'string') throw mendError('ERR_INVALID_ARG', `Expected a string for MEND.edit factKey but received ${typeof opts.factKey}`)
    // The request is stored in the edit log (JSON): one that cannot be written is refused now, not at save time.
    if (opts.request !== undefined) {
      try {
        JSON.stringify(opts.request)
      } catch (e) {
        throw mendError('ERR_INVALID_ARG', `Expected a JSON-serialisable value for MEND.edit request (it is stored in the edit log) but JSON.stringify refuses it: ${(e as Error).message}`)
      }
    }
    const t0 = process.hrtime.bigint()
    const st = this[INTERNAL]
    const base = this.baseModel
    const b = prepareBatch(batch, base.config.vocabSize, true)
    const prev = this.model instanceof FunctionalGPT2LMHeadModel ? this.model : null
    if (st.lifelong) return this.editLifelong(st.lifelong, b, prev, opts, t0)
    if (prev && prev.solver) throw mendError('ERR_INVALID_ARG', 'MEND.edit: this model holds lifelong edits; edit it with the lifelong editor that made them')
    const overlay = prev ? prev.nativeOverlay : null
    const r = await callNative(() => mendEdit(base.native, overlay, st.handle, b.ids.data, b.ids.B, b.ids.T, b.mask, b.labels!))
    const alphas = st.editLrs
    const factors: Record<string, { u: Tensor; d: Tensor }> = {}
    const record: EditRecord = { factors, alphas: {}, request: opts.request }
    const info: EditInfo = {
      loss: r.loss, keptRows: {}, cos: {},
      timings: { ...r.timings, totalMs: 0 },
    }
    st.layout.inner.forEach((name, k) => {
      const [dIn, dOut] = st.layout.shapes[k]
      factors[name] = { u: { shape: [r.kept[k], dIn], data: r.u[k] }, d: { shape: [r.kept[k], dOut], data: r.d[k] } }
      record.alphas[name] = alphas[k]
      info.keptRows[name] = r.kept[k]
      info.cos[name] = r.cos[k]
    })
    if (opts.returnFactors) info.factors = factors
    const fm = new FunctionalGPT2LMHeadModel(base, [...(prev ? prev.edits : []), record], r.overlay)
    const edited = new MEND<FunctionalGPT2LMHeadModel>(fm, st.config, st, INTERNAL)
    info.timings.totalMs = Number(process.hrtime.bigint() - t0) / 1e6
    return { edited, info }
  }

  private async editLifelong(l: NonNullable<EditorState['lifelong']>, b: ReturnType<typeof prepareBatch>, prev: FunctionalGPT2LMHeadModel | null,
    opts: EditOptions, t0: bigint): Promise<{ edited: EditedMEND; info: EditInfo }> {
    const st = this[INTERNAL]
    const base = this.baseModel
    if (prev && prev.edits.length > 0 && prev.solver !== l.solver) {
      throw mendError('ERR_INVALID_ARG', 'MEND.edit: this model holds edits of another editor (or of classic MEND); the lifelong mode solves over its own log only')
    }
    let keyMask: Int32Array | null = null
    if (opts.keyMask !== undefined) {
      const { B, T } = b.ids
      const km = opts.keyMask
      if (!Array.isArray(km) || km.length !== B || !km.every((row) => Array.isArray(row) && row.length <= T)) {
        throw mendError('ERR_INVALID_ARG', `Expected MEND.edit keyMask as ${B} rows of at most ${T} 0/1 values`)
      }
      keyMask = new Int32Array(B * T)
      km.forEach((row, i) => row.forEach((v, t) => { keyMask![i * T + t] = v ? 1 : 0 }))
    }
    const r = await callNative(() => malmenPropose(base.native, st.handle, b.ids.data, b.ids.B, b.ids.T, b.mask, b.labels!, keyMask, null))
    const rows: Record<string, { k: Tensor; v: Tensor }> = {}
    const info: EditInfo = { loss: r.loss, keptRows: {}, cos: {}, timings: { preMs: r.timings.preMs, editorMs: r.timings.editorMs, overlayMs: 0, totalMs: 0 } }
    st.layout.inner.forEach((name, k) => {
      const [dIn, dOut] = st.layout.shapes[k]
      rows[name] = { k: { shape: [r.rows[k], dIn], data: r.keys[k] }, v: { shape: [r.rows[k], dOut], data: r.values[k] } }
      info.keptRows[name] = r.rows[k]
    })
    const factKey = opts.factKey ?? defaultFactKey(b.ids.data, b.labels!, b.mask, b.ids.B, b.ids.T)
    const tokens = { B: b.ids.B, T: b.ids.T, ids: Int32Array.from(b.ids.data), mask: b.mask ? Int32Array.from(b.mask) : null, labels: Int32Array.from(b.labels!), keyMask }
    const record: EditRecord = { factors: {}, alphas: {}, request: opts.request, lifelong: { rows, factKey, requests: b.ids.B, tokens } }
    const t1 = process.hrtime.bigint()
    const fm = await l.solver.append(prev && prev.edits.length > 0 ? prev : null, record)
    info.timings.overlayMs = Number(process.hrtime.bigint() - t1) / 1e6
    if (opts.returnFactors) info.rows = rows
    const edited = new MEND<FunctionalGPT2LMHeadModel>(fm, st.config, st, INTERNAL)
    info.timings.totalMs = Number(process.hrtime.bigint() - t0) / 1e6
    return { edited, info }
  }
}
