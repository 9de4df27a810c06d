/**
 * Byte-level BPE *trainer* (GPT-2 style): learns a vocab + merge list from
 * raw text, in the format `GPT2Tokenizer.fromVocabAndMerges` and
 * `GPT2Tokenizer.fromPretrained` (vocab.json + merges.txt) load.
 *
 * The algorithm follows Hugging Face tokenizers' `BpeTrainer` with the
 * `ByteLevel` pre-tokenizer (what `ByteLevelBPETokenizer.train` runs):
 *
 *   1. Every text is split with the GPT-2 pre-tokenization regex
 *      (`GPT2_SPLIT_PATTERN`, the same one `GPT2Tokenizer` uses), and the
 *      distinct pieces ("words") are counted. Merges never cross a word
 *      boundary.
 *   2. Each word's UTF-8 bytes are mapped through GPT-2's `bytes_to_unicode`
 *      table, so every word is a sequence of the 256 byte symbols. The initial
 *      alphabet is always all 256 symbols (so any text can be encoded, by byte
 *      fallback), with ids 0..255 in code-point order of the symbols, which is
 *      exactly the order of the first 256 entries of GPT-2's encoder.json
 *      ("!" = 0 ... "~" = 93, "¡" = 94 ... "ÿ" = 187, "Ā" (byte 0x00) = 188
 *      ... "Ń" (byte 0xad) = 255).
 *   3. Repeatedly, the most frequent adjacent symbol pair (occurrences summed
 *      over all words, weighted by word frequency; overlapping occurrences
 *      such as the two "a a" in "aaa" both count) is merged everywhere, left
 *      to right within each word, and becomes a new token with the next id.
 *      Ties are broken by the smallest (left id, right id) pair, i.e. the
 *      pair whose left token is oldest, then whose right token is oldest,
 *      which is also what HF's trainer does (test/16 checks that a small
 *      corpus gives exactly HF's merges). Training stops when the vocab
 *      (256 + merged tokens + special tokens) reaches `vocabSize`, or when
 *      the best remaining pair occurs fewer than `minFrequency` times.
 *   4. Special tokens are appended after the merged tokens (HF puts them
 *      first; appending keeps the 256 byte symbols at GPT-2's ids, and puts
 *      `<|endoftext|>` last, as in GPT-2).
 *
 * Two different merges cannot produce the same token string (say "ab c" and
 * "a bc"): each merge is applied in every word, so whichever of "a b" and
 * "b c" comes first leaves no adjacent pair the other could be built from.
 * Should it happen anyway, the merge is kept and reuses the existing token's
 * id, as in HF's trainer.
 *
 * A special token whose text is already a trained token is not added twice
 * (it keeps the trained id), so the vocab then ends up one smaller.
 *
 * Cost: pair counts are kept incrementally. Each merge only revisits the
 * words that contain the merged pair (an inverted index pair -> words), and a
 * max-heap with lazy deletion finds the next best pair, so training is about
 * O(total pair occurrences touched), not O(corpus) per merge.
 */
import * as path from 'path'
import { mendError } from '../core/errors'
import { makeDirectory, writeFileAtomic } from '../core/files'
import { ENDOFTEXT, GPT2_SPLIT_PATTERN } from './tokenizer'
import { BYTE_TO_CHAR } from './bytes'
import { invalidArg } from '../core/check'

export interface BPETrainOptions {
  /**
   * Target vocab size: 256 byte symbols + merged tokens + special tokens.
   * Integer, at least 256 + the number of special tokens (257 with the
   * default `<|endoftext|>`).
   */
  vocabSize: number
  /** Stop when the most frequent pair occurs fewer times than this. Positive integer; default 2. */
  minFrequency?: number
  /** Tokens appended after the merged tokens, in order. Default `['<|endoftext|>']`. */
  specialTokens?: string[]
}

export interface BPEVocabulary {
  /** Token (byte-level form, e.g. "Ġthe") -> id; ids are 0..N-1. */
  vocab: Record<string, number>
  /** Merge rules as "a b" lines in rank order (no "#version" header). */
  merges: string[]
}

/**
 * Pair keys pack (left id, right id) into one float64-exact integer:
 * left * PAIR_BASE + right. Numeric order of keys is the (left, right)
 * lexicographic order used for tie-breaking.
 */
