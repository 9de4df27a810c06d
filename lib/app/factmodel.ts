/**
 * The bundled fact model: a small GPT-2 pretrained with the native engine on WorldFacts' training
 * phrasings, a byte-level BPE vocabulary trained on the same corpus, and a MEND editor trained for
 * it with EditTrainer. `npm run assets` (scripts/build-assets.js) runs these steps; tests run them
 * at toy size.
 *
 * Everything is seeded; the same machine and thread count give the same bytes.
 */
import { trainByteLevelBPE, BPEVocabulary } from '../tokenizer/bpe'
import { buildEditBatch, EditRequest } from '../data/editdata'
import { buildWorldFacts, editRequests, fillTemplate, portabilityPrompts, requestRelation, trainingCorpus, WorldFacts } from '../data/worldfacts'
import { teacherForcedPredictions } from '../easyedit/base-editor'
import { mendError } from '../core/errors'
import { padRows } from '../model/batch'
import { mulberry32, shuffle } from '../core/random'
import { GPT2LMHeadModel } from '../model/gpt2'
import { MEND, MENDConfig } from '../mend/mend'
import { Pretrainer } from '../model/pretrain'
import { ENDOFTEXT, GPT2Tokenizer } from '../tokenizer/tokenizer'
import { EditTrainer, EditTrainerConfig, lifelongTrainBatches, Progress, TrainBatch, trainBatches } from '../mend/trainer'
import { FunctionalGPT2LMHeadModel } from '../model/functional'
import { keyCovariances } from '../mend/lifelong'
import { editorLayout, MuStep, RefineSettings } from '../mend/network'

// ---------------------------------------------------------------------------------------------
// Vocabulary

/** A byte-level BPE vocabulary trained on the pretraining corpus, and its tokenizer. */
export function factVocabulary(wf: WorldFacts, vocabSize = 2048): { bpe: BPEVocabulary; tokenizer: GPT2Tokenizer } {
  const bpe = trainByteLevelBPE(trainingCorpus(wf), { vocabSize, specialTokens: [ENDOFTEXT] })
  return { bpe, tokenizer: GPT2Tokenizer.fromVocabAndMerges(bpe.vocab, bpe.merges) }
}

// ---------------------------------------------------------------------------------------------
// Pretraining

export interface FactPretrainOptions {
  seed?: number          // 0: initialisation and data order
  nLayer?: number        // 4
  nEmbd?: number         // 256
  nHead?: number         // 4
  epochs?: number        // 30
  batchSize?: number     // 64
  /** Peak learning rate; linear warm-up, then cosine decay to lr/10. Default 2e-3. */
  lr?: number
  warmupSteps?: number   // 100
  weightDecay?: number   // 0.1
  onProgress?: (p: { epoch: number; step: number; totalSteps: number; loss: number }) => void
}

/** Token rows of the corpus: each sentence followed by <|endoftext|> (so the model learns to stop). */
export function corpusRows(wf: WorldFacts, tok: GPT2Tokenizer): number[][] {
  const eos = tok.eosTokenId
  if (eos === undefined) throw mendError('ERR_INVALID_ARG', 'the tokenizer has no <|endoftext|> token')
  return trainingCorpus(wf).map((s) => [...tok.encode(s), eos])
}

