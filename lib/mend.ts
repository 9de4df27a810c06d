/**
 * MEND controller (EasyEdit's MEND for GPT-2): holds an editor — one GradientTransform per inner
 * weight shape — and edits a model into a FunctionalGPT2LMHeadModel. DESIGN §5.
 */
import { mendError } from './errors'
import { FunctionalGPT2LMHeadModel, EditRecord } from './functional'
import { Batch, callNative, GPT2LMHeadModel, prepareBatch, ForwardOptions, ForwardOutput } from './model'
import { EditorSpec, native, NativeEditor, TransformSpec } from './native'
import { Tensor } from './tensor'

export interface MENDConfig {
  /** Conv1D weights to edit; default `mlp.c_proj` and `mlp.c_fc` of the last three blocks. */
  innerParams?: string[]
  /** Rank of the editor's low-rank layers (capped at d_in + d_out). Default 1920. */
  rank?: number
  /** Hidden layers of the editor MLP. Default 1. */
  nHidden?: number
  /** Initial α (edit_lrs). Default 1e-4. */
  editLr?: number
  /** Seed of the V initialisation (standard normal). Default 0. */
  seed?: number
}

/** The activation of one editor layer: EasyEdit's clamp max(·, 0), or the identity (legacy node-mend files). */
export type LayerActivation = 'clamp' | 'identity'

/** The activations of a spec's layers (the same for every transform; an editor mixing them is refused). */
export function layerActivationsOf(spec: EditorSpec): LayerActivation[] {
  const of = (t: TransformSpec) => t.layers.map((l): LayerActivation => (l.relu === false ? 'identity' : 'clamp'))
  const acts = of(spec.transforms[0])
  for (const t of spec.transforms) {
    if (JSON.stringify(of(t)) !== JSON.stringify(acts)) throw mendError('ERR_INVALID_ARG', `Expected the same layer activations in every editor transform but received ${JSON.stringify(acts)} and ${JSON.stringify(of(t))}`)
  }
  return acts
}

export interface EditOptions {
  /** Return Ũ and D̃ (before α) per inner param. */
  returnFactors?: boolean
  /** Stored with the edit in the log (e.g. the text request). */
  request?: unknown
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
}

export function defaultInnerParams(nLayer: number): string[] {
  const out: string[] = []
  for (let l = Math.max(0, nLayer - 3); l < nLayer; l++) {
    out.push(`transformer.h.${l}.mlp.c_proj.weight`, `transformer.h.${l}.mlp.c_fc.weight`)
  }
  return out
}

/** The shape key EasyEdit uses for GPT-2 editors: the Conv1D weight's (d_in, d_out). */
export function shapeKey(shape: number[]): string {
  return `(${shape[0]}, ${shape[1]})`
}

interface EditorLayout {
  inner: string[]            // canonical names
  index: number[]            // parameter indices
  shapes: number[][]         // per inner param
  keys: string[]             // distinct shape keys, in first-seen order
  transformOf: number[]
  modeOf: number[]
  nModes: number[]           // per transform
}

/** Resolves inner params against the model: names, shapes, shared transforms and modes. */
export function editorLayout(model: GPT2LMHeadModel, innerParams: string[]): EditorLayout {
  if (!Array.isArray(innerParams) || innerParams.length === 0) throw mendError('ERR_INVALID_ARG', 'Expected a non-empty list of innerParams')
  const params = model.parameters()
  const byName = new Map(params.map((p, i) => [p.name, i]))
  const layout: EditorLayout = { inner: [], index: [], shapes: [], keys: [], transformOf: [], modeOf: [], nModes: [] }
  for (const n of innerParams) {
    const c = typeof n === 'string' && !n.startsWith('transformer.') ? `transformer.${n}` : n
    const i = byName.get(c)
    if (i === undefined) throw mendError('ERR_INVALID_ARG', `innerParams: unknown parameter "${n}"`)
    if (!/\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$/.test(c)) throw mendError('ERR_INVALID_ARG', `innerParams: "${n}" is not a Conv1D weight`)
    if (layout.inner.includes(c)) throw mendError('ERR_INVALID_ARG', `innerParams: "${n}" is listed twice`)
    const shape = params[i].shape
    const key = shapeKey(shape)
    let s = layout.keys.indexOf(key)
    if (s < 0) { s = layout.keys.length; layout.keys.push(key); layout.nModes.push(0) }
    layout.inner.push(c); layout.index.push(i); layout.shapes.push(shape)
    layout.transformOf.push(s)
    layout.modeOf.push(layout.nModes[s]++)
  }
  return layout
}