const PAIR_BASE = 2 ** 26
/** Largest supported vocabSize (ids must fit in a pair key half). */
const MAX_VOCAB_SIZE = PAIR_BASE


/** The 256 byte symbols in id order (code-point order = GPT-2's encoder.json order). */
const ALPHABET: string[] = [...BYTE_TO_CHAR].sort((a, b) => a.charCodeAt(0) - b.charCodeAt(0))

/** byte -> id of its symbol. */
const BYTE_TO_ID: Int32Array = (() => {
  const ids = new Int32Array(256)
  for (let b = 0; b < 256; b++) ids[b] = ALPHABET.indexOf(BYTE_TO_CHAR[b])
  return ids
})()


interface ResolvedTrainOptions {
  vocabSize: number
  minFrequency: number
  specialTokens: string[]
}

/** Check `texts` and `opts`, filling in defaults; throws ERR_INVALID_ARG. */
function validate(texts: unknown, opts: unknown): ResolvedTrainOptions {
  const where = 'trainByteLevelBPE'
  if (!Array.isArray(texts)) {
    throw invalidArg(`an array of strings`, `${where} texts`, texts)
  }
  for (let i = 0; i < texts.length; i++) {
    if (typeof texts[i] !== 'string') {
      throw invalidArg(`a string`, `${where} texts[${i}]`, texts[i])
    }
  }
  if (typeof opts !== 'object' || opts === null || Array.isArray(opts)) {
    throw invalidArg(`an object with a vocabSize`, `${where} options`, opts)
  }
  const o = opts as Record<string, unknown>

  let specialTokens: string[] = [ENDOFTEXT]
  if (o.specialTokens !== undefined) {
    if (!Array.isArray(o.specialTokens)) {
      throw invalidArg(`an array of strings`, `${where} specialTokens`, o.specialTokens)
    }
    specialTokens = []
    for (const [i, s] of (o.specialTokens as unknown[]).entries()) {
      if (typeof s !== 'string' || s === '') {
        throw invalidArg(`a non-empty string`, `${where} specialTokens[${i}]`, s)
      }
      if (specialTokens.includes(s)) {
        throw mendError('ERR_INVALID_ARG', `${where}: special token ${JSON.stringify(s)} is listed twice`)
      }
      specialTokens.push(s)
    }
  }

  const minVocab = 256 + specialTokens.length
  const vs = o.vocabSize
  if (typeof vs !== 'number' || !Number.isInteger(vs) || vs < minVocab || vs > MAX_VOCAB_SIZE) {
    throw invalidArg(`an integer from ${minVocab} (256 byte symbols + ${specialTokens.length} special token(s)) to ${MAX_VOCAB_SIZE}`, `${where} vocabSize`, vs)
  }

  let minFrequency = 2
  if (o.minFrequency !== undefined) {
    const mf = o.minFrequency
    if (typeof mf !== 'number' || !Number.isSafeInteger(mf) || mf < 1) {
      throw invalidArg(`a positive integer`, `${where} minFrequency`, mf)
    }
    minFrequency = mf
  }
  return { vocabSize: vs, minFrequency, specialTokens }
}

/**
 * Binary max-heap of (count, pair key) entries, ordered by count descending,
 * then key ascending. Entries may be stale (the pair's count has changed
 * since it was pushed); the trainer checks on pop.
 */
class PairHeap {
  private counts: number[] = []
  private keys: number[] = []

  get size(): number {
    return this.counts.length
  }

  /** Entry i ranks above entry j. */
  private above(i: number, j: number): boolean {
    const ci = this.counts[i]
    const cj = this.counts[j]
    return ci > cj || (ci === cj && this.keys[i] < this.keys[j])
  }

  private swap(i: number, j: number): void {
    const c = this.counts[i]
    this.counts[i] = this.counts[j]
    this.counts[j] = c
    const k = this.keys[i]
    this.keys[i] = this.keys[j]
    this.keys[j] = k
  }

  push(count: number, key: number): void {
    this.counts.push(count)
    this.keys.push(key)
    let i = this.counts.length - 1
    while (i > 0) {
      const p = (i - 1) >> 1
      if (!this.above(i, p)) break
      this.swap(i, p)
      i = p
    }
  }

