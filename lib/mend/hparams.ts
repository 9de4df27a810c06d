/**
 * EasyEdit's MEND hyper-parameter files (`hparams/MEND/gpt2-xl.yaml`): the settings node-mend
 * uses become a MENDConfig and an EditTrainerConfig; the model/paths/logging keys are informational;
 * a setting of a MEND variant node-mend does not implement (one_sided, x_only, combine: false, …)
 * is refused with ERR_CONFIG rather than silently trained as the default network.
 */
import { parse } from 'yaml'
import { mendError } from '../core/errors'
import { readRegularFileSync } from '../core/files'
import type { EditTrainerConfig } from './trainer'
import type { MENDConfig } from './network'

export interface MENDHparams {
  mend: MENDConfig
  trainer: EditTrainerConfig
  /** The file's keys as parsed (recorded in the editor file's metadata by `node-mend train`). */
  raw: Record<string, unknown>
}

// EasyEdit key -> [node-mend config, key].
const MAPPED: Record<string, ['mend' | 'trainer', string]> = {
  inner_params: ['mend', 'innerParams'], rank: ['mend', 'rank'], n_hidden: ['mend', 'nHidden'], edit_lr: ['mend', 'editLr'],
  seed: ['mend', 'seed'], lr: ['trainer', 'lr'], lr_lr: ['trainer', 'lrLr'], cedit: ['trainer', 'cedit'], cloc: ['trainer', 'cloc'],
  accumulate_bs: ['trainer', 'accumulateBs'], grad_clip: ['trainer', 'gradClip'], max_iters: ['trainer', 'maxIters'],
  val_interval: ['trainer', 'valInterval'], val_steps: ['trainer', 'valSteps'], early_stop_patience: ['trainer', 'earlyStopPatience'],
}
// Settings node-mend implements only at EasyEdit's default value (the network DESIGN §5 describes).
const FIXED: Record<string, unknown> = {
  alg_name: 'MEND', one_sided: false, x_only: false, delta_only: false, combine: true, norm: true, init: 'id',
  mlp_class: 'IDMLP', act: 'relu', shared: true, train_base: false, dropout: 0, lr_scale: 1, batch_size: 1, opt: 'Adam',
}
// Keys about paths, devices, logging and EasyEdit's own runner: accepted, not used.
const INFORMATIONAL = new Set(['archive', 'device', 'model_name', 'model_class', 'tokenizer_class', 'tokenizer_name', 'model_parallel',
  'cbase', 'no_grad_layers', 'hidden_dim', 'model_save_pt', 'silent', 'max_epochs', 'log_interval', 'eval_log_interval', 'final_eval',
  'early_stop_key', 'eval_only', 'half', 'debug', 'save', 'verbose', 'val_batch_size', 'results_dir', 'max_length', 'batch_size_val'])

/** Reads an EasyEdit MEND hparams YAML file. */
export function loadMENDHparams(file: string): MENDHparams {
  const text = readRegularFileSync(file)
  let raw: unknown
  try {
    raw = parse(text)
  } catch (e) {
    throw mendError('ERR_CONFIG', `${file} is not valid YAML: ${(e as Error).message}`)
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw mendError('ERR_CONFIG', `${file} must hold a YAML mapping of hyper-parameters`)
  const out: MENDHparams = { mend: {}, trainer: {}, raw: raw as Record<string, unknown> }
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (k in MAPPED) {
      if (v === null || v === undefined) continue
      const [which, key] = MAPPED[k]
      if (k === 'inner_params') {
        if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw mendError('ERR_CONFIG', `${file}: inner_params must be a list of parameter names`)
      } else if (typeof v !== 'number' || !Number.isFinite(v)) {
        throw mendError('ERR_CONFIG', `${file}: ${k} must be a number but is ${JSON.stringify(v)}`)
      }
      ;(out[which] as Record<string, unknown>)[key] = v
    } else if (k in FIXED) {
      const want = FIXED[k]
      const same = typeof want === 'string' && typeof v === 'string' ? v.toLowerCase() === want.toLowerCase() : v === want
      if (!same) throw mendError('ERR_CONFIG', `${file}: ${k}: ${JSON.stringify(v)} is a MEND variant node-mend does not implement (it trains EasyEdit's default network, ${k}: ${JSON.stringify(want)})`)
    } else if (!INFORMATIONAL.has(k)) {
      throw mendError('ERR_CONFIG', `${file}: unknown hyper-parameter "${k}" (node-mend reads ${Object.keys(MAPPED).join(', ')})`)
    }
  }
  return out
}
