/**
 * Editor files (DESIGN §7): one safetensors file with EasyEdit's MEND state-dict names —
 * `mend.(d_in, d_out).mlp.layers.j.{u,v,bias,mode_scale.weight,mode_shift.weight}`,
 * `mend.(d_in, d_out).{u_mean,v_mean,u_std,v_std,u_s,v_s,k}`, `edit_lrs` — and `__metadata__` with
 * `inner_params` and the hyper-parameters. An EasyEdit archive converted tensor-for-tensor loads
 * unchanged (its `model.*` tensors, if present, are ignored; pass innerParams when it has no metadata).
 *
 * Layer activations. EasyEdit's (and the original MEND's) LRLinear clamps max(·, 0) on every layer,
 * the last one too. Files say which network they hold in `__metadata__.layer_activations`, a JSON
 * list with one of "clamp" | "identity" per editor layer. A file without that key means:
 * - no node-mend metadata (an EasyEdit archive converted to safetensors): EasyEdit's network, all "clamp";
 * - node-mend metadata (`format` = node-mend-editor / node-mend-checkpoint, written before 0.2): the
 *   network those versions computed, a linear ("identity") last layer. It keeps that meaning, with a
 *   warning (NODE_MEND_LEGACY_EDITOR); `save()` then writes the key, so the meaning stays explicit.
 */
import { mendError } from '../core/errors'
import { GPT2LMHeadModel } from '../model/gpt2'
import { EDITS_FORMAT } from '../model/functional'
import { defaultInnerParams, editorLayout, LayerActivation, layerActivationsOf, MENDConfig, MuStep, checkMuSchedule, checkRefine, NO_REFINE, RefineSettings, resolveConfig, usesKeyCovariance } from './network'
import { callNative, EditorSpec, safetensorsRead, safetensorsWrite, TransformSpec } from '../core/native'

const FORMAT = 'node-mend-editor'
export const CHECKPOINT_FORMAT = 'node-mend-checkpoint'

export const LAYER_ACTIVATIONS_KEY = 'layer_activations'

const warnedLegacy = new Set<string>()

/**
 * The activations of an editor's `nLayers` layers, from a file's metadata (see the header): the
 * recorded list, EasyEdit's all-clamp network for files without node-mend metadata, or the linear
 * last layer of node-mend files written before the key existed.
 */
export function layerActivationsFromMetadata(metadata: Record<string, string>, nLayers: number, file: string): LayerActivation[] {
  const raw = metadata[LAYER_ACTIVATIONS_KEY]
  if (raw !== undefined) {
    let acts: unknown
    try { acts = JSON.parse(raw) } catch { acts = null }
    if (!Array.isArray(acts) || acts.length !== nLayers || !acts.every((a) => a === 'clamp' || a === 'identity')) {
      throw mendError('ERR_SAFETENSORS', `${file}: metadata ${LAYER_ACTIVATIONS_KEY} is ${raw}; expected a JSON list of ${nLayers} "clamp" | "identity" (one per editor layer)`)
    }
    return acts as LayerActivation[]
  }
  const legacy = metadata.format === FORMAT || metadata.format === CHECKPOINT_FORMAT
  if (!legacy) return Array.from({ length: nLayers }, () => 'clamp')
  if (!warnedLegacy.has(file)) {
    warnedLegacy.add(file)
    process.emitWarning(`${file} was written by node-mend before 0.2: its editor's last layer is linear, not EasyEdit's clamp. ` +
      'It is loaded with that meaning (layerActivations ' + JSON.stringify(legacyActivations(nLayers)) + '); saving it again records this. ' +
      'For EasyEdit\'s network, retrain the editor (EditTrainer on new MEND(model, config)).', { type: 'NodeMendWarning', code: 'NODE_MEND_LEGACY_EDITOR' })
  }
  return legacyActivations(nLayers)
}

function legacyActivations(nLayers: number): LayerActivation[] {
  return Array.from({ length: nLayers }, (_, j) => (j < nLayers - 1 ? 'clamp' : 'identity'))
}


