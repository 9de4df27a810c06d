/**
 * The one boundary to native code: loads the addon once, declares what it exports, and wraps calls
 * so errors land on the caller's stack. No module outside lib/core/ requires the addon.
 *
 * Loads the native addon once. The addon is built by `npm install` (scripts/build-native.js);
 * NODE_MEND_ADDON overrides the path (for development builds).
 */
import * as path from 'path'
import { MendError, mendError } from './errors'
import { checkInt } from './check'

export interface NativeModel {
  paramInfo(): { name: string; shape: number[] }[]
  param(name: string): Float32Array
  paramBytes(): number
  forward(ids: Int32Array, B: number, T: number, mask: Int32Array | null, labels: Int32Array | null,
          lastOnly: boolean, overlay?: NativeOverlay | null): Promise<{ logits: Float32Array; loss?: number; nTargets?: number }>
  lossAndGrad(ids: Int32Array, B: number, T: number, mask: Int32Array | null, labels: Int32Array,
              params: string[] | null, capture: string[], wantLogits: boolean, overlay?: NativeOverlay | null): Promise<{
    loss: number; nTargets: number; grads: Record<string, Float32Array>
    captures: Record<string, { x: Float32Array; d: Float32Array }>; logits?: Float32Array
  }>
  generate(ids: Int32Array, B: number, T: number, mask: Int32Array | null,
           opts: { maxNewTokens: number; temperature: number; topK: number; topP: number; repetitionPenalty: number; eosTokenId: number; seed: number; useCache: boolean },
           overlay?: NativeOverlay | null):
    Promise<{ tokens: Int32Array; n: number }>
  save(path: string, metadata: Record<string, string>): Promise<void>
  dispose(): void
}

/** The overlay of an edited model (immutable). */
export interface NativeOverlay {
  bytes(): number
  nEdits(): number
  lowrankRows(param: number): number
  folded(param: number): boolean
}

/** One editor layer (EasyEdit LRLinear) and one GradientTransform per weight shape. */
export interface EditorLayerSpec {
  u: Float32Array; v: Float32Array; bias: Float32Array; scale: Float32Array; shift: Float32Array
  /** z' = z + act(pre) with act the clamp max(·, 0) (EasyEdit, on every layer; the default when absent) or, when false, the identity (legacy node-mend files). */
  relu?: boolean
}
export interface TransformSpec {
  dIn: number; dOut: number; rank: number; nModes: number; layers: EditorLayerSpec[]
  uMean: Float32Array; vMean: Float32Array; uStd: Float32Array; vStd: Float32Array; uS: Float32Array; vS: Float32Array; k: number
}
export interface EditorSpec {
  inner: number[]; transformOf: number[]; modeOf: number[]; editLrs: Float32Array; transforms: TransformSpec[]
}
export interface NativeEditor {
  tensors(): EditorSpec
}
export interface NativeEditResult {
  loss: number; kept: number[]; cos: number[]; u: Float32Array[]; d: Float32Array[]
  timings: { preMs: number; editorMs: number; overlayMs: number }
  overlay: NativeOverlay
}

/** The lifelong mode's solve state of an edit log (immutable; mend/lifelong.h). */
export interface NativeRidge {
  nRows(): number
  bytes(): number
}
export interface NativeRidgePrior { param: number; logRidge: number; mu: number; c0: Float32Array | null }
export interface NativeRidgeUpdate { slot: number; k: Float32Array; v: Float32Array; sign: 1 | -1 }
export interface NativeProposal {
  loss: number; rows: number[]; keys: Float32Array[]; values: Float32Array[]
  timings: { preMs: number; editorMs: number }
}

export interface NativeBatch { ids: Int32Array; B: number; T: number; mask: Int32Array | null; labels: Int32Array | null }
export interface NativeStepResult { total: number; edit: number; loc: number; editAcc: number; preLoss: number; stepped: boolean; gradNorm?: number }
export interface NativeOptimizerState { t: number; steps: number; m: Float32Array[]; v: Float32Array[] }
export interface NativeTrainer {
  step(edit: NativeBatch, editOuter: NativeBatch | null, loc: NativeBatch, opts: { updateStats?: boolean; train?: boolean }): Promise<NativeStepResult>
  tensors(): EditorSpec
  grads(): EditorSpec
  optimizerState(): NativeOptimizerState
  setOptimizerState(s: NativeOptimizerState): void
  setGrads(spec: EditorSpec): void
  steps(): number
  setMalmenPrior(state: NativeRidge): void
}