/** Pretrains a fresh GPT-2 on the training phrasings (AdamW, full backward on the native engine). */
export async function pretrainFactModel(wf: WorldFacts, tok: GPT2Tokenizer, opts: FactPretrainOptions = {}): Promise<GPT2LMHeadModel> {
  const o = { seed: 0, nLayer: 4, nEmbd: 256, nHead: 4, epochs: 30, batchSize: 64, lr: 2e-3, warmupSteps: 100, weightDecay: 0.1, ...opts }
  const rows = corpusRows(wf, tok)
  const maxLen = Math.max(...rows.map((r) => r.length))
  const nPositions = Math.max(64, 2 ** Math.ceil(Math.log2(maxLen + 16)))
  const model = await GPT2LMHeadModel.random({ nLayer: o.nLayer, nHead: o.nHead, nEmbd: o.nEmbd, vocabSize: tok.vocabSize, nPositions }, o.seed)
  const pt = new Pretrainer(model, { lr: o.lr, weightDecay: o.weightDecay, beta2: 0.99 })
  const perEpoch = Math.floor(rows.length / o.batchSize)
  const total = o.epochs * perEpoch
  const rng = mulberry32(o.seed + 0x5eed)
  const pad = tok.eosTokenId!
  let step = 0
  for (let epoch = 0; epoch < o.epochs; epoch++) {
    const order = shuffle(rng, rows.map((_, i) => i))
    for (let b = 0; b < perEpoch; b++) {
      const batch = order.slice(b * o.batchSize, (b + 1) * o.batchSize).map((k) => rows[k])
      const lr = step < o.warmupSteps
        ? (o.lr * (step + 1)) / o.warmupSteps
        : o.lr * (0.1 + 0.45 * (1 + Math.cos((Math.PI * (step - o.warmupSteps)) / Math.max(1, total - o.warmupSteps))))
      const loss = await pt.step(padRows(batch, pad, { labels: batch }), lr)
      step++
      o.onProgress?.({ epoch, step, totalSteps: total, loss })
    }
  }
  return pt.model
}

// ---------------------------------------------------------------------------------------------
// Fact accuracy

export interface FactAccuracy {
  /** Share of (fact, phrasing) pairs whose whole answer the model produces greedily. */
  accuracy: number
  n: number
  byRelation: Record<string, number>
}

/**
 * Greedy exact-match accuracy over every fact in its training or held-out phrasings: a pair is
 * correct when the argmax after the prompt and after each answer prefix is the next answer token
 * (exactly what greedy decoding produces).
 */
export async function factAccuracy(model: GPT2LMHeadModel, tok: GPT2Tokenizer, wf: WorldFacts, phrasings: 'train' | 'heldOut', chunk = 256): Promise<FactAccuracy> {
  const pairs: { prompt: string; answer: string; relation: string }[] = []
  for (const f of wf.facts) {
    const rel = wf.relations.find((r) => r.name === f.relation)!
    for (const t of phrasings === 'train' ? rel.trainTemplates : rel.heldOutTemplates) pairs.push({ prompt: fillTemplate(t, f.subject), answer: f.answer, relation: f.relation })
  }
  const hits: boolean[] = []
  for (let i = 0; i < pairs.length; i += chunk) {
    const part = pairs.slice(i, i + chunk)
    const preds = await teacherForcedPredictions(model, tok, part.map((p) => p.prompt), part.map((p) => p.answer))
    for (const p of preds) hits.push(p.predicted.every((x, k) => x === p.target[k]))
  }
  const byRelation: Record<string, number> = {}
  for (const r of wf.relations) {
    const idx = pairs.map((p, k) => (p.relation === r.name ? k : -1)).filter((k) => k >= 0)
    if (idx.length) byRelation[r.name] = idx.filter((k) => hits[k]).length / idx.length
  }
  return { accuracy: hits.filter(Boolean).length / Math.max(1, hits.length), n: hits.length, byRelation }
}

// ---------------------------------------------------------------------------------------------
// Editor training

/**
 * Edit requests for training or validating the editor: the edit prompt is a training phrasing and
 * the rephrasings (L_edit is measured on them) are the fact's OTHER training phrasings — the
 * held-out phrasings are never seen while training the editor; they measure generalization.
 */
export function editorTrainingRequests(wf: WorldFacts, subjects: 'train' | 'heldOut', seed = 0): EditRequest[] {
  return editRequests(wf, { subjects, seed }).map((r) => {
    const rel = requestRelation(wf, r)
    if (!rel) throw mendError('ERR_DATA', `editorTrainingRequests: no relation for "${r.prompt}"`)
    return { ...r, rephrasePrompts: rel.trainTemplates.map((t) => fillTemplate(t, r.subject!)).filter((p) => p !== r.prompt) }
  })
}

/** TrainBatch per request; every WorldFacts request has locality prompts. */
function toTrainBatches(tok: GPT2Tokenizer, reqs: EditRequest[]): TrainBatch[] {
  const { batches, noLocality } = trainBatches(tok, reqs)
  if (noLocality) throw mendError('ERR_DATA', `${noLocality} WorldFacts request(s) without a locality prompt`)
  return batches
}