/** Deterministic standard normals (mulberry32 + Box–Muller) for the V initialisation. */
function fillNormal(out: Float32Array, seed: number): void {
  let s = seed >>> 0
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296
  }
  for (let i = 0; i < out.length; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform())), th = 2 * Math.PI * uniform()
    out[i] = r * Math.cos(th)
    if (i + 1 < out.length) out[i + 1] = r * Math.sin(th)
  }
}

/** A fresh editor: the identity (U = 0), V ~ N(0, 1), statistics μ = 0 and σ = 1. */
export function freshEditorSpec(layout: EditorLayout, cfg: Required<Omit<MENDConfig, 'innerParams'>>): EditorSpec {
  const transforms: TransformSpec[] = layout.keys.map((_, s) => {
    const shape = layout.shapes[layout.transformOf.indexOf(s)]
    const [dIn, dOut] = shape
    const D = dIn + dOut, r = Math.min(cfg.rank, D), nModes = layout.nModes[s]
    const layers = Array.from({ length: cfg.nHidden + 1 }, (_, j) => {
      const v = new Float32Array(r * D)
      fillNormal(v, cfg.seed * 7919 + s * 131 + j)
      return {
        u: new Float32Array(D * r), v, bias: new Float32Array(D),
        scale: new Float32Array(nModes * D).fill(1), shift: new Float32Array(nModes * D), relu: true, // EasyEdit: every layer clamps
      }
    })
    return {
      dIn, dOut, rank: r, nModes, layers,
      uMean: new Float32Array(dIn), vMean: new Float32Array(dOut),
      uStd: new Float32Array(dIn).fill(1), vStd: new Float32Array(dOut).fill(1),
      uS: new Float32Array(dIn), vS: new Float32Array(dOut), k: 0,
    }
  })
  return {
    inner: layout.index, transformOf: layout.transformOf, modeOf: layout.modeOf,
    editLrs: new Float32Array(layout.inner.length).fill(cfg.editLr), transforms,
  }
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
}

/** @internal EditTrainer marks the controller it was built from: training does not change it. */
export function noteTrainedCopy(mend: MEND): void {
  mend[INTERNAL].trainedCopy = true
}

export class MEND {
  /** The plain model (root controller) or the FunctionalGPT2LMHeadModel of this edited state. */
  readonly model: GPT2LMHeadModel | FunctionalGPT2LMHeadModel
  /** @internal */
  readonly [INTERNAL]: EditorState

  /** A fresh (identity) editor for `model`. */
  constructor(model: GPT2LMHeadModel, config?: MENDConfig)
  /** @internal */
  constructor(model: GPT2LMHeadModel | FunctionalGPT2LMHeadModel, config: MENDConfig, state: EditorState, token: typeof INTERNAL)
  constructor(model: GPT2LMHeadModel | FunctionalGPT2LMHeadModel, config: MENDConfig = {}, state?: EditorState, token?: typeof INTERNAL) {
    this.model = model
    if (state && token === INTERNAL) {
      this[INTERNAL] = state
      return
    }
    if (!(model instanceof GPT2LMHeadModel)) throw mendError('ERR_INVALID_ARG', 'Expected a GPT2LMHeadModel for new MEND(model, config)')
    const cfg = resolveConfig(model, config)
    const layout = editorLayout(model, cfg.innerParams)
    const spec = freshEditorSpec(layout, cfg)
    this[INTERNAL] = { handle: native().createEditor(model.native, spec), editLrs: Float32Array.from(spec.editLrs), layout, config: cfg, acts: layerActivationsOf(spec) }
  }

