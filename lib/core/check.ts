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

/** An integer ≥ min (default 0) and, when `max` is given, ≤ max. */
export function checkInt(v: unknown, what: string, min = 0, max?: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || (max !== undefined && v > max)) {
    throw invalidArg(max !== undefined ? `an integer in [${min}, ${max}]` : min === 0 ? 'a non-negative integer' : min === 1 ? 'a positive integer' : `an integer >= ${min}`, what, v)
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

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)])
  for (let j = 1; j <= b.length; j++) d[0][j] = j
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
  }
  return d[a.length][b.length]
}

/** snake_case -> camelCase ("max_new_tokens" -> "maxNewTokens"). */
const camel = (k: string) => k.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase())

/**
 * An options object with only known keys, in camelCase. A snake_case spelling of a known key (the
 * name EasyEdit or transformers uses: `max_new_tokens`, `target_new`, …) is accepted as an alias, as
 * are the extra `aliases` (their name → the key). Any other key is ERR_INVALID_ARG naming it and the
 * nearest valid key, so a misspelt option is never silently ignored. `undefined` values are dropped.
 */
export function checkOptions<T extends object>(opts: unknown, what: string, keys: readonly string[], aliases: Record<string, string> = {}): T {
  if (opts === undefined || opts === null) return {} as T
  if (typeof opts !== 'object' || Array.isArray(opts)) throw invalidArg('an options object', what, opts)
  const out: Record<string, unknown> = {}
  const from: Record<string, string> = {}
  for (const [k, v] of Object.entries(opts as Record<string, unknown>)) {
    if (v === undefined) continue
    const key = keys.includes(k) ? k : aliases[k] ?? (keys.includes(camel(k)) ? camel(k) : undefined)
    if (key === undefined) {
      const nearest = [...keys].sort((a, b) => editDistance(camel(k).toLowerCase(), a.toLowerCase()) - editDistance(camel(k).toLowerCase(), b.toLowerCase()))[0]
      throw mendError('ERR_INVALID_ARG', `Unknown option "${k}" for ${what}; did you mean "${nearest}"? (valid: ${keys.join(', ')})`)
    }
    if (key in out) throw mendError('ERR_INVALID_ARG', `Option "${key}" for ${what} is given twice (as "${from[key]}" and "${k}")`)
    out[key] = v
    from[key] = k
  }
  return out as T
}