export interface FactEditorOptions {
  mend?: MENDConfig
  trainer?: EditTrainerConfig
  seed?: number
  /** Validation requests (held-out subjects) used for the best-editor choice; default 200. */
  valRequests?: number
  onProgress?: (p: Progress) => void
}

/** Trains a MEND editor on WorldFacts edits of the training subjects; returns the best one by validation loss. */
export async function trainFactEditor(model: GPT2LMHeadModel, tok: GPT2Tokenizer, wf: WorldFacts, opts: FactEditorOptions = {}): Promise<{ mend: MEND; steps: number; best?: { step: number; editAcc: number } }> {
  const seed = opts.seed ?? 0
  const train = toTrainBatches(tok, editorTrainingRequests(wf, 'train', seed))
  const val = toTrainBatches(tok, editorTrainingRequests(wf, 'heldOut', seed + 1).slice(0, opts.valRequests ?? 200))
  const mend = new MEND(model, { seed, ...opts.mend })
  const trainer = new EditTrainer(mend, { seed, ...opts.trainer })
  const r = await trainer.run(train, val, { onProgress: opts.onProgress })
  return { mend: trainer.bestMEND(), steps: r.steps, best: r.best ? { step: r.best.step, editAcc: r.best.val.editAcc } : undefined }
}

/**
 * The evaluation set of the bundled editor: CounterFact-style edits of the held-out subjects
 * (never edited while training the editor), rephrasings = the held-out phrasings, with two-hop
 * portability prompts. `npm run assets` and `node-mend eval` without --data use it.
 */
export function worldFactsEvalRequests(wf: WorldFacts = buildWorldFacts(), seed = 2): EditRequest[] {
  return editRequests(wf, { subjects: 'heldOut', seed }).map((r) => ({ ...r, portabilityPrompts: portabilityPrompts(wf, r) }))
}

export interface LifelongEditorOptions {
  /** Edits solved jointly per training step. Default 16. */
  editsPerStep?: number
  /** Edits in the background log the training edits are solved on top of. Default 400. */
  backgroundEdits?: number
  /** Rebuild the background (with the editor as trained so far) every this many steps. Default 50. */
  backgroundEvery?: number
  /** Training requests set aside for validation (by the sequential-edit loss). Default 64. */
  valRequests?: number
  /** Solve settings of the lifelong mode. */
  logRidge?: number
  mu?: number
  /** The smaller μ of short logs (MENDConfig.muSchedule). */
  muSchedule?: MuStep[]
  /** The refinement of sequential logs (MENDConfig.refine). Default none. */
  refine?: RefineSettings
  keyCov?: Record<string, Float32Array>
  trainer?: EditTrainerConfig
  seed?: number
  onProgress?: (p: Progress & { background?: number }) => void
}

/**
 * Trains a lifelong (kind 'malmen') editor for a WorldFacts model from an editor network (usually
 * the classic MEND editor of the same model): every step solves `editsPerStep` training edits
 * jointly on top of a background log of `backgroundEdits` other training edits (of other subjects,
 * made with the editor as trained so far and rebuilt every `backgroundEvery` steps), and trains the
 * editor through the solve on their rephrasings' loss and the locality KL. The best editor on the
 * validation requests (training subjects' edits set aside, solved on a background) is returned.
 */