type ReadTensors = Record<string, { dtype: string; shape: number[]; data: Float32Array | null }>

/**
 * Loads an editor file. A training checkpoint (EditTrainer.saveCheckpoint, `node-mend train`'s
 * .ckpt file) is recognised and its editor (as trained when the checkpoint was written) is loaded;
 * an edit log is refused saying what it is.
 */
export async function loadEditorFile(model: GPT2LMHeadModel, file: string, innerParams?: string[]):
  Promise<{ spec: EditorSpec; config: Required<MENDConfig>; keyCov?: (Float32Array | null)[] }> {
  const { tensors, metadata } = await callNative(() => safetensorsRead(file))
  if (metadata.format === EDITS_FORMAT) {
    throw mendError('ERR_SAFETENSORS', `${file} is a node-mend edit log (FunctionalGPT2LMHeadModel.saveEdits), not an editor: load it with FunctionalGPT2LMHeadModel.loadEdits(model, file)`)
  }
  if (metadata.format === CHECKPOINT_FORMAT) {
    let inner = innerParams
    if (!inner && metadata.mend !== undefined) {
      try { inner = (JSON.parse(metadata.mend) as MENDConfig).innerParams } catch { inner = undefined }
    }
    return specFromTensors(model, tensors, metadata, file, inner, 'editor.')
  }
  return specFromTensors(model, tensors, metadata, file, innerParams)
}

