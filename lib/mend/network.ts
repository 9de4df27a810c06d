/**
 * The MEND editor network as data (DESIGN §5): the resolved configuration, the layout of inner
 * params over shared GradientTransforms and modes, a fresh (identity) editor spec, and the layer
 * activations. No controller state here; the controller (mend.ts) and the file format
 * (editor-file.ts) both build on it.
 */
import { fillNormal } from '../core/random'
import { mendError } from '../core/errors'
import { EditorSpec, TransformSpec } from '../core/native'
import { GPT2LMHeadModel } from '../model/gpt2'
import { canonicalParamName, isConv1DWeight } from '../model/names'
import { checkInt, checkNumber, checkOptions, invalidArg } from '../core/check'

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
  /**
   * How edits combine (DESIGN §5b): 'mend' — EasyEdit's MEND, each edit adds α·ŨᵀD̃ (the default);
   * 'malmen' — the lifelong mode, one least-squares solve of the editor's value shifts over the whole
   * edit log (MALMEN's aggregation), which holds hundreds of sequential edits.
   */
  kind?: 'mend' | 'malmen'
  /** Lifelong mode: log of the ridge e^λ added to the solve's diagonal (every inner param). Default 0. */
  logRidge?: number
  /** Lifelong mode: weight of the preservation covariance C0 (needs one, see MEND.withKeyCovariance). Default 0. */
  mu?: number
  /**
   * Lifelong mode: a smaller μ while the log is short (DESIGN §5b). Steps in ascending `upTo`: the solve
   * over n live edits uses the μ of the first step with n ≤ upTo, and `mu` beyond the last. Default [] (μ = mu).
   */
  muSchedule?: MuStep[]
  /**
   * Lifelong mode: the refinement that `MEND.refine()` and sequential editing (`sequentialEdit`,
   * `node-mend eval --sequential`) apply to a log of at least two live edits (DESIGN §5b): `rounds`
   * passes in which every live edit's value shifts gain `step` × the editor's proposal for the same
   * request on the edited model, solved again. Default { rounds: 0, step: 0.1 } (none).
   */
  refine?: RefineSettings
}

/** The lifelong refinement (MENDConfig.refine). */
export interface RefineSettings {
  rounds: number
  /** The editor's proposals' weight (method 'editor'). */
  step: number
  /** 'editor' (the default): the editor's proposals on the edited model; 'gradient': gradient descent on the log's edit loss (MEND.refine). */
  method?: 'editor' | 'gradient'
  /** method 'gradient': momentum in [0, 1) (default 0.5). */
  momentum?: number
  /** method 'gradient': the line search's steps, relative to |V|/|∇V| (default [0.005, 0.01, 0.02]). */
  steps?: number[]
  /** method 'gradient': 'edit' (default: each live edit's mean target loss counts the same) or 'token' (every target token does). */
  weighting?: 'edit' | 'token'
}

/** Method 'gradient''s defaults where RefineSettings leaves them unset. */
export const GRADIENT_REFINE_DEFAULTS: Readonly<{ momentum: number; steps: readonly number[] }> = Object.freeze({ momentum: 0.5, steps: Object.freeze([0.005, 0.01, 0.02]) })

/** No refinement (the default of MENDConfig.refine and of editor files without one). */
export const NO_REFINE: Readonly<RefineSettings> = Object.freeze({ rounds: 0, step: 0.1 })

/** Checks a refinement setting ({ rounds, step, method?, momentum?, steps?, weighting? }); unset options stay unset. */
export function checkRefine(r: unknown, where = 'refine'): RefineSettings {
  if (!r || typeof r !== 'object' || Array.isArray(r)) throw invalidArg('{ rounds, step }', where, r)
  const o = checkOptions<RefineSettings>(r as RefineSettings, where, ['rounds', 'step', 'method', 'momentum', 'steps', 'weighting'])
  checkInt(o.rounds, `${where}.rounds`, 0, 100)
  if (!(typeof o.step === 'number' && o.step > 0 && o.step <= 10)) throw invalidArg('a number in (0, 10]', `${where}.step`, o.step)
  const out: RefineSettings = { rounds: o.rounds, step: o.step }
  if (o.method !== undefined && o.method !== 'editor' && o.method !== 'gradient') throw invalidArg("'editor' or 'gradient'", `${where}.method`, o.method)
  if (o.method === 'gradient') out.method = 'gradient'
  if ((o.momentum !== undefined || o.steps !== undefined || o.weighting !== undefined) && o.method !== 'gradient') {
    throw mendError('ERR_INVALID_ARG', `${where}: momentum, steps and weighting are settings of method 'gradient'`)
  }
  if (o.weighting !== undefined) {
    if (o.weighting !== 'edit' && o.weighting !== 'token') throw invalidArg("'edit' or 'token'", `${where}.weighting`, o.weighting)
    out.weighting = o.weighting
  }
  if (o.momentum !== undefined) {
    if (!(typeof o.momentum === 'number' && o.momentum >= 0 && o.momentum < 1)) throw invalidArg('a number in [0, 1)', `${where}.momentum`, o.momentum)
    out.momentum = o.momentum
  }
  if (o.steps !== undefined) {
    if (!Array.isArray(o.steps) || o.steps.length === 0 || !o.steps.every((x) => typeof x === 'number' && x > 0 && x <= 10)) {
      throw invalidArg('a non-empty list of numbers in (0, 10]', `${where}.steps`, o.steps)
    }
    out.steps = [...o.steps]
  }
  return out
}