export async function trainLifelongEditor(init: MEND, tok: GPT2Tokenizer, wf: WorldFacts, opts: LifelongEditorOptions = {}): Promise<{ mend: MEND; steps: number; best?: { step: number; loss: number } }> {
  const seed = opts.seed ?? 0
  const E = opts.editsPerStep ?? 16, M = opts.backgroundEdits ?? 400, every = opts.backgroundEvery ?? 50
  const all = editorTrainingRequests(wf, 'train', seed)
  const rng = mulberry32(seed * 7919 + 17)
  const order = shuffle(rng, all.map((_, i) => i))
  const nVal = opts.valRequests ?? 64
  const val = order.slice(0, nVal).map((i) => all[i])
  const train = order.slice(nVal).map((i) => all[i])
  const ll = init.withLifelong({ logRidge: opts.logRidge ?? init.config.logRidge, mu: opts.mu ?? init.config.mu, muSchedule: opts.muSchedule, keyCov: opts.keyCov, ...(opts.refine ? { refine: opts.refine } : {}) })
  const trainer = new EditTrainer(ll, { seed, ...opts.trainer })
  const maxIters = trainer.config.maxIters, valInterval = trainer.config.valInterval
  const valBatches = lifelongTrainBatches(tok, val, E)
  const subjects = [...new Set(train.map((r) => r.subject!))]
  let pool: EditRequest[] = train
  let best: { step: number; loss: number } | undefined
  let bestMEND = trainer.toMEND()
  const background = async (bgReqs: EditRequest[]) => {
    let cur: MEND = trainer.toMEND()
    for (const r of bgReqs) cur = (await cur.edit(buildEditBatch(tok, [r.prompt], [r.targetNew]))).edited
    trainer.setLifelongBackground(cur.model as FunctionalGPT2LMHeadModel)
  }
  let batches: TrainBatch[] = []
  for (let step = 0; step < maxIters; step++) {
    let bgSize: number | undefined
    if (step % every === 0 && M > 0) {
      // Background subjects and batch subjects are disjoint: a background edit never sets a batch's fact.
      const subj = shuffle(rng, [...subjects])
      const bgSet = new Set(subj.slice(0, Math.floor(subj.length / 2)))
      const bgReqs = shuffle(rng, train.filter((r) => bgSet.has(r.subject!))).slice(0, M)
      // ... and a batch's locality facts are not background facts (their KL would measure the background edits).
      const bgNames = [...bgSet]
      pool = train.filter((r) => !bgSet.has(r.subject!)).map((r) => ({ ...r, localityPrompts: r.localityPrompts.filter((l) => !bgNames.some((n) => l.prompt.includes(n))) }))
        .filter((r) => r.localityPrompts.length > 0)
      await background(bgReqs)
      bgSize = bgReqs.length
      batches = []
    }
    if (batches.length === 0) batches = lifelongTrainBatches(tok, shuffle(rng, [...pool]), E)
    const r = await trainer.trainStep(batches.pop()!)
    const p: Progress & { background?: number } = { ...r, step: step + 1, maxIters }
    if (bgSize !== undefined) p.background = bgSize
    if ((step + 1) % valInterval === 0 || step + 1 === maxIters) {
      const v = await trainer.validate(valBatches)
      p.val = v
      const key = trainer.config.cedit * v.edit + trainer.config.cloc * v.loc
      if (!best || key < best.loss) { best = { step: step + 1, loss: key }; bestMEND = trainer.toMEND() }
      p.best = best.loss
    }
    opts.onProgress?.(p)
  }
  return { mend: bestMEND, steps: maxIters, best }
}

/**
 * The lifelong mode's preservation covariance for a WorldFacts model: C0 = E[x·xᵀ] of every inner
 * param's input over the training-corpus sentences of the training subjects (text the model was
 * trained on; no sentence about a held-out subject, so nothing about an evaluation edit).
 */
export async function worldFactsKeyCovariance(mend: MEND, tok: GPT2Tokenizer, wf: WorldFacts, opts: { sentences?: number; batchSize?: number } = {}): Promise<{ keyCov: Record<string, Float32Array>; rows: number }> {
  const held = wf.heldOutSubjects
  const sents = trainingCorpus(wf).filter((s) => !held.some((h) => s.includes(h))).slice(0, opts.sentences ?? Infinity)
  const bs = opts.batchSize ?? 32
  const batches = []
  for (let i = 0; i < sents.length; i += bs) batches.push(padRows(sents.slice(i, i + bs).map((s) => tok.encode(s)), 0))
  const model = mend.baseModel
  const layout = editorLayout(model, mend.config.innerParams)
  const { keyCov, rows } = await keyCovariances(model, layout, batches)
  return { keyCov: Object.fromEntries(layout.inner.map((n, k) => [n, keyCov[k]])), rows }
}
