/**
 * GPT2LMHeadModel: a Hugging Face GPT-2 (eval mode) on the native engine. Base weights are
 * immutable once loaded (float32 safetensors are memory-mapped, not copied).
 */
import * as fs from 'fs'
import * as path from 'path'
import { GPT2Config, readHFConfig, resolveGPT2Config, toHFConfig, toNativeConfig } from './config'
import { mendError } from '../core/errors'
import { makeDirectory, writeFileAtomic } from '../core/files'
import { callNative, createModel, loadModel, NativeModel, NativeOverlay, randomModel } from '../core/native'
import { Batch, padRows, prepareBatch } from './batch'
import { canonicalParamName, isConv1DWeight } from './names'
import { IdsInput, Tensor } from '../core/tensor'
import { checkInt, checkNumber, checkOptions, invalidArg } from '../core/check'
import { checkDevice, Device } from '../core/device'

export type { Batch } from './batch'

export interface ForwardOptions {
  /** Return only the logits of the last position of each row: shape [B, V]. */
  lastOnly?: boolean
}

export interface ForwardOutput {
  /** [B, T, V], or [B, V] with lastOnly. */
  logits: Tensor
  /** Mean cross-entropy over target tokens, when labels were given. */
  loss?: number
}

export interface LossAndGradOptions {
  /** Parameters whose gradient is returned (either name style); default all. */
  params?: string[]
  /** Conv1D weights whose layer input rows X and output-gradient rows D are returned. */
  capture?: string[]
}

export interface LossAndGradOutput {
  loss: number
  /** Number of target tokens the loss averages over. */
  nTargets: number
  grads: Record<string, Tensor>
  /** Per captured weight: x [B*T, d_in] (layer input rows), d [B*T, d_out] (∂loss/∂output rows). */
  captures: Record<string, { x: Tensor; d: Tensor }>
}

export interface GenerateOptions {
  /** New tokens per row (default 20). */
  maxNewTokens?: number
  /**
   * Sample (true) or decode greedily (false), as in transformers. Absent: sample when a temperature
   * > 0 is given, else greedy.
   */
  doSample?: boolean
  /** Sampling temperature (default 1 with doSample, else 0 = greedy). */
  temperature?: number
  /** Sample among the k most likely tokens (0 = all). */
  topK?: number
  /** Nucleus sampling: among the most likely tokens whose probability reaches topP (default 1 = off). */
  topP?: number
  /** transformers' repetition penalty over the prompt and the generated tokens (default 1 = off). */
  repetitionPenalty?: number
  /**
   * Rows stop at this token (later positions are filled with it). Default: the model config's
   * eos_token_id (config.json), if it has one; -1: never stop early.
   */
  eosTokenId?: number
  /** 1 for real tokens, 0 for padding. Without it, rows of different lengths are left-padded. */
  attentionMask?: IdsInput
  /** Seed of the sampler. */
  seed?: number
  /** Use the KV cache (default true); false recomputes the whole sequence each step. */
  useCache?: boolean
  /** Return each row's prompt (without padding) followed by the new tokens, as transformers does. Default false: only the new tokens. */
  includePrompt?: boolean
}

const GENERATE_OPTIONS = ['maxNewTokens', 'doSample', 'temperature', 'topK', 'topP', 'repetitionPenalty', 'eosTokenId', 'attentionMask', 'seed', 'useCache', 'includePrompt'] as const

export interface ParamInfo {
  name: string
  shape: number[]
}

/**
 * The inference API shared by GPT2LMHeadModel and FunctionalGPT2LMHeadModel: forward, lossAndGrad
 * and generate on the native base weights plus, for an edited model, its overlay.
 */
export abstract class GPT2Inference {
  readonly config: GPT2Config
  /** The native handle of the base weights; internal. */
  readonly native: NativeModel

  protected constructor(handle: NativeModel, config: GPT2Config) {
    this.native = handle
    this.config = config
  }

  /** The native overlay applied on top of the base weights (null for a plain model); internal. */
  protected abstract get overlayHandle(): NativeOverlay | null

  /** Parameter names (Hugging Face style, `transformer.…`) and shapes, in order. */
  parameters(): ParamInfo[] {
    return this.native.paramInfo()
  }