/** An editor spec from safetensors tensors named as in editor files (`prefix` before every name). */
export function specFromTensors(model: GPT2LMHeadModel, all: ReadTensors, metadata: Record<string, string>, file: string,
  innerParams?: string[], prefix = ''): { spec: EditorSpec; config: Required<MENDConfig>; keyCov?: (Float32Array | null)[] } {
  const tensors: ReadTensors = {}
  for (const [k, v] of Object.entries(all)) if (k.startsWith(prefix)) tensors[k.slice(prefix.length)] = v
  let inner = innerParams
  if (!inner && metadata.inner_params !== undefined) {
    try {
      inner = JSON.parse(metadata.inner_params)
      if (!Array.isArray(inner) || !inner.every((x) => typeof x === 'string')) throw new Error('not a list of names')
    } catch (e) {
      throw mendError('ERR_SAFETENSORS', `${file}: metadata inner_params is malformed (${(e as Error).message})`)
    }
  }
  inner = inner ?? defaultInnerParams(model.config.nLayer)
  const layout = editorLayout(model, inner)
  const get = (name: string, shape: number[]): Float32Array => {
    const t = tensors[name]
    if (!t) throw mendError('ERR_MISSING_TENSOR', `${file}: missing tensor "${name}" (is this an editor for these inner params?)`)
    const numel = t.shape.reduce((a, b) => a * b, 1)
    const want = shape.reduce((a, b) => a * b, 1)
    if (!t.data || numel !== want || (t.shape.length !== shape.length && !(shape.length === 1 && numel === want))) {
      throw mendError('ERR_SHAPE_MISMATCH', `${file}: tensor "${name}" has shape [${t.shape}] (${t.dtype}), expected [${shape}] for this model`)
    }
    for (let i = 0; i < t.shape.length && t.shape.length === shape.length; i++) {
      if (t.shape[i] !== shape[i]) throw mendError('ERR_SHAPE_MISMATCH', `${file}: tensor "${name}" has shape [${t.shape}], expected [${shape}] for this model`)
    }
    return t.data
  }
  let nLayersSeen = -1
  let rankSeen = -1
  const transforms: TransformSpec[] = layout.keys.map((key, s) => {
    const [dIn, dOut] = layout.shapes[layout.transformOf.indexOf(s)]
    const D = dIn + dOut, nModes = layout.nModes[s]
    const pre = `mend.${key}`
    const u0 = tensors[`${pre}.mlp.layers.0.u`]
    if (!u0) throw mendError('ERR_MISSING_TENSOR', `${file}: no editor for weight shape ${key} (missing "${pre}.mlp.layers.0.u"): it was made for another model or other inner params`)
    if (u0.shape.length !== 2 || u0.shape[0] !== D) throw mendError('ERR_SHAPE_MISMATCH', `${file}: "${pre}.mlp.layers.0.u" has shape [${u0.shape}], expected [${D}, rank]`)
    const rank = u0.shape[1]
    let nLayers = 0
    while (tensors[`${pre}.mlp.layers.${nLayers}.u`]) nLayers++
    // Every layer tensor belongs to a layer below nLayers: a gap (layers.0 and layers.2, no
    // layers.1) would otherwise load silently as a shorter network.
    for (const name of Object.keys(tensors)) {
      const mm = name.startsWith(`${pre}.mlp.layers.`) ? /^(\d+)\./.exec(name.slice(`${pre}.mlp.layers.`.length)) : null
      if (mm && Number(mm[1]) >= nLayers) {
        throw mendError('ERR_MISSING_TENSOR', `${file}: "${name}" belongs to layer ${mm[1]} but "${pre}.mlp.layers.${nLayers}.u" is missing (the editor's layers must be numbered 0..n-1 without gaps)`)
      }
    }
    const scale0 = tensors[`${pre}.mlp.layers.0.mode_scale.weight`]
    if (scale0 && scale0.shape[0] !== nModes) {
      throw mendError('ERR_SHAPE_MISMATCH', `${file}: "${pre}" has ${scale0.shape[0]} modes but ${nModes} inner params of shape ${key} are being edited`)
    }
    nLayersSeen = nLayers; rankSeen = rank
    const acts = layerActivationsFromMetadata(metadata, nLayers, file)
    const layers = Array.from({ length: nLayers }, (_, j) => {
      const lp = `${pre}.mlp.layers.${j}`
      return {
        u: get(`${lp}.u`, [D, rank]), v: get(`${lp}.v`, [rank, D]), bias: get(`${lp}.bias`, [D]),
        scale: get(`${lp}.mode_scale.weight`, [nModes, D]), shift: get(`${lp}.mode_shift.weight`, [nModes, D]),
        relu: acts[j] === 'clamp',
      }
    })
    const kT = tensors[`${pre}.k`]
    const k = kT && kT.data && kT.data.length === 1 ? kT.data[0] : NaN
    if (!Number.isFinite(k)) throw mendError('ERR_NON_FINITE', `${file}: "${pre}.k" is missing or not finite (the editor's statistics were never trained)`)
    return {
      dIn, dOut, rank, nModes, layers, k,
      uMean: get(`${pre}.u_mean`, [dIn]), vMean: get(`${pre}.v_mean`, [dOut]),
      uStd: get(`${pre}.u_std`, [dIn]), vStd: get(`${pre}.v_std`, [dOut]),
      uS: get(`${pre}.u_s`, [dIn]), vS: get(`${pre}.v_s`, [dOut]),
    }
  })
  const editLrs = get('edit_lrs', [layout.inner.length])
  const spec: EditorSpec = { inner: layout.index, transformOf: layout.transformOf, modeOf: layout.modeOf, editLrs, transforms }
  const num = (k: string, d: number) => (metadata[k] !== undefined && Number.isFinite(Number(metadata[k])) ? Number(metadata[k]) : d)
  const kind = metadata[EDITOR_KIND_KEY] ?? 'mend'
  if (kind !== 'mend' && kind !== 'malmen') throw mendError('ERR_SAFETENSORS', `${file}: metadata ${EDITOR_KIND_KEY} is ${JSON.stringify(kind)}; expected "mend" or "malmen"`)
  let lifelong: { logRidge: number; mu: number; muSchedule: MuStep[]; refine: RefineSettings } = { logRidge: 0, mu: 0, muSchedule: [], refine: NO_REFINE }
  let keyCov: (Float32Array | null)[] | undefined
  if (kind === 'malmen') {
    try {
      const j = JSON.parse(metadata.malmen ?? '')
      if (typeof j !== 'object' || j === null || !Number.isFinite(j.log_ridge) || !Number.isFinite(j.mu) || j.mu < 0) throw new Error('expected {"log_ridge": number, "mu": number >= 0}')
      const sched = j.mu_schedule ?? []
      if (!Array.isArray(sched) || !sched.every((s: unknown) => Array.isArray(s) && (s.length === 2 || s.length === 3))) throw new Error('expected "mu_schedule" as [[up_to, mu] or [up_to, mu, scale], ...]')
      // [rounds, step] (the editor's proposals), or {rounds, step, method: "gradient", momentum?, steps?, weighting?}
      const ref = j.refine ?? [NO_REFINE.rounds, NO_REFINE.step]
      const refObj = typeof ref === 'object' && ref !== null && !Array.isArray(ref)
      if (!refObj && (!Array.isArray(ref) || ref.length !== 2)) throw new Error('expected "refine" as [rounds, step] or {rounds, step, method, momentum, steps, weighting}')
      lifelong = {
        logRidge: j.log_ridge, mu: j.mu, muSchedule: checkMuSchedule(sched.map(([upTo, mu, scale]: number[]) => (scale === undefined ? { upTo, mu } : { upTo, mu, scale }))),
        refine: checkRefine(refObj ? ref : { rounds: ref[0], step: ref[1] }),
      }
    } catch (e) {
      throw mendError('ERR_SAFETENSORS', `${file}: metadata "malmen" is missing or malformed (${(e as Error).message})`)
    }
    keyCov = layout.inner.map((name, k) => {
      const t = tensors[`malmen.key_cov.${name}`]
      if (!t) return null
      const d = layout.shapes[k][0]
      const data = get(`malmen.key_cov.${name}`, [d, d])
      if (!data.every(Number.isFinite)) throw mendError('ERR_NON_FINITE', `${file}: tensor "malmen.key_cov.${name}" holds NaN or Inf`)
      return data
    })
    if (usesKeyCovariance(lifelong)) {
      const missing = layout.inner.find((_, k) => keyCov![k] === null)
      if (missing) throw mendError('ERR_MISSING_TENSOR', `${file}: missing tensor "malmen.key_cov.${missing}" (mu > 0 needs the key covariance of every inner param)`)
    }
  }
  let config: Required<MENDConfig>
  try {
    config = resolveConfig(model, {
      innerParams: layout.inner, rank: num('rank', rankSeen), nHidden: num('n_hidden', nLayersSeen - 1),
      editLr: num('edit_lr', editLrs[0]), seed: num('seed', 0), kind, ...lifelong,
    })
  } catch (e) {
    // name the file and the metadata key (rank, n_hidden, edit_lr, seed) the bad value came from
    const err = e as Error
    const key = (/for (rank|nHidden|editLr|seed) /.exec(err.message) ?? [])[1]
    const meta = key ? ({ rank: 'rank', nHidden: 'n_hidden', editLr: 'edit_lr', seed: 'seed' } as Record<string, string>)[key] : undefined
    err.message = `${file}: ${meta ? `metadata "${meta}" (${JSON.stringify(metadata[meta] ?? null)}): ` : ''}${err.message}`
    throw err
  }
  return keyCov ? { spec, config, keyCov } : { spec, config }
}

