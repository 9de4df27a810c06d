/**
 * EditTrainer: trains a MEND editor (EasyEdit's EditTrainer semantics, DESIGN §5). Each step edits
 * the base model with the edit batch, measures L_edit (on editOuter when given) and the locality KL
 * on the edited model, and accumulates the outer gradients of every editor parameter and α in
 * native code; every accumulateBs steps the gradients are clipped to gradClip (global norm) and two
 * Adam optimizers step (editor: lr, α: lrLr).
 *
 * The trained editor is a COPY. EditTrainer trains its own copy of the editor: the `MEND` it was
 * built from is not changed by training (EasyEdit's trainer updates the model's editor in place).
 * Take the result with `toMEND()` (the editor as trained so far) or `bestMEND()` (the best one on
 * validation), and save that:
 *
 *     const trainer = new EditTrainer(new MEND(model), config)
 *     await trainer.run(train, val)
 *     await trainer.bestMEND().save('editor.safetensors')   // not mend.save(): that is untrained
 *
 * Saving the controller the trainer was built from, after it has trained, warns
 * (NODE_MEND_UNTRAINED_SAVE).
 */
import { buildEditBatch, buildLocalityBatch, EditRequest, requestToBatches } from '../data/editdata'
import { CHECKPOINT_FORMAT, editorTensors, LAYER_ACTIVATIONS_KEY, specFromTensors } from './editor-file'
import { mendError } from '../core/errors'
import { mulberry32, shuffle } from '../core/random'
import { Batch, prepareBatch } from '../model/batch'
import { GPT2LMHeadModel } from '../model/gpt2'
import { lifelongSolverOf, MEND, noteTrainedCopy } from './mend'
import { layerActivationsOf, MENDConfig } from './network'
import { callNative, createTrainer, EditorSpec, NativeBatch, NativeRidge, NativeTrainer, safetensorsRead, safetensorsWrite } from '../core/native'
import { FunctionalGPT2LMHeadModel } from '../model/functional'
import { GPT2Tokenizer } from '../tokenizer/tokenizer'
import { checkInt, checkNumber, checkOptions, invalidArg } from '../core/check'

export interface EditTrainerConfig {
  lr?: number            // 1e-6
  lrLr?: number          // 1e-4
  cedit?: number         // 0.1
  cloc?: number          // 1.0
  accumulateBs?: number  // 10
  gradClip?: number      // 100
  /** Training steps in all (run). Default 1000. */
  maxIters?: number
  /** Validate every this many steps (run). Default 100. */
  valInterval?: number
  /** Validation batches per validation (run; 0 = all). Default 0. */
  valSteps?: number
  /** Stop when the validation loss has not improved for this many steps (run). Default 20000. */
  earlyStopPatience?: number
  /** Seed of the training-data order (run). Default 0. */
  seed?: number
}

export interface Progress extends StepResult {
  step: number
  maxIters: number
  /** Set on validation steps: the mean validation losses. */
  val?: StepResult
  /** Best validation loss (cedit·edit + cloc·loc) so far. */
  best?: number
}

export interface RunResult {
  steps: number
  stopped: 'maxIters' | 'earlyStop' | 'aborted'
  best?: { step: number; val: StepResult }
}

/** The data order of step i: a seeded permutation per epoch (so a resumed run sees the same order). */
function orderAt(i: number, n: number, seed: number): number {
  const epoch = Math.floor(i / n)
  const perm = shuffle(mulberry32(seed * 1000003 + epoch * 7919 + 1), Array.from({ length: n }, (_, k) => k))
  return perm[i % n]
}

export interface TrainBatch {
  edit: Batch
  loc: Batch
  /** Optional rephrasing with the same target: L_edit is measured on it (the original MEND). */
  editOuter?: Batch
}

/**
 * A TrainBatch per record (edit, locality, editOuter = the rephrasings); records without a
 * locality prompt cannot train (the KL term needs one) and are counted in `noLocality`.
 */
export function trainBatches(tok: GPT2Tokenizer, records: EditRequest[]): { batches: TrainBatch[]; noLocality: number } {
  const batches: TrainBatch[] = []
  let noLocality = 0
  for (const r of records) {
    const b = requestToBatches(tok, r)
    if (b.loc) batches.push({ edit: b.edit, loc: b.loc, editOuter: b.rephrase })
    else noLocality++
  }
  return { batches, noLocality }
}

