/**
 * Pretrainer: full-model training of a GPT-2 with AdamW on the native engine (for building small
 * models such as the bundled fact model). The base-model immutability of the engine is kept: each
 * step computes gradients on the current model, updates this object's own parameter copies with
 * AdamW in native code, and builds the next model from them.
 */
import { Batch, GPT2LMHeadModel } from './gpt2'
import { optimizerStep } from '../core/native'
import { checkNumber, checkOptions } from '../core/check'

export interface PretrainConfig {
  lr?: number           // 3e-4
  weightDecay?: number  // 0.01
  beta1?: number        // 0.9
  beta2?: number        // 0.999
  eps?: number          // 1e-8
  /** Gradient global-norm clip; 0 = none. Default 1. */
  gradClip?: number
}

export class Pretrainer {
  private current: GPT2LMHeadModel
  private ownsCurrent = false  // the caller's model is never disposed here
  private readonly params: Record<string, Float32Array> = {}
  private readonly m: Record<string, Float32Array> = {}
  private readonly v: Record<string, Float32Array> = {}
  private t = 0
  readonly config: Required<PretrainConfig>

  constructor(model: GPT2LMHeadModel, config: PretrainConfig = {}) {
    this.current = model
    config = checkOptions<PretrainConfig>(config, 'the Pretrainer config', ['lr', 'weightDecay', 'beta1', 'beta2', 'eps', 'gradClip'])
    this.config = { lr: 3e-4, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, gradClip: 1, ...config }
    for (const [k, v] of Object.entries(this.config)) {
      checkNumber(v, `Pretrainer ${k}`)
    }
    for (const { name } of model.parameters()) {
      const p = model.parameter(name).data
      this.params[name] = p
      this.m[name] = new Float32Array(p.length)
      this.v[name] = new Float32Array(p.length)
    }
  }

  /** The model with the parameters as trained so far. */
  get model(): GPT2LMHeadModel {
    return this.current
  }

  /** AdamW steps taken so far. */
  get steps(): number {
    return this.t
  }

  /**
   * One AdamW step on `batch` (labels required); returns the loss before the step. `lr`
   * overrides config.lr for this step (learning-rate schedules).
   */
  async step(batch: Batch, lr?: number): Promise<number> {
    if (lr !== undefined) checkNumber(lr, 'lr')
    const { loss, grads } = await this.current.lossAndGrad(batch)
    const names = Object.keys(this.params)
    const c = this.config
    // One native step: global-norm clipping, then AdamW per parameter (the editor trainer's code).
    // No weight decay on biases and LayerNorm parameters (the usual GPT-2 recipe).
    optimizerStep(names.map((n) => this.params[n]), names.map((n) => grads[n].data), names.map((n) => this.m[n]), names.map((n) => this.v[n]), {
      lr: lr ?? c.lr, beta1: c.beta1, beta2: c.beta2, eps: c.eps, t: this.t + 1, gradClip: c.gradClip,
      weightDecay: names.map((n) => (/\.(bias|ln_\d\.weight|ln_f\.weight)$/.test(n) ? 0 : c.weightDecay)),
    }) // throws ERR_NON_FINITE, changing nothing, when the gradient norm is not finite
    this.t++
    const next = await GPT2LMHeadModel.fromTensors(this.current.config, this.params)
    if (this.ownsCurrent) this.current.dispose()
    this.current = next
    this.ownsCurrent = true
    return loss
  }
}
