/**
 * EditTrainer: trains a MEND editor (EasyEdit's EditTrainer semantics, DESIGN §5). Each step edits
 * the base model with the edit batch, measures L_edit (on editOuter when given) and the locality KL
 * on the edited model, and accumulates the outer gradients of every editor parameter and α in
 * native code; every accumulateBs steps the gradients are clipped to gradClip (global norm) and two
 * Adam optimizers step (editor: lr, α: lrLr).
 */
import { mendError } from './errors'
import { Batch, callNative, GPT2LMHeadModel, prepareBatch } from './model'
import { MEND } from './mend'
import { native, NativeBatch, NativeTrainer } from './native'

export interface EditTrainerConfig {
  lr?: number            // 1e-6
  lrLr?: number          // 1e-4
  cedit?: number         // 0.1
  cloc?: number          // 1.0
  accumulateBs?: number  // 10
  gradClip?: number      // 100
}

export interface TrainBatch {
  edit: Batch
  loc: Batch
  /** Optional rephrasing with the same target: L_edit is measured on it (the original MEND). */
  editOuter?: Batch
}

export interface StepResult {
  total: number
  edit: number
  loc: number
  editAcc: number
  /** Set on the steps where the optimizers stepped. */
  gradNorm?: number
}

export class EditTrainer {
  readonly mend: MEND
  readonly config: Required<EditTrainerConfig>
  private readonly handle: NativeTrainer
  private readonly model: GPT2LMHeadModel

  constructor(mend: MEND, config: EditTrainerConfig = {}) {
    if (!(mend.model instanceof GPT2LMHeadModel)) throw mendError('ERR_INVALID_ARG', 'Expected the root MEND controller (of a plain GPT2LMHeadModel)')
    this.mend = mend
    this.model = mend.model
    const c: Required<EditTrainerConfig> = {
      lr: config.lr ?? 1e-6, lrLr: config.lrLr ?? 1e-4, cedit: config.cedit ?? 0.1, cloc: config.cloc ?? 1.0,
      accumulateBs: config.accumulateBs ?? 10, gradClip: config.gradClip ?? 100,
    }
    for (const [k, v] of Object.entries(c)) {
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw mendError('ERR_INVALID_ARG', `Expected a finite non-negative ${k} but received ${v}`)
    }
    if (!Number.isInteger(c.accumulateBs) || c.accumulateBs < 1) throw mendError('ERR_INVALID_ARG', `Expected a positive integer accumulateBs but received ${c.accumulateBs}`)
    this.config = c
    this.handle = native().createTrainer(this.model.native, mend.editorSpec(), c)
  }

  private toNative(b: Batch, needLabels: boolean): NativeBatch {
    const p = prepareBatch(b, this.model.config.vocabSize, needLabels)
    return { ids: p.ids.data, B: p.ids.B, T: p.ids.T, mask: p.mask, labels: p.labels }
  }

  /** One training step (statistics update, gradients accumulated, optimizers every accumulateBs steps). */
  async trainStep(batch: TrainBatch): Promise<StepResult> {
    return this.run(batch, true)
  }

  /** Losses and edit accuracy of the current editor on a batch, without training. */
  async evaluate(batch: TrainBatch): Promise<StepResult> {
    return this.run(batch, false)
  }

  private async run(batch: TrainBatch, train: boolean): Promise<StepResult> {
    const edit = this.toNative(batch.edit, true)
    const outer = batch.editOuter ? this.toNative(batch.editOuter, true) : null
    const loc = this.toNative(batch.loc, false)
    const r = await callNative(() => this.handle.step(edit, outer, loc, { train, updateStats: train }))
    const out: StepResult = { total: r.total, edit: r.edit, loc: r.loc, editAcc: r.editAcc }
    if (r.stepped && r.gradNorm !== undefined) out.gradNorm = r.gradNorm
    return out
  }

  /** Mean losses over validation batches (the early-stopping key is edit + loc). */
  async validate(batches: TrainBatch[]): Promise<StepResult> {
    const acc = { total: 0, edit: 0, loc: 0, editAcc: 0 }
    for (const b of batches) {
      const r = await this.evaluate(b)
      acc.total += r.total; acc.edit += r.edit; acc.loc += r.loc; acc.editAcc += r.editAcc
    }
    const n = Math.max(1, batches.length)
    return { total: acc.total / n, edit: acc.edit / n, loc: acc.loc / n, editAcc: acc.editAcc / n }
  }

  /** A MEND controller with the editor as trained so far. */
  toMEND(): MEND {
    return MEND.fromEditorSpec(this.model, this.handle.tensors(), this.mend.config)
  }

  /** Internal: the native trainer (tests read accumulated gradients). */
  get nativeTrainer(): NativeTrainer {
    return this.handle
  }
}