  async forward(batch: Batch, opts: ForwardOptions = {}): Promise<ForwardOutput> {
    opts = checkOptions<ForwardOptions>(opts, 'forward', ['lastOnly'])
    const b = prepareBatch(batch, this.config.vocabSize, false)
    const ov = this.overlayHandle
    const r = await callNative(() => this.native.forward(b.ids.data, b.ids.B, b.ids.T, b.mask, b.labels, !!opts.lastOnly, ov))
    const V = this.config.vocabSize
    const shape = opts.lastOnly ? [b.ids.B, V] : [b.ids.B, b.ids.T, V]
    const out: ForwardOutput = { logits: { shape, data: r.logits } }
    if (r.loss !== undefined) out.loss = r.loss
    return out
  }

  async lossAndGrad(batch: Batch, opts: LossAndGradOptions = {}): Promise<LossAndGradOutput> {
    opts = checkOptions<LossAndGradOptions>(opts, 'lossAndGrad', ['params', 'capture'])
    const b = prepareBatch(batch, this.config.vocabSize, true)
    for (const k of ['params', 'capture'] as const) {
      const v = opts[k]
      if (v !== undefined && (!Array.isArray(v) || !v.every((n) => typeof n === 'string'))) throw invalidArg('a list of parameter names', `lossAndGrad ${k}`, v)
    }
    const shapes = new Map(this.parameters().map((p) => [p.name, p.shape]))
    const params = opts.params === undefined ? null : opts.params.map((n) => canonicalName(n, shapes, 'params'))
    const capture = (opts.capture ?? []).map((n) => {
      const c = canonicalName(n, shapes, 'capture')
      if (!isConv1DWeight(c)) throw mendError('ERR_INVALID_ARG', `capture: "${n}" is not a Conv1D weight`)
      return c
    })
    const ov = this.overlayHandle
    const r = await callNative(() => this.native.lossAndGrad(b.ids.data, b.ids.B, b.ids.T, b.mask, b.labels!, params, capture, false, ov))
    const grads: Record<string, Tensor> = {}
    for (const [name, data] of Object.entries(r.grads)) grads[name] = { shape: shapes.get(name)!, data }
    // Also answer under the names the caller used.
    if (opts.params) for (const n of opts.params) grads[n] = grads[canonicalName(n, shapes, 'params')]
    const captures: LossAndGradOutput['captures'] = {}
    const rows = b.ids.B * b.ids.T
    for (const [name, xd] of Object.entries(r.captures)) {
      const [din, dout] = shapes.get(name)!
      captures[name] = { x: { shape: [rows, din], data: xd.x }, d: { shape: [rows, dout], data: xd.d } }
    }
    for (const n of opts.capture ?? []) captures[n] = captures[canonicalName(n, shapes, 'capture')]
    return { loss: r.loss, nTargets: r.nTargets, grads, captures }
  }

