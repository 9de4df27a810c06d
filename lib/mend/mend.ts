/**
 * MEND controller (EasyEdit's MEND for GPT-2): holds an editor — one GradientTransform per inner
 * weight shape — and edits a model into a FunctionalGPT2LMHeadModel. DESIGN §5.
 */
import { mendError } from '../core/errors'
import { FunctionalGPT2LMHeadModel, EditRecord } from '../model/functional'
import { Batch, prepareBatch } from '../model/batch'
import { GPT2LMHeadModel, ForwardOptions, ForwardOutput } from '../model/gpt2'
import { callNative, createEditor, EditorSpec, mendEdit, NativeEditor } from '../core/native'
import { Tensor } from '../core/tensor'
import { loadEditorFile, saveEditorFile } from './editor-file'
import { EditorLayout, editorLayout, freshEditorSpec, LayerActivation, layerActivationsOf, MENDConfig, resolveConfig } from './network'
import { checkOptions, invalidArg } from '../core/check'

export type { MENDConfig, LayerActivation } from './network'
export { defaultInnerParams, shapeKey } from './network'

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

/** The controller of an edited state: its model is the FunctionalGPT2LMHeadModel (base + overlay). */
export type EditedMEND = MEND<FunctionalGPT2LMHeadModel>

/** The state of a root controller over `spec` (the native editor is created, and checked, here). */
function editorState(model: GPT2LMHeadModel, spec: EditorSpec, config: Required<MENDConfig>): EditorState {
  const layout = editorLayout(model, config.innerParams)
  const handle = createEditor(model.native, spec)
  return { handle, editLrs: Float32Array.from(spec.editLrs), layout, config, acts: layerActivationsOf(spec) }
}

/** @internal EditTrainer marks the controller it was built from: training does not change it. */
export function noteTrainedCopy(mend: MEND): void {
  mend[INTERNAL].trainedCopy = true
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
    const { spec, config } = await loadEditorFile(model, editorPath, opts.innerParams)
    let state: EditorState
    try {
      state = editorState(model, spec, config)
    } catch (e) {
      const err = e as Error
      err.message = `${editorPath}: ${err.message}`
      throw err
    }
    return new MEND<GPT2LMHeadModel>(model, config, state, INTERNAL)
  }

  /** A MEND controller over an editor given as tensors (e.g. one being trained). */
  static fromEditorSpec(model: GPT2LMHeadModel, spec: EditorSpec, config: MENDConfig = {}): MEND<GPT2LMHeadModel> {
    if (!(model instanceof GPT2LMHeadModel)) throw invalidArg('a GPT2LMHeadModel', 'MEND.fromEditorSpec(model, spec)', model)
    if (!spec || typeof spec !== 'object') throw invalidArg('an editor spec object', 'MEND.fromEditorSpec(model, spec)', spec)
    const cfg = resolveConfig(model, config)
    return new MEND<GPT2LMHeadModel>(model, cfg, editorState(model, spec, cfg), INTERNAL)
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
    await saveEditorFile(file, this.editorSpec(), this.config, this.baseModel.config, opts.metadata)
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
    opts = checkOptions<EditOptions>(opts, 'MEND.edit', ['returnFactors', 'request'])
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
}