/** Metadata key of the editor kind: "mend" (absent: EasyEdit's MEND) or "malmen" (the lifelong mode). */
export const EDITOR_KIND_KEY = 'editor_kind'

/** Writes an editor spec as one editor file (EasyEdit's names, node-mend's metadata). */
export async function saveEditorFile(file: string, spec: EditorSpec, cfg: Readonly<Required<MENDConfig>>,
  m: { nLayer: number; nEmbd: number; vocabSize: number }, extra: Record<string, string> = {}, keyCov?: (Float32Array | null)[]): Promise<void> {
  const meta = editorMetadata(cfg, m, layerActivationsOf(spec))
  for (const [k, v] of Object.entries(extra)) {
    if (k in meta) throw mendError('ERR_INVALID_ARG', `MEND.save: metadata key "${k}" is node-mend's own (${Object.keys(meta).join(', ')})`)
    if (typeof v !== 'string') throw mendError('ERR_INVALID_ARG', `Expected a string for MEND.save metadata "${k}" but received ${typeof v}`)
  }
  const tensors = editorTensors(spec)
  if (cfg.kind === 'malmen' && keyCov) {
    cfg.innerParams.forEach((name, k) => {
      const c = keyCov[k]
      if (c) { const d = Math.round(Math.sqrt(c.length)); tensors.push({ name: `malmen.key_cov.${name}`, shape: [d, d], data: c }) }
    })
  }
  await callNative(() => safetensorsWrite(file, tensors, { ...extra, ...meta }))
}