export interface NativeConfig {
  nLayer: number; nHead: number; nEmbd: number; nInner: number; vocabSize: number
  nPositions: number; layerNormEpsilon: number
}

export interface NativeAddon {
  numThreads(): number
  setNumThreads(n: number): void
  gemmBackend(): string
  cudaInfo(): { built: boolean; available: boolean; reason: string; device: string }
  /** mmap: map the file instead of reading it into private memory (the file must not change while loaded). */
  loadModel(path: string, config: NativeConfig, mmap?: boolean): Promise<NativeModel>
  randomModel(config: NativeConfig, seed: number): Promise<NativeModel>
  createModel(config: NativeConfig, tensors: Record<string, Float32Array>): Promise<NativeModel>
  safetensorsRead(path: string): Promise<{
    metadata: Record<string, string>
    tensors: Record<string, { dtype: string; shape: number[]; data: Float32Array | null }>
  }>
  safetensorsWrite(path: string, tensors: { name: string; shape: number[]; data: Float32Array }[],
                   metadata: Record<string, string>): Promise<void>
  createEditor(model: NativeModel, spec: EditorSpec): NativeEditor
  mendEdit(model: NativeModel, overlay: NativeOverlay | null, editor: NativeEditor, ids: Int32Array, B: number, T: number,
           mask: Int32Array | null, labels: Int32Array): Promise<NativeEditResult>
  buildOverlay(model: NativeModel, edits: { param: number; a: Float32Array; b: Float32Array }[][]): Promise<NativeOverlay>
  materialize(model: NativeModel, overlay: NativeOverlay | null): Promise<NativeModel>
  ridgePrior(model: NativeModel, priors: NativeRidgePrior[]): Promise<NativeRidge>
  ridgePrior(model: NativeModel, priors: NativeRidgePrior[], sync: true): NativeRidge
  ridgeUpdate(model: NativeModel, state: NativeRidge, updates: NativeRidgeUpdate[]): Promise<{ state: NativeRidge; overlay: NativeOverlay }>
  /**
   * ∂L/∂V = K·(P·G) per key block, G = ∂L/∂ΔW per inner weight: g (null: none) plus Σ xᵀd of the
   * factors of its slot (a backward pass's captured rows), P of the state.
   */
  ridgeValueGradients(state: NativeRidge, g: (Float32Array | null)[], blocks: { slot: number; k: Float32Array }[],
                      factors?: { slot: number; x: Float32Array; d: Float32Array }[]): Promise<Float32Array[]>
  /** The state with ΔW + c·P·ΣKᵀV (keys k, value moves v) for each c, and its overlay: a line search without a solve. */
  ridgeShift(model: NativeModel, state: NativeRidge, blocks: { slot: number; k: Float32Array; v: Float32Array }[], coefs: number[]): Promise<{ state: NativeRidge; overlay: NativeOverlay }[]>
  malmenPropose(model: NativeModel, editor: NativeEditor, ids: Int32Array, B: number, T: number, mask: Int32Array | null,
                labels: Int32Array, keyMask: Int32Array | null, live?: NativeOverlay | null): Promise<NativeProposal>
  keyCovariance(model: NativeModel, ids: Int32Array, B: number, T: number, mask: Int32Array | null, params: number[]): Promise<{ sums: Float64Array[]; count: number }>
  createTrainer(model: NativeModel, spec: EditorSpec, opts: { lr: number; lrLr: number; cedit: number; cloc: number; gradClip: number; accumulateBs: number; malmenPrior?: NativeRidge | null }): NativeTrainer
  adamwUpdate(param: Float32Array, grad: Float32Array, m: Float32Array, v: Float32Array, lr: number, beta1: number,
              beta2: number, eps: number, weightDecay: number, t: number): void
  optimizerStep(params: Float32Array[], grads: Float32Array[], m: Float32Array[], v: Float32Array[], opts: OptimizerStepOptions): { gradNorm: number }
  setErrorClass(ctor: (new (code: string, message: string) => Error) | null): void
}

/** One global-norm-clipped AdamW step over a list of parameters (in place). */
export interface OptimizerStepOptions {
  lr: number; beta1: number; beta2: number; eps: number
  /** Per parameter. */
  weightDecay: number[]
  /** The step number (1-based) for bias correction. */
  t: number
  /** Global-norm clip; <= 0 means none. */
  gradClip: number
}

let addon: NativeAddon | undefined

