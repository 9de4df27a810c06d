/**
 * The lifelong editing mode (editor kind "malmen", DESIGN §5b): MALMEN's least-squares aggregation
 * of the editor's value shifts, solved jointly over the whole edit log on the untouched base.
 *
 * Every edit contributes, per inner weight, its keys K (the kept input rows on the base) and value
 * shifts V (v_i = α (k_i·ũ_i) d̃_i, from the same editor network as MEND). The edited weights are
 * W + ΔW with ΔW = (μ·C0 + e^λ·I + Σ KᵀK)⁻¹ Σ KᵀV over the live edits of the log. Keys and values
 * are taken on the base, so the result depends on the set of live edits, not on their order; a
 * later edit of the same fact (the same factKey) supersedes the earlier one, which leaves the sums.
 * The native state moves from one log to the next by Woodbury updates, so an edit costs the same
 * at depth 1000 as at depth 0; a replay performs the same updates in the same order, bit for bit.
 */
import { mendError } from '../core/errors'
import { callNative, keyCovariance, NativeEditor, NativeRidge, NativeRidgePrior, NativeRidgeUpdate, ridgePrior, ridgePriorSync, ridgeShift, ridgeUpdate } from '../core/native'
import { EditRecord, EditSolver, FunctionalGPT2LMHeadModel } from '../model/functional'
import { Batch, prepareBatch } from '../model/batch'
import { GPT2LMHeadModel } from '../model/gpt2'
import { EditorLayout, MuStep } from './network'

/** The lifelong prior of every inner param: S0 = mu·C0 + exp(logRidge)·I. */
export interface LifelongSettings {
  /** log of the ridge e^λ added to the diagonal, per inner param. */
  logRidge: number[]
  /** Weight of the preservation covariance C0 (0 = none) beyond the last step of muSchedule. */
  mu: number
  /** A smaller μ while the log is short: the first step with (live edits) ≤ upTo gives μ (DESIGN §5b). */
  muSchedule: MuStep[]
  /** C0 = E[x·xᵀ] of each inner param's input over unrelated text ([d_in, d_in]), or null per param (needed when mu > 0). */
  keyCov: (Float32Array | null)[]
}

/** The requests an edit record holds: the μ schedule counts requests (a batch of B is B edits of the solve). */
const requestsOf = (e: EditRecord): number => e.lifelong!.requests ?? 1

/** The editor kinds: EasyEdit's MEND (summed rank-one updates) and the lifelong least-squares mode. */
export type EditorKind = 'mend' | 'malmen'

export class LifelongSolver implements EditSolver {
  /** P0 per μ of the schedule, computed on first use. */
  private priors = new Map<number, Promise<NativeRidge>>()

  constructor(readonly base: GPT2LMHeadModel, readonly layout: EditorLayout, readonly settings: LifelongSettings, readonly editor: NativeEditor) {
    const n = layout.inner.length
    if (settings.logRidge.length !== n || settings.keyCov.length !== n) {
      throw mendError('ERR_INVALID_ARG', `the lifelong settings must give logRidge and keyCov for each of the ${n} inner params`)
    }
  }

  /** The step of a solve over n live edits: its μ and value scale. */
  stepAt(n: number): { mu: number; scale: number } {
    for (const s of this.settings.muSchedule) if (n <= s.upTo) return { mu: s.mu, scale: s.scale ?? 1 }
    return { mu: this.settings.mu, scale: 1 }
  }

  private priorSpecs(mu: number): NativeRidgePrior[] {
    const s = this.settings
    return this.layout.index.map((param, k) => ({ param, logRidge: s.logRidge[k], mu, c0: mu > 0 ? s.keyCov[k] : null }))
  }

  /** P0 = S0⁻¹ per inner param for this μ (a d_in³ solve, once per controller and μ, on first use). */
  private priorState(mu: number): Promise<NativeRidge> {
    let p = this.priors.get(mu)
    if (!p) {
      p = callNative(() => ridgePrior(this.base.native, this.priorSpecs(mu)))
      this.priors.set(mu, p)
      p.catch(() => { this.priors.delete(mu) })
    }
    return p
  }

  /** The prior of `mu` (the μ of long logs), computed now on this thread (EditTrainer's constructor). */
  priorStateSync(): NativeRidge {
    return ridgePriorSync(this.base.native, this.priorSpecs(this.settings.mu))
  }

