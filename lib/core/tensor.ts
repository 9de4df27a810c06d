/**
 * Tensors crossing the JavaScript boundary and the one place where user inputs (nested arrays or
 * typed arrays with a shape) become validated (B, T) int32 batches.
 */
import { describe } from './check'
import { mendError } from './errors'

/** A float32 tensor: `data` is a view of native memory where it came from native code. */
export interface Tensor {
  shape: number[]
  data: Float32Array
}

/** Token ids as nested arrays, one flat row, or a typed array with its [B, T] shape. */
export type IdsInput =
  | number[][]
  | number[]
  | { data: Int32Array | Uint32Array | Uint16Array | Float32Array | Float64Array | number[]; shape: number[] }

export interface IdBatch {
  data: Int32Array
  B: number
  T: number
}


/** Validates and converts `input` (argument `name`) into a (B, T) int32 batch. */
export function toIdBatch(input: unknown, name: string, opts: { allowNegative?: boolean } = {}): IdBatch {
  let B: number, T: number
  let flat: ArrayLike<number>
  if (Array.isArray(input)) {
    if (input.length === 0) throw mendError('ERR_INVALID_ARG', `Expected a non-empty array for ${name}`)
    if (Array.isArray(input[0])) {
      const rows = input as unknown[]
      B = rows.length
      T = (rows[0] as unknown[]).length
      const out = new Int32Array(B * T)
      rows.forEach((row, b) => {
        if (!Array.isArray(row) || row.length !== T) {
          throw mendError('ERR_INVALID_ARG', `Expected ${name}[${b}] to be an array of length ${T} but received ${describe(row)}`)
        }
        for (let t = 0; t < T; t++) out[b * T + t] = checkTokenInt(row[t], `${name}[${b}][${t}]`, opts)
      })
      if (T === 0) throw mendError('ERR_INVALID_ARG', `Expected non-empty rows for ${name}`)
      return { data: out, B, T }
    }
    B = 1; T = input.length; flat = input as number[]
  } else if (input && typeof input === 'object' && 'data' in input && 'shape' in input) {
    const { data, shape } = input as { data: ArrayLike<number>; shape: number[] }
    if (!Array.isArray(shape) || shape.length < 1 || shape.length > 2 || !shape.every((s) => Number.isInteger(s) && s > 0)) {
      throw mendError('ERR_INVALID_ARG', `Expected ${name}.shape to be [B, T] of positive integers but received ${JSON.stringify(shape)}`)
    }
    ;[B, T] = shape.length === 2 ? [shape[0], shape[1]] : [1, shape[0]]
    if (!data || typeof (data as ArrayLike<number>).length !== 'number' || data.length !== B * T) {
      throw mendError('ERR_INVALID_ARG', `Expected ${name}.data to hold ${B * T} elements for shape [${shape}] but received ${describe(data)}${data && (data as ArrayLike<number>).length !== undefined ? ` with ${(data as ArrayLike<number>).length}` : ''}`)
    }
    flat = data
  } else {
    throw mendError('ERR_INVALID_ARG', `Expected number[][] or { data, shape } for ${name} but received ${describe(input)}`)
  }
  const out = new Int32Array(B * T)
  for (let i = 0; i < B * T; i++) out[i] = checkTokenInt(flat[i], `${name}[${Math.floor(i / T)}][${i % T}]`, opts)
  return { data: out, B, T }
}

/** An int32 token id (negative only with allowNegative: labels' -100); unlike core/check's checkInt it bounds to int32 and a negative id is ERR_TOKEN_OUT_OF_RANGE. */
function checkTokenInt(v: unknown, where: string, opts: { allowNegative?: boolean }): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v > 2147483647 || v < -2147483648) {
    throw mendError('ERR_INVALID_ARG', `Expected an integer for ${where} but received ${String(v)}`)
  }
  if (v < 0 && !opts.allowNegative) {
    throw mendError('ERR_TOKEN_OUT_OF_RANGE', `${where} = ${v} is negative`)
  }
  return v
}

/** Checks that `other` has the same [B, T] as `ids`. */
export function sameShape(ids: IdBatch, other: IdBatch, name: string): void {
  if (other.B !== ids.B || other.T !== ids.T) {
    throw mendError('ERR_SHAPE_MISMATCH', `Expected ${name} of shape [${ids.B}, ${ids.T}] (as inputIds) but received [${other.B}, ${other.T}]`)
  }
}

/** Label value ignored by the loss (Hugging Face / PyTorch's ignore_index). */
export const IGNORE_INDEX = -100

/**
 * Token rows padded to one width: right padding (training, metrics; pad after the tokens) or left
 * padding (generation, so every row continues from its last real token). The attention mask is 1 on
 * real tokens; `labels` rows (same lengths as `rows`) are padded with -100.
 */
export function padRows(rows: number[][], padId: number, opts: { side?: 'left' | 'right'; labels?: number[][] } = {}):
  { inputIds: number[][]; attentionMask: number[][]; labels?: number[][] } {
  const width = Math.max(...rows.map((r) => r.length))
  const left = opts.side === 'left'
  const pad = <T>(r: T[], v: T): T[] => {
    const fill = new Array<T>(width - r.length).fill(v)
    return left ? [...fill, ...r] : [...r, ...fill]
  }
  const out: { inputIds: number[][]; attentionMask: number[][]; labels?: number[][] } = {
    inputIds: rows.map((r) => pad(r, padId)),
    attentionMask: rows.map((r) => pad(r.map(() => 1), 0)),
  }
  if (opts.labels) out.labels = opts.labels.map((r) => pad(r, IGNORE_INDEX))
  return out
}
