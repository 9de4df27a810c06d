/**
 * Batches: the {inputIds, attentionMask, labels} a user passes (Hugging Face semantics), validated in
 * JavaScript before native code sees them, and the one padding helper that builds them from rows.
 */
import { mendError } from '../core/errors'
import { IdBatch, IdsInput, sameShape, toIdBatch } from '../core/tensor'
import { checkOptions } from '../core/check'

export interface Batch {
  inputIds: IdsInput
  /** 1 for real tokens, 0 for padding (left or right). */
  attentionMask?: IdsInput
  /** Hugging Face semantics: logits[:, t] predicts labels[:, t+1]; -100 is ignored. */
  labels?: IdsInput
}

export interface PreparedBatch {
  ids: IdBatch
  mask: Int32Array | null
  labels: Int32Array | null
}

/** Validates a batch in JavaScript (types, shapes, 0/1 mask, label values) before native code sees it. */
export function prepareBatch(batch: Batch, vocabSize: number, needLabels: boolean): PreparedBatch {
  if (!batch || typeof batch !== 'object') throw mendError('ERR_INVALID_ARG', 'Expected a batch object { inputIds, attentionMask?, labels? }')
  batch = checkOptions<Batch>(batch, 'the batch', ['inputIds', 'attentionMask', 'labels'])
  const ids = toIdBatch(batch.inputIds, 'inputIds')
  for (let i = 0; i < ids.data.length; i++) {
    if (ids.data[i] >= vocabSize) {
      throw mendError('ERR_TOKEN_OUT_OF_RANGE', `inputIds[${Math.floor(i / ids.T)}][${i % ids.T}] = ${ids.data[i]} is outside [0, ${vocabSize})`)
    }
  }
  let mask: Int32Array | null = null
  if (batch.attentionMask !== undefined && batch.attentionMask !== null) {
    const m = toIdBatch(batch.attentionMask, 'attentionMask')
    sameShape(ids, m, 'attentionMask')
    for (let i = 0; i < m.data.length; i++) {
      if (m.data[i] !== 0 && m.data[i] !== 1) throw mendError('ERR_INVALID_ARG', `attentionMask must hold only 0 and 1, found ${m.data[i]}`)
    }
    mask = m.data
  }
  let labels: Int32Array | null = null
  if (batch.labels !== undefined && batch.labels !== null) {
    const l = toIdBatch(batch.labels, 'labels', { allowNegative: true })
    sameShape(ids, l, 'labels')
    let targets = 0
    for (let i = 0; i < l.data.length; i++) {
      const v = l.data[i]
      if (v !== -100 && (v < 0 || v >= vocabSize)) {
        throw mendError('ERR_TOKEN_OUT_OF_RANGE', `labels[${Math.floor(i / l.T)}][${i % l.T}] = ${v} is neither -100 nor a token id`)
      }
      if (v !== -100 && i % l.T !== 0) targets++
    }
    if (targets === 0) throw mendError('ERR_NO_TARGET_TOKENS', 'labels have no target token (every label after the first position is -100)')
    labels = l.data
  } else if (needLabels) {
    throw mendError('ERR_INVALID_ARG', 'Expected labels in the batch')
  }
  return { ids, mask, labels }
}

export { IGNORE_INDEX, padRows } from '../core/tensor'