  /**
   * Generates up to maxNewTokens tokens per row (greedy, or sampled: doSample, temperature, topK,
   * topP, repetitionPenalty) and returns only the new tokens (includePrompt: prompt + new tokens).
   * Prompts of different lengths are left-padded internally (no attentionMask needed). Rows stop at
   * eosTokenId, by default the config's eos_token_id.
   */
  async generate(inputIds: IdsInput, opts: GenerateOptions = {}): Promise<number[][]> {
    opts = checkOptions<GenerateOptions>(opts, 'generate', GENERATE_OPTIONS)
    let attentionMask = opts.attentionMask
    // Ragged prompts (number[][] of different lengths, no mask): left-pad, as transformers users do.
    if (attentionMask === undefined && Array.isArray(inputIds) && inputIds.length > 0 && inputIds.every((r) => Array.isArray(r)) &&
        new Set((inputIds as number[][]).map((r) => r.length)).size > 1) {
      const padded = padRows(inputIds as number[][], 0, { side: 'left' })
      inputIds = padded.inputIds
      attentionMask = padded.attentionMask
    }
    const b = prepareBatch({ inputIds, attentionMask }, this.config.vocabSize, false)
    const maxNew = opts.maxNewTokens ?? 20
    checkInt(maxNew, 'maxNewTokens')
    if (opts.doSample !== undefined && typeof opts.doSample !== 'boolean') throw invalidArg('a boolean', 'generate doSample', opts.doSample)
    let temperature = opts.temperature ?? (opts.doSample ? 1 : 0)
    checkNumber(temperature, 'temperature')
    if (opts.doSample === false) temperature = 0
    else if (opts.doSample === true && !(temperature > 0)) throw invalidArg('a temperature > 0 with doSample', 'generate temperature', temperature)
    const topK = opts.topK ?? 0
    checkInt(topK, 'topK')
    const topP = opts.topP ?? 1
    if (typeof topP !== 'number' || !(topP > 0 && topP <= 1)) throw invalidArg('a number in (0, 1]', 'generate topP', topP)
    const repetitionPenalty = opts.repetitionPenalty ?? 1
    if (typeof repetitionPenalty !== 'number' || !Number.isFinite(repetitionPenalty) || !(repetitionPenalty > 0)) {
      throw invalidArg('a finite number > 0', 'generate repetitionPenalty', repetitionPenalty)
    }
    const eos = opts.eosTokenId ?? this.config.eosTokenId ?? -1
    if (!Number.isInteger(eos) || eos < -1 || eos >= this.config.vocabSize) {
      throw mendError('ERR_TOKEN_OUT_OF_RANGE', `eosTokenId ${eos} is outside [0, ${this.config.vocabSize})`)
    }
    if (b.ids.T + maxNew > this.config.nPositions) {
      throw mendError('ERR_SEQUENCE_TOO_LONG', `prompt length ${b.ids.T} + maxNewTokens ${maxNew} > n_positions ${this.config.nPositions}`)
    }
    const seed = opts.seed ?? 0
    checkInt(seed, 'generate seed', 0, Number.MAX_SAFE_INTEGER)
    if (opts.useCache !== undefined && typeof opts.useCache !== 'boolean') throw invalidArg('a boolean', 'generate useCache', opts.useCache)
    if (opts.includePrompt !== undefined && typeof opts.includePrompt !== 'boolean') throw invalidArg('a boolean', 'generate includePrompt', opts.includePrompt)
    const ov = this.overlayHandle
    const r = await callNative(() => this.native.generate(b.ids.data, b.ids.B, b.ids.T, b.mask,
      { maxNewTokens: maxNew, temperature, topK, topP, repetitionPenalty, eosTokenId: eos, seed, useCache: opts.useCache ?? true }, ov))
    const out: number[][] = []
    for (let i = 0; i < b.ids.B; i++) {
      const fresh = Array.from(r.tokens.subarray(i * r.n, (i + 1) * r.n))
      if (!opts.includePrompt) { out.push(fresh); continue }
      const prompt: number[] = []
      for (let t = 0; t < b.ids.T; t++) if (!b.mask || b.mask[i * b.ids.T + t]) prompt.push(b.ids.data[i * b.ids.T + t])
      out.push([...prompt, ...fresh])
    }
    return out
  }
}

/** Either name style (and the tied lm_head) to the canonical `transformer.…` name. */
export function canonicalName(n: string, shapes: Map<string, number[]>, what: string): string {
  if (typeof n !== 'string') throw invalidArg('a parameter name (string)', what, n)
  const c = canonicalParamName(n)
  if (!shapes.has(c)) throw mendError('ERR_INVALID_ARG', `${what}: unknown parameter "${n}"`)
  return c
}

/** Options of the model constructors (fromPretrained, random, fromTensors). */
export interface ModelOptions {
  /** 'cpu' (the default) or 'cuda' (refused with ERR_NO_DEVICE where it cannot run; lib/core/device.ts). */
  device?: Device
}

function modelOptions(opts: unknown, what: string): Device {
  const o = checkOptions<ModelOptions>(opts, what, ['device'])
  return checkDevice(o.device, what)
}

export class GPT2LMHeadModel extends GPT2Inference {
  /** The config.json keys this model was loaded with (kept by savePretrained). */
  readonly rawConfig: Record<string, unknown>
  private disposed = false

  protected constructor(handle: NativeModel, config: GPT2Config, rawConfig: Record<string, unknown> = {}) {
    super(handle, config)
    this.rawConfig = rawConfig
  }

  protected get overlayHandle(): NativeOverlay | null {
    return null
  }

  /** Where this model's weights live and its compute runs (only 'cpu' today; see lib/core/device.ts). */
  get device(): Device {
    return 'cpu'
  }