  /** Remove the top entry and return [count, key]; the heap must not be empty. */
  pop(): [number, number] {
    const top: [number, number] = [this.counts[0], this.keys[0]]
    const lastC = this.counts.pop() as number
    const lastK = this.keys.pop() as number
    const n = this.counts.length
    if (n > 0) {
      this.counts[0] = lastC
      this.keys[0] = lastK
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        const r = l + 1
        let best = i
        if (l < n && this.above(l, best)) best = l
        if (r < n && this.above(r, best)) best = r
        if (best === i) break
        this.swap(i, best)
        i = best
      }
    }
    return top
  }
}

/**
 * Train a GPT-2 style byte-level BPE vocabulary on `texts` (see the module
 * comment for the exact algorithm and tie-breaking). Deterministic: the same
 * texts and options always give the same vocab and merges.
 */
export function trainByteLevelBPE(texts: string[], opts: BPETrainOptions): BPEVocabulary {
  const { vocabSize, minFrequency, specialTokens } = validate(texts, opts)

  // --- 1. count pre-tokenized words ---
  const wordCounts = new Map<string, number>()
  const splitter = new RegExp(GPT2_SPLIT_PATTERN, 'gu')
  for (const text of texts) {
    for (const m of text.matchAll(splitter)) {
      const w = m[0]
      wordCounts.set(w, (wordCounts.get(w) ?? 0) + 1)
    }
  }

  // --- 2. words as byte-symbol id sequences ---
  const words: number[][] = []
  const freqs: number[] = []
  for (const [w, count] of wordCounts) {
    // Buffer.from(…, 'utf8') turns lone surrogates into U+FFFD, like the tokenizer does.
    const bytes = Buffer.from(w, 'utf8')
    const syms = new Array<number>(bytes.length)
    for (let i = 0; i < bytes.length; i++) syms[i] = BYTE_TO_ID[bytes[i]]
    words.push(syms)
    freqs.push(count)
  }

  const idToToken: string[] = [...ALPHABET]
  const tokenToId = new Map<string, number>(ALPHABET.map((s, i) => [s, i]))
  const merges: string[] = []

  // --- 3. initial pair counts and pair -> words index ---
  const pairCounts = new Map<number, number>()
  const pairWords = new Map<number, Set<number>>()
  for (let wi = 0; wi < words.length; wi++) {
    const w = words[wi]
    const f = freqs[wi]
    for (let i = 0; i + 1 < w.length; i++) {
      const key = w[i] * PAIR_BASE + w[i + 1]
      pairCounts.set(key, (pairCounts.get(key) ?? 0) + f)
      let set = pairWords.get(key)
      if (set === undefined) pairWords.set(key, (set = new Set()))
      set.add(wi)
    }
  }
  const heap = new PairHeap()
  // Push in key order only to make the heap layout independent of corpus order.
  for (const key of [...pairCounts.keys()].sort((a, b) => a - b)) heap.push(pairCounts.get(key) as number, key)

  // --- 4. merge loop ---
  // The vocab is complete when trained tokens + specials reach vocabSize.
  const trainedTarget = vocabSize - specialTokens.length
  const delta = new Map<number, number>()
  while (idToToken.length < trainedTarget && heap.size > 0) {
    const [count, key] = heap.pop()
    const current = pairCounts.get(key) ?? 0
    if (count !== current) {
      // Stale entry (the count went down since it was pushed): requeue with the real count.
      if (current > 0) heap.push(current, key)
      continue
    }
    // Every pair has a heap entry holding at least its real count, so this is the true best pair.
    if (count < minFrequency) break

    const a = Math.floor(key / PAIR_BASE)
    const b = key - a * PAIR_BASE
    const merged = idToToken[a] + idToToken[b]
    let newId = tokenToId.get(merged)
    if (newId === undefined) {
      newId = idToToken.length
      idToToken.push(merged)
      tokenToId.set(merged, newId)
    }
    merges.push(`${idToToken[a]} ${idToToken[b]}`)

    // Rewrite every word containing (a, b): subtract its old pairs, merge, add its new pairs.
    delta.clear()
    for (const wi of pairWords.get(key) as Set<number>) {
      const w = words[wi]
      let found = false
      for (let i = 0; i + 1 < w.length; i++) {
        if (w[i] === a && w[i + 1] === b) {
          found = true
          break
        }
      }
      if (!found) continue // stale index entry: an earlier merge removed the pair from this word
      const f = freqs[wi]
      for (let i = 0; i + 1 < w.length; i++) {
        const k = w[i] * PAIR_BASE + w[i + 1]
        delta.set(k, (delta.get(k) ?? 0) - f)
      }
      const out: number[] = []
      for (let i = 0; i < w.length; i++) {
        if (i + 1 < w.length && w[i] === a && w[i + 1] === b) {
          out.push(newId)
          i++
        } else {
          out.push(w[i])
        }
      }
      words[wi] = out
      for (let i = 0; i + 1 < out.length; i++) {
        const k = out[i] * PAIR_BASE + out[i + 1]
        delta.set(k, (delta.get(k) ?? 0) + f)
        // Only pairs touching the new token can be new to this word.
        if (out[i] === newId || out[i + 1] === newId) {
          let set = pairWords.get(k)
          if (set === undefined) pairWords.set(k, (set = new Set()))
          set.add(wi)
        }
      }
    }
    pairCounts.delete(key)
    pairWords.delete(key)
    for (const [k, d] of delta) {
      if (d === 0 || k === key) continue
      const n = (pairCounts.get(k) ?? 0) + d
      if (n > 0) pairCounts.set(k, n)
      else pairCounts.delete(k)
      // Counts that went down are fixed lazily on pop; counts that went up need a fresh entry.
      if (d > 0) heap.push(n, k)
    }
  }

  // --- 5. special tokens, then the vocab object (own properties, so "__proto__" is safe) ---
  for (const s of specialTokens) {
    if (!tokenToId.has(s)) {
      tokenToId.set(s, idToToken.length)
      idToToken.push(s)
    }
  }
  return { vocab: Object.fromEntries(idToToken.map((tok, id) => [tok, id])), merges }
}