  /** Loads an editor file (DESIGN §7) and checks it against the model. */
  static async fromPretrained(model: GPT2LMHeadModel, editorPath: string, opts: { innerParams?: string[] } = {}): Promise<MEND> {
    const { loadEditorFile } = await import('./editor-file')
    const { spec, config } = await loadEditorFile(model, editorPath, opts.innerParams)
    const layout = editorLayout(model, config.innerParams)
    let handle: NativeEditor
    try {
      handle = native().createEditor(model.native, spec)
    } catch (e) {
      const err = e as Error
      err.message = `${editorPath}: ${err.message}`
      throw err
    }
    return new MEND(model, config, { handle, editLrs: Float32Array.from(spec.editLrs), layout, config, acts: layerActivationsOf(spec) }, INTERNAL)
  }

  /** A MEND controller over an editor given as tensors (e.g. one being trained). */
  static fromEditorSpec(model: GPT2LMHeadModel, spec: EditorSpec, config: MENDConfig = {}): MEND {
    const cfg = resolveConfig(model, config)
    const layout = editorLayout(model, cfg.innerParams)
    const handle = native().createEditor(model.native, spec)
    return new MEND(model, cfg, { handle, editLrs: Float32Array.from(spec.editLrs), layout, config: cfg, acts: layerActivationsOf(spec) }, INTERNAL)
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
  async save(file: string): Promise<void> {
    if (this[INTERNAL].trainedCopy) {
      process.emitWarning(`MEND.save(${JSON.stringify(file)}): this controller's editor is the untrained one an EditTrainer was built from ` +
        '(EditTrainer trains its own copy). To save the trained editor use trainer.bestMEND().save(file) or trainer.toMEND().save(file).',
      { type: 'NodeMendWarning', code: 'NODE_MEND_UNTRAINED_SAVE' })
    }
    const { saveEditorFile } = await import('./editor-file')
    await saveEditorFile(this, file)
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
  async edit(batch: Batch, opts: EditOptions = {}): Promise<{ edited: MEND; info: EditInfo }> {
    const t0 = process.hrtime.bigint()
    const st = this[INTERNAL]
    const base = this.baseModel
    const b = prepareBatch(batch, base.config.vocabSize, true)
    const prev = this.model instanceof FunctionalGPT2LMHeadModel ? this.model : null
    const overlay = prev ? prev.nativeOverlay : null
    const r = await callNative(() => native().mendEdit(base.native, overlay, st.handle, b.ids.data, b.ids.B, b.ids.T, b.mask, b.labels!))
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
    const edited = new MEND(fm, st.config, st, INTERNAL)
    info.timings.totalMs = Number(process.hrtime.bigint() - t0) / 1e6
    return { edited, info }
  }
}

export function resolveConfig(model: GPT2LMHeadModel, config: MENDConfig): Required<MENDConfig> {
  if (!config || typeof config !== 'object') throw mendError('ERR_INVALID_ARG', 'Expected a MEND config object')
  const c: Required<MENDConfig> = {
    innerParams: config.innerParams ?? defaultInnerParams(model.config.nLayer),
    rank: config.rank ?? 1920,
    nHidden: config.nHidden ?? 1,
    editLr: config.editLr ?? 1e-4,
    seed: config.seed ?? 0,
  }
  if (!Number.isInteger(c.rank) || c.rank < 1) throw mendError('ERR_INVALID_ARG', `Expected a positive integer rank but received ${c.rank}`)
  if (!Number.isInteger(c.nHidden) || c.nHidden < 0) throw mendError('ERR_INVALID_ARG', `Expected a non-negative integer nHidden but received ${c.nHidden}`)
  if (!Number.isFinite(c.editLr)) throw mendError('ERR_INVALID_ARG', `Expected a finite editLr but received ${c.editLr}`)
  c.innerParams = c.innerParams.map((n) => (n.startsWith('transformer.') ? n : `transformer.${n}`))
  return c
}