/** Runs a native call so that a rejection carries the caller's stack (sharp's habit). */
export async function callNative<T>(fn: () => Promise<T>): Promise<T> {
  const here = new Error()
  try {
    return await fn()
  } catch (e) {
    if (e instanceof Error && here.stack) e.stack = `${e.name}: ${e.message}\n${here.stack.split('\n').slice(1).join('\n')}`
    throw e
  }
}

/** Threads the native kernels use (default: NODE_MEND_THREADS or the number of cores). */
export function numThreads(): number {
  return native().numThreads()
}
/** The most native threads accepted (more than the cores only slows every call down). */
export const MAX_THREADS = 256

/** Sets the number of native threads (an integer in [1, MAX_THREADS]); the pool grows or shrinks to it. */
export function setNumThreads(n: number): void {
  checkInt(n, 'setNumThreads', 1, MAX_THREADS)
  native().setNumThreads(n)
}
/** The GEMM code path chosen for this CPU: "avx512f", "avx2-fma" or "portable". */
export function gemmBackend(): string {
  return native().gemmBackend()
}

export function native(): NativeAddon {
  if (addon) return addon
  // The source build, else the prebuilt binary for this platform (scripts/addon-path.js).
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { candidates, findAddon } = require(path.join(__dirname, '..', '..', 'scripts', 'addon-path.js')) as { candidates: () => string[]; findAddon: () => string | null }
  const file = process.env.NODE_MEND_ADDON || findAddon() || candidates()[0]
  try {
    addon = require(file) as NativeAddon
    addon.setErrorClass(MendError) // native errors arrive as MendError with their code
  } catch (e) {
    throw mendError('ERR_NATIVE_MISSING',
      `node-mend's native addon could not be loaded from ${file} (${(e as Error).message}). ` +
      `Looked in ${candidates().join(' and ')}. Rebuild it with \`npm rebuild node-mend\` (needs cmake >= 3.15 and a C++17 compiler).`)
  }
  return addon
}

// The addon's entry points, typed. Modules outside lib/core/ call these (never the addon object), so
// a second backend plugs in here.
type Api = NativeAddon
export const loadModel: Api['loadModel'] = (path, config, mmap) => native().loadModel(path, config, mmap)
export const randomModel: Api['randomModel'] = (config, seed) => native().randomModel(config, seed)
export const createModel: Api['createModel'] = (config, tensors) => native().createModel(config, tensors)
export const safetensorsRead: Api['safetensorsRead'] = (path) => native().safetensorsRead(path)
/** The library's writer: refuses (ERR_NON_FINITE, nothing written) a tensor holding NaN or Inf, so every file node-mend saves (edit logs, editors, checkpoints) loads again. */
export const safetensorsWrite: Api['safetensorsWrite'] = (path, tensors, metadata) => {
  for (const t of tensors) {
    const d = t.data
    for (let i = 0; i < d.length; i++) {
      if (!Number.isFinite(d[i])) return Promise.reject(mendError('ERR_NON_FINITE', `${path}: tensor "${t.name}" holds NaN or Inf (at element ${i}); nothing was written`))
    }
  }
  return native().safetensorsWrite(path, tensors, metadata)
}
export const createEditor: Api['createEditor'] = (model, spec) => native().createEditor(model, spec)
export const mendEdit: Api['mendEdit'] = (...a) => native().mendEdit(...a)
export const buildOverlay: Api['buildOverlay'] = (model, edits) => native().buildOverlay(model, edits)
export const materialize: Api['materialize'] = (model, overlay) => native().materialize(model, overlay)
export const ridgePrior = (model: NativeModel, priors: NativeRidgePrior[]): Promise<NativeRidge> => native().ridgePrior(model, priors)
export const ridgePriorSync = (model: NativeModel, priors: NativeRidgePrior[]): NativeRidge => native().ridgePrior(model, priors, true)
export const ridgeUpdate: Api['ridgeUpdate'] = (model, state, updates) => native().ridgeUpdate(model, state, updates)
export const malmenPropose: Api['malmenPropose'] = (...a) => native().malmenPropose(...a)
export const ridgeValueGradients: Api['ridgeValueGradients'] = (state, g, blocks, factors) => native().ridgeValueGradients(state, g, blocks, factors)
export const ridgeShift: Api['ridgeShift'] = (model, state, blocks, coefs) => native().ridgeShift(model, state, blocks, coefs)
export const keyCovariance: Api['keyCovariance'] = (...a) => native().keyCovariance(...a)
export const createTrainer: Api['createTrainer'] = (model, spec, opts) => native().createTrainer(model, spec, opts)
export const optimizerStep: Api['optimizerStep'] = (params, grads, m, v, opts) => native().optimizerStep(params, grads, m, v, opts)