/**
 * Write `v` to `dir` (created if needed) as Hugging Face / GPT-2 files:
 * vocab.json (entries in id order, one per line) and merges.txt (a
 * "#version: 0.2" first line, then one "a b" merge per line), which
 * `GPT2Tokenizer.fromPretrained(dir)` loads. Throws ERR_INVALID_ARG for a
 * malformed vocabulary and ERR_IO when the files cannot be written.
 */
export function writeVocabAndMerges(dir: string, v: BPEVocabulary): void {
  const where = 'writeVocabAndMerges'
  if (typeof dir !== 'string' || dir === '') {
    throw invalidArg(`a non-empty string`, `${where} dir`, dir)
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw invalidArg('a { vocab, merges } object', where, v)
  }
  const { vocab, merges } = v
  if (typeof vocab !== 'object' || vocab === null || Array.isArray(vocab)) {
    throw invalidArg(`an object mapping tokens to ids`, `${where} vocab`, vocab)
  }
  const entries = Object.entries(vocab)
  for (const [tok, id] of entries) {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) {
      throw invalidArg('a non-negative integer id', `${where} vocab entry ${JSON.stringify(tok)}`, id)
    }
  }
  if (!Array.isArray(merges)) {
    throw invalidArg(`an array of "a b" strings`, `${where} merges`, merges)
  }
  for (const [i, m] of (merges as unknown[]).entries()) {
    if (typeof m !== 'string' || /[\r\n]/.test(m) || m.split(' ').length !== 2) {
      throw invalidArg(`an "a b" string`, `${where} merges[${i}]`, m)
    }
  }

  // JSON.stringify(vocab) would hoist integer-like keys ("0", "10", ...); write in id order instead.
  entries.sort((x, y) => x[1] - y[1])
  const vocabText = entries.length === 0
    ? '{}\n'
    : '{\n' + entries.map(([tok, id]) => `  ${JSON.stringify(tok)}: ${id}`).join(',\n') + '\n}\n'
  const mergesText = '#version: 0.2\n' + merges.map((m) => m + '\n').join('')

  makeDirectory(dir)
  for (const [name, text] of [['vocab.json', vocabText], ['merges.txt', mergesText]]) {
    writeFileAtomic(path.join(dir, name), text)
  }
}
