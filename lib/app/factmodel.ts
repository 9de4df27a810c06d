/**
 * The bundled fact model: a small GPT-2 pretrained with the native engine on WorldFacts' training
 * phrasings, a byte-level BPE vocabulary trained on the same corpus, and a MEND editor trained for
 * it with EditTrainer. `npm run assets` (scripts/build-assets.js) runs these steps; tests run them
 * at toy size.
 *
 * Everything is seeded; the same machine and thread count give the same bytes.
 */
import { trainByteLevelBPE, BPEVocabulary } from '../tokenizer/bpe'
import { EditRequest } from '../data/editdata'
import { buildWorldFacts, editRequests, fillTemplate, portabilityPrompts, requestRelation, trainingCorpus, WorldFacts } from '../data/worldfacts'
import { teacherForcedPredictions } from '../easyedit/base-editor'
import { mendError } from '../core/errors'
import { padRows } from '../model/batch'
import { mulberry32, shuffle } from '../core/random'
import { GPT2LMHeadModel } from '../model/gpt2'
import { MEND, MENDConfig } from '../mend/mend'
import { Pretrainer } from '../model/pretrain'
import { ENDOFTEXT, GPT2Tokenizer } from '../tokenizer/tokenizer'
import { EditTrainer, EditTrainerConfig, Progress, TrainBatch, trainBatches } from '../mend/trainer'

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