  /**
   * How appending `record` to a log with `nLive` live requests (`superseded` leaving it) moves the
   * state: by Woodbury updates when the step of the μ schedule stays (and the log has a state), or
   * by a restart from the new step's prior with every live edit added again.
   */
  private transition(nLive: number, superseded: EditRecord | undefined, record: EditRecord, hasState: boolean): { step: { mu: number; scale: number }; restart: boolean } {
    const step = this.stepAt(nLive - (superseded ? requestsOf(superseded) : 0) + requestsOf(record)), was = this.stepAt(nLive)
    return { step, restart: !(hasState && nLive > 0 && was.mu === step.mu && was.scale === step.scale) }
  }

  live(edits: readonly EditRecord[]): boolean[] {
    const last = new Map<string, number>()
    edits.forEach((e, i) => { const f = e.lifelong?.factKey; if (f !== undefined) last.set(f, i) })
    return edits.map((e, i) => { const f = e.lifelong?.factKey; return f === undefined || last.get(f) === i })
  }

  /** The value scale of the μ schedule's step of a log (its live requests). */
  scaleOf(edits: readonly EditRecord[]): number {
    const live = this.live(edits)
    return this.stepAt(edits.reduce((a, e, i) => a + (live[i] ? requestsOf(e) : 0), 0)).scale
  }

  /**
   * Candidates of a line search in value space (MEND.refine's gradient method), without a solve:
   * the keys stay, so moving the values of `moves` (one {slot, k, v: the move} per block) by c moves
   * ΔW by c·P·ΣKᵀv. One model per c, holding prev's records (the caller gives the chosen one its
   * moved records). Equal to rebuild(moved records) up to rounding: a log that must replay bit for
   * bit is rebuilt once chosen.
   */
  async shifted(prev: FunctionalGPT2LMHeadModel, moves: { slot: number; k: Float32Array; v: Float32Array }[], coefs: number[]): Promise<FunctionalGPT2LMHeadModel[]> {
    const r = await callNative(() => ridgeShift(this.base.native, prev.solverState as NativeRidge, moves, coefs))
    return r.map((c) => new FunctionalGPT2LMHeadModel(this.base, [...prev.edits], c.overlay, this, c.state))
  }

  /** The updates that move a log's state by one more edit: remove the edit it supersedes, then add it (values × scale). */
  private updatesFor(record: EditRecord, superseded: EditRecord | undefined, scale: number): NativeRidgeUpdate[] {
    const ups: NativeRidgeUpdate[] = []
    const push = (r: EditRecord, sign: 1 | -1) => {
      const rows = r.lifelong!.rows
      this.layout.inner.forEach((name, slot) => {
        const x = rows[name]
        if (x && x.k.shape[0] > 0) ups.push({ slot, k: x.k.data, v: scale === 1 ? x.v.data : Float32Array.from(x.v.data, (v) => v * scale), sign })
      })
    }
    if (superseded) push(superseded, -1)
    push(record, 1)
    return ups
  }

  /** A restart's updates: every live edit of `edits` but the superseded one, then `record`, in log order. */
  private restartUpdates(edits: readonly EditRecord[], live: readonly boolean[], sup: number, record: EditRecord, scale: number): NativeRidgeUpdate[] {
    const ups = edits.flatMap((e, i) => (live[i] && i !== sup ? this.updatesFor(e, undefined, scale) : []))
    ups.push(...this.updatesFor(record, undefined, scale))
    return ups
  }