/** One step of the lifelong μ schedule: μ = mu while the log holds at most upTo live edits. */
export interface MuStep {
  upTo: number
  mu: number
  /** The editor's value shifts are multiplied by this in the step's solve (ΔW scales with it). Default 1. */
  scale?: number
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

/** The largest editor MLP node-mend builds (EasyEdit uses nHidden 1); the native check has the same bound. */
export const MAX_HIDDEN = 32
/** The largest rank accepted (it is capped at d_in + d_out anyway; GPT-2 XL's widest is 8000). */
export const MAX_RANK = 65536

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

export interface EditorLayout {
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
    const c = typeof n === 'string' ? canonicalParamName(n) : n
    const i = byName.get(c)
    if (i === undefined) throw mendError('ERR_INVALID_ARG', `innerParams: unknown parameter "${n}"`)
    if (!isConv1DWeight(c)) throw mendError('ERR_INVALID_ARG', `innerParams: "${n}" is not a Conv1D weight`)
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

/** Whether a lifelong solve with these settings weights C0 anywhere (and so needs a key covariance). */
export function usesKeyCovariance(s: { mu: number; muSchedule: readonly MuStep[] }): boolean {
  return s.mu > 0 || s.muSchedule.some((step) => step.mu > 0)
}

/** A checked copy of a μ schedule: integer upTo ≥ 1, strictly ascending, finite μ ≥ 0, scale in (0, 1e6] (1 is left out). */
export function checkMuSchedule(steps: unknown): MuStep[] {
  if (!Array.isArray(steps)) throw invalidArg('a list of { upTo, mu } steps', 'muSchedule', steps)
  return steps.map((s, i) => {
    if (!s || typeof s !== 'object') throw invalidArg('a { upTo, mu } step', `muSchedule[${i}]`, s)
    const { upTo, mu, scale } = s as MuStep
    checkInt(upTo, `muSchedule[${i}].upTo`, 1, 2 ** 31 - 1)
    checkNumber(mu, `muSchedule[${i}].mu`)
    if (scale !== undefined && !(typeof scale === 'number' && scale > 0 && scale <= 1e6)) throw invalidArg('a number in (0, 1e6]', `muSchedule[${i}].scale`, scale)
    if (i > 0 && !(upTo > (steps[i - 1] as MuStep).upTo)) throw invalidArg(`an upTo above ${(steps[i - 1] as MuStep).upTo} (the steps ascend)`, `muSchedule[${i}].upTo`, upTo)
    return scale === undefined || scale === 1 ? { upTo, mu } : { upTo, mu, scale }
  })
}

export function resolveConfig(model: GPT2LMHeadModel, config: MENDConfig): Required<MENDConfig> {
  if (!config || typeof config !== 'object') throw invalidArg('a MEND config object', 'config', config)
  config = checkOptions<MENDConfig>(config, 'the MEND config', ['innerParams', 'rank', 'nHidden', 'editLr', 'seed', 'kind', 'logRidge', 'mu', 'muSchedule', 'refine'])
  const c: Required<MENDConfig> = {
    innerParams: config.innerParams ?? defaultInnerParams(model.config.nLayer),
    rank: config.rank ?? 1920,
    nHidden: config.nHidden ?? 1,
    editLr: config.editLr ?? 1e-4,
    seed: config.seed ?? 0,
    kind: config.kind ?? 'mend',
    logRidge: config.logRidge ?? 0,
    mu: config.mu ?? 0,
    muSchedule: config.muSchedule ?? [],
    refine: config.refine ?? NO_REFINE,
  }
  if (c.kind !== 'mend' && c.kind !== 'malmen') throw invalidArg("'mend' or 'malmen'", 'kind', c.kind)
  checkNumber(c.logRidge, 'logRidge', { allowNegative: true })
  if (!(Math.abs(c.logRidge) <= 30)) throw invalidArg('a number in [-30, 30]', 'logRidge', c.logRidge)
  checkNumber(c.mu, 'mu')
  c.muSchedule = checkMuSchedule(c.muSchedule)
  c.refine = checkRefine(c.refine)
  // Bounded up front: an editor is (nHidden + 1) layers of 2·rank·(d_in + d_out) floats per shape, so an
  // absurd value would exhaust memory (and abort in V8) before any other check could run.
  checkInt(c.rank, 'rank', 1, MAX_RANK)
  checkInt(c.nHidden, 'nHidden', 0, MAX_HIDDEN)
  checkNumber(c.editLr, 'editLr', { allowNegative: true })
  checkInt(c.seed, 'seed')
  if (!Array.isArray(c.innerParams) || !c.innerParams.every((n) => typeof n === 'string')) throw invalidArg('a list of parameter names', 'innerParams', c.innerParams)
  c.innerParams = c.innerParams.map(canonicalParamName)
  return c
}