export function editorMetadata(cfg: Readonly<Required<MENDConfig>>, m: { nLayer: number; nEmbd: number; vocabSize: number },
  acts: LayerActivation[]): Record<string, string> {
  return {
    format: FORMAT,
    [LAYER_ACTIVATIONS_KEY]: JSON.stringify(acts),
    inner_params: JSON.stringify(cfg.innerParams),
    rank: String(cfg.rank),
    n_hidden: String(cfg.nHidden),
    edit_lr: String(cfg.editLr),
    seed: String(cfg.seed),
    ...(cfg.kind === 'malmen' ? { [EDITOR_KIND_KEY]: 'malmen', malmen: JSON.stringify({ log_ridge: cfg.logRidge, mu: cfg.mu, ...(cfg.muSchedule.length ? { mu_schedule: cfg.muSchedule.map((s) => (s.scale === undefined ? [s.upTo, s.mu] : [s.upTo, s.mu, s.scale])) } : {}), ...(cfg.refine.rounds > 0 ? { refine: cfg.refine.method === 'gradient' ? { ...cfg.refine } : [cfg.refine.rounds, cfg.refine.step] } : {}) }) } : {}),
    model: JSON.stringify({ n_layer: m.nLayer, n_embd: m.nEmbd, vocab_size: m.vocabSize }),
  }
}

/** The tensors of an editor spec under EasyEdit's names (with `prefix` before every name). */
export function editorTensors(spec: EditorSpec, prefix = ''): { name: string; shape: number[]; data: Float32Array }[] {
  const tensors: { name: string; shape: number[]; data: Float32Array }[] = []
  spec.transforms.forEach((t) => {
    const pre = `mend.(${t.dIn}, ${t.dOut})`, D = t.dIn + t.dOut
    t.layers.forEach((l, j) => {
      const lp = `${pre}.mlp.layers.${j}`
      tensors.push({ name: `${lp}.u`, shape: [D, t.rank], data: l.u }, { name: `${lp}.v`, shape: [t.rank, D], data: l.v },
        { name: `${lp}.bias`, shape: [D], data: l.bias },
        { name: `${lp}.mode_scale.weight`, shape: [t.nModes, D], data: l.scale },
        { name: `${lp}.mode_shift.weight`, shape: [t.nModes, D], data: l.shift })
    })
    tensors.push({ name: `${pre}.u_mean`, shape: [t.dIn], data: t.uMean }, { name: `${pre}.v_mean`, shape: [t.dOut], data: t.vMean },
      { name: `${pre}.u_std`, shape: [t.dIn], data: t.uStd }, { name: `${pre}.v_std`, shape: [t.dOut], data: t.vStd },
      { name: `${pre}.u_s`, shape: [t.dIn], data: t.uS }, { name: `${pre}.v_s`, shape: [t.dOut], data: t.vS },
      { name: `${pre}.k`, shape: [1], data: new Float32Array([t.k]) })
  })
  tensors.push({ name: 'edit_lrs', shape: [spec.editLrs.length], data: spec.editLrs })
  return tensors.map((t) => ({ ...t, name: prefix + t.name }))
}