  /**
   * Loads a Hugging Face GPT-2 directory (config.json + model.safetensors). The weights are read
   * into private memory, so nothing done to the file afterwards affects the model. `{ mmap: true }`
   * memory-maps F32 weights instead (less memory and a faster load for a large model) under one
   * condition: the file must not change while the model is loaded (truncating it then kills the
   * process with SIGBUS; rewriting it changes the model's weights). `device` (default 'cpu'):
   * 'cuda' throws ERR_NO_DEVICE without a usable GPU (it never falls back to the CPU).
   */
  static async fromPretrained(dir: string, opts: ModelOptions & { mmap?: boolean } = {}): Promise<GPT2LMHeadModel> {
    if (typeof dir !== 'string') throw invalidArg('a directory path', 'GPT2LMHeadModel.fromPretrained', dir)
    const { mmap = false, ...rest } = checkOptions<ModelOptions & { mmap?: boolean }>(opts, 'GPT2LMHeadModel.fromPretrained', ['mmap', 'device'])
    if (typeof mmap !== 'boolean') throw invalidArg('a boolean', 'mmap', mmap)
    modelOptions(rest, 'GPT2LMHeadModel.fromPretrained')
    const { config, raw } = readHFConfig(path.join(dir, 'config.json'))
    const weights = path.join(dir, 'model.safetensors')
    if (!fs.existsSync(weights)) {
      const hint = fs.existsSync(path.join(dir, 'pytorch_model.bin')) ? ' (only pytorch_model.bin is there: convert it to safetensors)' : ''
      throw mendError('ERR_IO', `${weights} does not exist${hint}`)
    }
    const handle = await callNative(() => loadModel(weights, toNativeConfig(config), mmap))
    return new GPT2LMHeadModel(handle, config, raw)
  }

  /**
   * A model with Hugging Face's initialisation, deterministic for a seed (tests, benchmarks).
   * `random(config, seed, { device })`, or `random(config, { seed, device })`.
   */
  static async random(config: GPT2Config | Record<string, unknown>, seed: number | (ModelOptions & { seed?: number }) = 0,
                      opts: ModelOptions = {}): Promise<GPT2LMHeadModel> {
    if (typeof seed === 'object' && seed !== null) {
      const o = checkOptions<ModelOptions & { seed?: number }>(seed, 'GPT2LMHeadModel.random', ['seed', 'device'])
      opts = { device: o.device }
      seed = o.seed ?? 0
    }
    modelOptions(opts, 'GPT2LMHeadModel.random')
    const { config: c, raw } = resolveGPT2Config(config, 'GPT2LMHeadModel.random')
    checkInt(seed, 'seed')
    const handle = await callNative(() => randomModel(toNativeConfig(c), seed))
    return new GPT2LMHeadModel(handle, { ...c }, raw)
  }

  /** A model owning the given parameters (canonical or GPT2Model names; every parameter required; copied). */
  static async fromTensors(config: GPT2Config | Record<string, unknown>, tensors: Record<string, Float32Array>,
                           opts: ModelOptions = {}): Promise<GPT2LMHeadModel> {
    modelOptions(opts, 'GPT2LMHeadModel.fromTensors')
    const { config: c, raw } = resolveGPT2Config(config, 'GPT2LMHeadModel.fromTensors')
    const handle = await callNative(() => createModel(toNativeConfig(c), tensors))
    return new GPT2LMHeadModel(handle, { ...c }, raw)
  }

  /** Wraps an existing native handle (used by the functional model's materialize()). */
  static fromNative(handle: NativeModel, config: GPT2Config, rawConfig: Record<string, unknown> = {}): GPT2LMHeadModel {
    return new GPT2LMHeadModel(handle, config, rawConfig)
  }

  /** A copy of one parameter's values. */
  parameter(name: string): Tensor {
    const c = typeof name === 'string' ? canonicalParamName(name) : ''
    const info = this.parameters().find((p) => p.name === c)
    if (!info) throw mendError('ERR_INVALID_ARG', `unknown parameter "${name}"`)
    return { shape: info.shape, data: this.native.param(info.name) }
  }

  /** Writes a Hugging Face directory: config.json and model.safetensors (tied lm_head omitted, as HF does). */
  async savePretrained(dir: string): Promise<void> {
    makeDirectory(dir)
    await callNative(() => this.native.save(path.join(dir, 'model.safetensors'), { format: 'pt' }))
    writeFileAtomic(path.join(dir, 'config.json'), JSON.stringify(toHFConfig(this.config, this.rawConfig), null, 2) + '\n')
  }

  /** Bytes of float32 parameters. */
  get parameterBytes(): number {
    return this.native.paramBytes()
  }

  /** Frees the native weights; later calls throw ERR_DISPOSED. Calls in flight complete. */
  dispose(): void {
    if (!this.disposed) this.native.dispose()
    this.disposed = true
  }
}
