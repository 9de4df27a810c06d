/**
 * GPT-2 configuration: Hugging Face `config.json` keys in, the native config out.
 */
import { checkOptions } from '../core/check'
import { mendError } from '../core/errors'
import { readRegularFileSync } from '../core/files'
import type { NativeConfig } from '../core/native'

export interface GPT2Config {
  vocabSize: number
  nPositions: number
  nEmbd: number
  nLayer: number
  nHead: number
  /** MLP width; default 4 * nEmbd. */
  nInner?: number
  /** default 1e-5 */
  layerNormEpsilon?: number
  bosTokenId?: number
  eosTokenId?: number
}

/** Sizes are 32-bit in the native code. */
const INT32_MAX = 2147483647

const TANH_GELU = new Set(['gelu_new', 'gelu_pytorch_tanh', 'gelu_fast'])

/** Reads a Hugging Face GPT-2 config.json; missing or invalid keys are ERR_CONFIG naming the file. */
export function readHFConfig(file: string): { config: GPT2Config; raw: Record<string, unknown> } {
  const text = readRegularFileSync(file)
  let raw: Record<string, unknown>
  try {
    raw = JSON.parse(text)
  } catch (e) {
    throw mendError('ERR_CONFIG', `${file} is not valid JSON: ${(e as Error).message}`)
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw mendError('ERR_CONFIG', `${file} must hold a JSON object`)
  return { config: configFromHF(raw, file), raw }
}

/** A GPT2Config from Hugging Face config.json keys (`vocab_size`, `n_embd`, …); ERR_CONFIG names a missing or bad key. */
export function configFromHF(raw: Record<string, unknown>, file: string): GPT2Config {
  const int = (key: string, fallback?: string): number => {
    let v = raw[key]
    if (v === undefined && fallback) v = raw[fallback]
    if (v === undefined) throw mendError('ERR_CONFIG', `${file}: missing key "${key}"`)
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > INT32_MAX) {
      throw mendError('ERR_CONFIG', `${file}: "${key}" must be a positive integer${typeof v === 'number' && v > INT32_MAX ? ` at most ${INT32_MAX}` : ''} but is ${JSON.stringify(v)}`)
    }
    return v
  }
  const act = raw.activation_function ?? 'gelu_new'
  if (typeof act !== 'string' || !TANH_GELU.has(act)) {
    throw mendError('ERR_CONFIG', `${file}: activation_function ${JSON.stringify(act)} is not supported (GPT-2 uses "gelu_new")`)
  }
  const eps = raw.layer_norm_epsilon ?? 1e-5
  if (typeof eps !== 'number' || !(eps > 0)) throw mendError('ERR_CONFIG', `${file}: "layer_norm_epsilon" must be a positive number`)
  const nInner = raw.n_inner
  if (nInner !== undefined && nInner !== null && (typeof nInner !== 'number' || !Number.isInteger(nInner) || nInner < 1)) {
    throw mendError('ERR_CONFIG', `${file}: "n_inner" must be null or a positive integer`)
  }
  const config: GPT2Config = {
    vocabSize: int('vocab_size'),
    nPositions: int('n_positions', 'n_ctx'),
    nEmbd: int('n_embd'),
    nLayer: int('n_layer'),
    nHead: int('n_head'),
    nInner: typeof nInner === 'number' ? nInner : undefined,
    layerNormEpsilon: eps,
    bosTokenId: typeof raw.bos_token_id === 'number' ? raw.bos_token_id : undefined,
    eosTokenId: typeof raw.eos_token_id === 'number' ? raw.eos_token_id : undefined,
  }
  validateConfig(config, file)
  return config
}

/** Keys that mark a Hugging Face config.json-style object. */
const HF_KEYS = ['vocab_size', 'n_embd', 'n_layer', 'n_head', 'n_positions', 'n_ctx']
const CONFIG_KEYS = ['vocabSize', 'nPositions', 'nEmbd', 'nLayer', 'nHead', 'nInner', 'layerNormEpsilon', 'bosTokenId', 'eosTokenId']

/**
 * A validated GPT2Config from either spelling: the camelCase GPT2Config (unknown keys refused), or a
 * config.json-style object as Hugging Face writes it (`vocab_size`, `n_embd`, …; its other keys are
 * kept as `raw` for savePretrained).
 */
export function resolveGPT2Config(config: unknown, where: string): { config: GPT2Config; raw: Record<string, unknown> } {
  if (!config || typeof config !== 'object' || Array.isArray(config)) throw mendError('ERR_CONFIG', `${where}: expected a GPT2Config or a config.json-style object but received ${config === null ? 'null' : typeof config}`)
  const o = config as Record<string, unknown>
  if (HF_KEYS.some((k) => k in o) && !CONFIG_KEYS.some((k) => k in o)) return { config: configFromHF(o, where), raw: { ...o } }
  const c = checkOptions<GPT2Config>(o, where, CONFIG_KEYS)
  validateConfig(c, where)
  return { config: c, raw: {} }
}

export function validateConfig(c: GPT2Config, where = 'config'): void {
  for (const k of ['vocabSize', 'nPositions', 'nEmbd', 'nLayer', 'nHead'] as const) {
    const v = c[k]
    if (v === undefined) throw mendError('ERR_CONFIG', `${where}: missing key "${k}"`)
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > INT32_MAX) {
      throw mendError('ERR_CONFIG', `${where}: ${k} must be a positive integer${typeof v === 'number' && v > INT32_MAX ? ` at most ${INT32_MAX}` : ''} but is ${JSON.stringify(v)}`)
    }
  }
  if (c.nEmbd % c.nHead !== 0) throw mendError('ERR_CONFIG', `${where}: nEmbd (${c.nEmbd}) must be a multiple of nHead (${c.nHead})`)
}

export function toNativeConfig(c: GPT2Config): NativeConfig {
  return {
    nLayer: c.nLayer, nHead: c.nHead, nEmbd: c.nEmbd, nInner: c.nInner ?? 0, vocabSize: c.vocabSize,
    nPositions: c.nPositions, layerNormEpsilon: c.layerNormEpsilon ?? 1e-5,
  }
}

/** The config.json a Hugging Face GPT2LMHeadModel writes, merged over the keys it was loaded with. */
export function toHFConfig(c: GPT2Config, raw: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    activation_function: 'gelu_new',
    architectures: ['GPT2LMHeadModel'],
    attn_pdrop: 0.1, embd_pdrop: 0.1, resid_pdrop: 0.1,
    initializer_range: 0.02,
    model_type: 'gpt2',
    bos_token_id: c.bosTokenId ?? c.vocabSize - 1,
    eos_token_id: c.eosTokenId ?? c.vocabSize - 1,
    ...raw,
    vocab_size: c.vocabSize,
    n_positions: c.nPositions,
    n_ctx: c.nPositions,
    n_embd: c.nEmbd,
    n_layer: c.nLayer,
    n_head: c.nHead,
    n_inner: c.nInner ?? null,
    layer_norm_epsilon: c.layerNormEpsilon ?? 1e-5,
    torch_dtype: 'float32',
  }
}