  /**
   * prev (an edited model of this solver, or null for the base) with one more edit. Within a step of
   * the μ schedule the state moves by Woodbury updates; when the live count enters the next step, the
   * state is that step's prior with every live edit added again in log order (the same updates a
   * replay performs, so a saved log replays bit for bit).
   */
  async append(prev: FunctionalGPT2LMHeadModel | null, record: EditRecord): Promise<FunctionalGPT2LMHeadModel> {
    const edits = prev ? [...prev.edits] : []
    const live = this.live(edits)
    const f = record.lifelong!.factKey
    const sup = f === undefined ? -1 : edits.findIndex((e, i) => live[i] && e.lifelong?.factKey === f)
    const nLive = edits.reduce((a, e, i) => a + (live[i] ? requestsOf(e) : 0), 0)
    const { step, restart } = this.transition(nLive, sup >= 0 ? edits[sup] : undefined, record, !!prev?.solverState)
    let state: NativeRidge
    let ups: NativeRidgeUpdate[]
    if (!restart) {
      state = prev!.solverState as NativeRidge
      ups = this.updatesFor(record, sup >= 0 ? edits[sup] : undefined, step.scale)
    } else {
      state = await this.priorState(step.mu)
      ups = this.restartUpdates(edits, live, sup, record, step.scale)
    }
    const r = await callNative(() => ridgeUpdate(this.base.native, state, ups))
    return new FunctionalGPT2LMHeadModel(this.base, [...edits, record], r.overlay, this, r.state)
  }

  /**
   * The model of an edit log: what appending its records one by one gives, bit for bit. Only the
   * updates since the chain's last restart (the last record that entered a new step of the μ
   * schedule) matter, so they are collected as the chain would perform them and applied in one
   * native call, on that step's prior: the same updates in the same order, with one overlay built
   * instead of one per record.
   */
  async rebuild(edits: EditRecord[]): Promise<FunctionalGPT2LMHeadModel> {
    for (const [i, e] of edits.entries()) {
      if (!e.lifelong) throw mendError('ERR_INVALID_ARG', `edit ${i} is not a lifelong edit`)
      for (const name of Object.keys(e.lifelong.rows)) {
        if (!this.layout.inner.includes(name)) throw mendError('ERR_SHAPE_MISMATCH', `edit ${i} has rows for "${name}", which this editor does not edit`)
      }
    }
    if (edits.length === 0) return new FunctionalGPT2LMHeadModel(this.base, [], null, this, null)
    const live: boolean[] = []
    const liveOf = new Map<string, number>()  // factKey -> its live record
    let nLive = 0, mu = 0
    let ups: NativeRidgeUpdate[] = []
    edits.forEach((record, n) => {
      const f = record.lifelong!.factKey
      const sup = f === undefined ? -1 : (liveOf.get(f) ?? -1)
      const { step, restart } = this.transition(nLive, sup >= 0 ? edits[sup] : undefined, record, n > 0)
      if (!restart) {
        ups.push(...this.updatesFor(record, sup >= 0 ? edits[sup] : undefined, step.scale))
      } else {
        // append's restart: this step's prior with every live record added again in log order
        mu = step.mu
        ups = this.restartUpdates(edits.slice(0, n), live, sup, record, step.scale)
      }
      if (sup >= 0) { live[sup] = false; nLive -= requestsOf(edits[sup]) }
      live.push(true)
      nLive += requestsOf(record)
      if (f !== undefined) liveOf.set(f, n)
    })
    const state = await this.priorState(mu)
    const r = await callNative(() => ridgeUpdate(this.base.native, state, ups))
    return new FunctionalGPT2LMHeadModel(this.base, [...edits], r.overlay, this, r.state)
  }
}

/**
 * C0 = E[x·xᵀ] of every inner param's input over `batches` (token rows of text the model knows,
 * { inputIds, attentionMask }) on the base: the lifelong mode's preservation covariance (MEMIT's).
 * Returns one [d_in, d_in] matrix per inner param and the number of token rows it averages.
 */
export async function keyCovariances(base: GPT2LMHeadModel, layout: EditorLayout, batches: Batch[]): Promise<{ keyCov: Float32Array[]; rows: number }> {
  const sums: Float64Array[] = layout.shapes.map(([dIn]) => new Float64Array(dIn * dIn))
  let rows = 0
  for (const batch of batches) {
    const b = prepareBatch(batch, base.config.vocabSize, false)
    const r = await callNative(() => keyCovariance(base.native, b.ids.data, b.ids.B, b.ids.T, b.mask, layout.index))
    r.sums.forEach((s, k) => { const t = sums[k]; for (let i = 0; i < t.length; i++) t[i] += s[i] })
    rows += r.count
  }
  if (rows === 0) throw mendError('ERR_INVALID_ARG', 'keyCovariances needs at least one token')
  return { keyCov: sums.map((s) => Float32Array.from(s, (x) => x / rows)), rows }
}