/**
 * Lifelong-mode (MALMEN) training batches: `editsPerStep` records per TrainBatch, edited jointly in
 * one solve (edit = their prompts and targets, editOuter = all their rephrasings, loc = all their
 * locality prompts). Records without a locality prompt or without a rephrasing are skipped.
 */
export function lifelongTrainBatches(tok: GPT2Tokenizer, records: EditRequest[], editsPerStep: number): TrainBatch[] {
  checkInt(editsPerStep, 'lifelongTrainBatches editsPerStep', 1)
  const usable = records.filter((r) => (r.localityPrompts ?? []).length > 0 && (r.rephrasePrompts ?? []).length > 0)
  const out: TrainBatch[] = []
  for (let i = 0; i + editsPerStep <= usable.length; i += editsPerStep) {
    const g = usable.slice(i, i + editsPerStep)
    const reph = g.flatMap((r) => r.rephrasePrompts.map((p) => [p, r.targetNew]))
    out.push({
      edit: buildEditBatch(tok, g.map((r) => r.prompt), g.map((r) => r.targetNew)),
      editOuter: buildEditBatch(tok, reph.map((x) => x[0]), reph.map((x) => x[1])),
      loc: buildLocalityBatch(tok, g.flatMap((r) => r.localityPrompts)),
    })
  }
  return out
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
    config = checkOptions<EditTrainerConfig>(config, 'the EditTrainer config', ['lr', 'lrLr', 'cedit', 'cloc', 'accumulateBs', 'gradClip', 'maxIters', 'valInterval', 'valSteps', 'earlyStopPatience', 'seed'])
    const c: Required<EditTrainerConfig> = {
      lr: config.lr ?? 1e-6, lrLr: config.lrLr ?? 1e-4, cedit: config.cedit ?? 0.1, cloc: config.cloc ?? 1.0,
      accumulateBs: config.accumulateBs ?? 10, gradClip: config.gradClip ?? 100,
      maxIters: config.maxIters ?? 1000, valInterval: config.valInterval ?? 100, valSteps: config.valSteps ?? 0,
      earlyStopPatience: config.earlyStopPatience ?? 20000, seed: config.seed ?? 0,
    }
    for (const [k, v] of Object.entries(c)) {
      checkNumber(v, `EditTrainer ${k}`)
    }
    checkInt(c.accumulateBs, 'EditTrainer accumulateBs', 1)
    this.config = c
    const solver = lifelongSolverOf(mend)
    if (solver) this.barePrior = solver.priorStateSync()
    this.handle = createTrainer(this.model.native, mend.editorSpec(), { ...c, malmenPrior: this.barePrior ?? null })
  }

  private toNative(b: Batch, needLabels: boolean): NativeBatch {
    const p = prepareBatch(b, this.model.config.vocabSize, needLabels)
    return { ids: p.ids.data, B: p.ids.B, T: p.ids.T, mask: p.mask, labels: p.labels }
  }

  /**
   * One training step (statistics update, gradients accumulated, optimizers every accumulateBs steps).
   * It trains the trainer's copy of the editor; `toMEND()` / `bestMEND()` give it back.
   */
  async trainStep(batch: TrainBatch): Promise<StepResult> {
    noteTrainedCopy(this.mend)
    return this.step(batch, true)
  }

  /** Losses and edit accuracy of the current editor on a batch, without training. */
  async evaluate(batch: TrainBatch): Promise<StepResult> {
    return this.step(batch, false)
  }

  private async step(batch: TrainBatch, train: boolean): Promise<StepResult> {
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

  /**
   * Lifelong mode: solve the next training edits on top of an edited model of this editor (a
   * background log of earlier edits), so that the editor learns to edit a model that already holds
   * many edits; null returns to the bare prior.
   */
  setLifelongBackground(edited: FunctionalGPT2LMHeadModel | null): void {
    const solver = lifelongSolverOf(this.mend)
    if (!solver) throw mendError('ERR_INVALID_ARG', 'setLifelongBackground is for lifelong (kind \'malmen\') editors')
    const state = edited ? (edited.solverState as NativeRidge | null) : null
    if (edited && !state) throw mendError('ERR_INVALID_ARG', 'setLifelongBackground: expected a model edited by a lifelong editor')
    this.handle.setMalmenPrior(state ?? (this.barePrior ??= solver.priorStateSync()))
  }
  private barePrior: NativeRidge | undefined

  /** Training steps taken so far (also after resume). */
  get steps(): number {
    return this.handle.steps()
  }

  private bestSpec: EditorSpec | null = null
  private bestLoss = Infinity
  private bestStep = -1
  private bestVal: StepResult | null = null

  /**
   * Trains until maxIters steps (counting steps taken before a resume), validating every
   * valInterval steps and keeping the best editor (lowest cedit·edit + cloc·loc on validation);
   * stops early after earlyStopPatience steps without improvement, or when `signal` aborts.
   */
  async run(train: TrainBatch[], val: TrainBatch[], opts: { onProgress?: (p: Progress) => void; signal?: AbortSignal } = {}): Promise<RunResult> {
    if (!Array.isArray(train) || train.length === 0) throw mendError('ERR_INVALID_ARG', 'Expected a non-empty array of training batches')
    if (val === undefined) val = []
    if (!Array.isArray(val)) throw invalidArg('an array of validation batches', 'EditTrainer.run val', val)
    for (const [list, what] of [[train, 'train'], [val, 'val']] as const) {
      list.forEach((b, i) => {
        if (!b || typeof b !== 'object' || !b.edit || typeof b.edit !== 'object' || !b.loc || typeof b.loc !== 'object' ||
            (b.editOuter !== undefined && (!b.editOuter || typeof b.editOuter !== 'object'))) {
          throw invalidArg('a TrainBatch { edit, loc, editOuter? }', `EditTrainer.run ${what}[${i}]`, b)
        }
      })
    }
    const c = this.config
    let step = this.steps
    let stopped: RunResult['stopped'] = 'maxIters'
    while (step < c.maxIters) {
      if (opts.signal?.aborted) { stopped = 'aborted'; break }
      const r = await this.trainStep(train[orderAt(step, train.length, c.seed)])
      step++
      const p: Progress = { ...r, step, maxIters: c.maxIters }
      if (val.length && (step % c.valInterval === 0 || step === c.maxIters)) {
        const v = await this.validate(c.valSteps > 0 ? val.slice(0, c.valSteps) : val)
        p.val = v
        const key = c.cedit * v.edit + c.cloc * v.loc
        if (key < this.bestLoss) {
          this.bestLoss = key; this.bestStep = step; this.bestVal = v
          this.bestSpec = this.handle.tensors()
        }
      }
      if (Number.isFinite(this.bestLoss)) p.best = this.bestLoss
      opts.onProgress?.(p)
      if (this.bestStep >= 0 && step - this.bestStep >= c.earlyStopPatience) { stopped = 'earlyStop'; break }
    }
    const out: RunResult = { steps: step, stopped }
    if (this.bestVal) out.best = { step: this.bestStep, val: this.bestVal }
    return out
  }

  /**
   * The best editor seen by run() (by validation loss), or the current one without validation, as a
   * new MEND controller: the trained editor to save (`await trainer.bestMEND().save(file)`).
   */
  bestMEND(): MEND {
    return MEND.fromEditorSpec(this.model, this.bestSpec ?? this.handle.tensors(), this.mend.config, this.mend.keyCovariance ?? undefined)
  }

  /**
   * Writes a checkpoint: the editor, the accumulated gradients, both Adam states, the step count
   * and the configuration. EditTrainer.resume continues from it exactly.
   */
  async saveCheckpoint(file: string): Promise<void> {
    const opt = this.handle.optimizerState()
    const editor = this.handle.tensors()
    const tensors = [
      ...editorTensors(editor, 'editor.'),
      ...editorTensors(this.handle.grads(), 'grad.'),
      ...opt.m.map((m, i) => ({ name: `adam.m.${i}`, shape: [m.length], data: m })),
      ...opt.v.map((v, i) => ({ name: `adam.v.${i}`, shape: [v.length], data: v })),
    ]
    // Lifelong editors: the solve's preservation covariance C0, so that resume rebuilds the same prior.
    for (const [name, c] of Object.entries(this.mend.keyCovariance ?? {})) {
      if (c) { const d = Math.round(Math.sqrt(c.length)); tensors.push({ name: `editor.malmen.key_cov.${name}`, shape: [d, d], data: c }) }
    }
    await callNative(() => safetensorsWrite(file, tensors, {
      format: CHECKPOINT_FORMAT,
      [LAYER_ACTIVATIONS_KEY]: JSON.stringify(layerActivationsOf(editor)),
      trainer: JSON.stringify(this.config),
      mend: JSON.stringify(this.mend.config),
      adam_t: String(opt.t),
      steps: String(opt.steps),
      n_adam: String(opt.m.length),
      best: JSON.stringify({ loss: Number.isFinite(this.bestLoss) ? this.bestLoss : null, step: this.bestStep }),
    }))
  }

  /** A trainer continuing a checkpoint on `model`; `overrides` may change run settings (e.g. maxIters). */
  static async resume(model: GPT2LMHeadModel, file: string, overrides: EditTrainerConfig = {}): Promise<EditTrainer> {
    const r = await callNative(() => safetensorsRead(file))
    if (r.metadata.format !== CHECKPOINT_FORMAT) throw mendError('ERR_SAFETENSORS', `${file} is not a node-mend training checkpoint`)
    let trainerCfg: EditTrainerConfig, mendCfg: MENDConfig
    try {
      trainerCfg = JSON.parse(r.metadata.trainer)
      mendCfg = JSON.parse(r.metadata.mend)
    } catch (e) {
      throw mendError('ERR_SAFETENSORS', `${file}: malformed checkpoint metadata (${(e as Error).message})`)
    }
    const editor = specFromTensors(model, r.tensors, r.metadata, file, mendCfg.innerParams, 'editor.')
    const grads = specFromTensors(model, r.tensors, r.metadata, file, mendCfg.innerParams, 'grad.')
    const keyCov: Record<string, Float32Array> = {}
    for (const name of editor.config.innerParams) {
      const t = r.tensors[`editor.malmen.key_cov.${name}`]
      if (t && t.data) keyCov[name] = t.data
    }
    const trainer = new EditTrainer(MEND.fromEditorSpec(model, editor.spec, mendCfg, Object.keys(keyCov).length ? keyCov : undefined), { ...trainerCfg, ...overrides })
    // Tampered or damaged counters are refused, naming the file and key (a negative or non-numeric
    // n_adam, steps or adam_t used to be taken and left the trainer's editor NaN).
    const count = (key: string, max = Number.MAX_SAFE_INTEGER) => {
      const s = r.metadata[key]
      if (typeof s !== 'string' || !/^\d+$/.test(s) || Number(s) > max) {
        throw mendError('ERR_SAFETENSORS', `${file}: metadata "${key}" must be a non-negative integer${max < Number.MAX_SAFE_INTEGER ? ` at most ${max}` : ''} but is ${JSON.stringify(s ?? null)}`)
      }
      return Number(s)
    }
    const n = count('n_adam', Object.keys(r.tensors).length)
    const adamT = count('adam_t', 2147483647), steps = count('steps')
    const take = (name: string) => {
      const t = r.tensors[name]
      if (!t || !t.data) throw mendError('ERR_MISSING_TENSOR', `${file}: missing tensor "${name}"`)
      if (!t.data.every(Number.isFinite)) throw mendError('ERR_NON_FINITE', `${file}: tensor "${name}" holds NaN or Inf`)
      return Float32Array.from(t.data)
    }
    const state = { t: adamT, steps, m: Array.from({ length: n }, (_, i) => take(`adam.m.${i}`)), v: Array.from({ length: n }, (_, i) => take(`adam.v.${i}`)) }
    try {
      trainer.handle.setOptimizerState(state)
      trainer.handle.setGrads(grads.spec)
    } catch (e) {
      (e as Error).message = `${file}: ${(e as Error).message}`
      throw e
    }
    return trainer
  }

  /**
   * A new MEND controller with the editor as trained so far (the `mend` this trainer was built from
   * keeps its untrained editor).
   */
  toMEND(): MEND {
    return MEND.fromEditorSpec(this.model, this.handle.tensors(), this.mend.config, this.mend.keyCovariance ?? undefined)
  }

  /** Internal: the native trainer (tests read accumulated gradients). */
  get nativeTrainer(): NativeTrainer {
    return this.handle
  }
}
