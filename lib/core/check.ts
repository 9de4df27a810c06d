/**
 * Argument validation, in one message format ("Expected X for Y but received Z", sharp's), raised
 * as MendError ERR_INVALID_ARG before native code is called.
 */
import { mendError, MendError } from './errors'

/** How a received value reads in a message: numbers and strings as themselves, else their kind. */
export function describe(v: unknown): string {
  if (v === null) return 'null'
  if (v === undefined) return 'undefined'
  if (typeof v === 'number' || typeof v === 'boolean') return String(v)
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)
  if (Array.isArray(v)) return `an array of length ${v.length}`
  if (ArrayBuffer.isView(v)) return (v as object).constructor.name
  return typeof v
}

/** The one error of a bad argument: "Expected `expected` for `what` but received `received`". */
export function invalidArg(expected: string, what: string, received: unknown): MendError {
  return mendError('ERR_INVALID_ARG', `Expected ${expected} for ${what} but received ${describe(received)}`)
}

/** An integer ≥ min (default 0). */
export function checkInt(v: unknown, what: string, min = 0): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw invalidArg(min === 0 ? 'a non-negative integer' : min === 1 ? 'a positive integer' : `an integer >= ${min}`, what, v)
  }
  return v
}

/** A finite number, ≥ 0 unless `allowNegative`. */
export function checkNumber(v: unknown, what: string, opts: { allowNegative?: boolean } = {}): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || (!opts.allowNegative && v < 0)) {
    throw invalidArg(opts.allowNegative ? 'a finite number' : 'a finite non-negative number', what, v)
  }
  return v
}
