/**
 * GPT-2 byte-level BPE tokenizer.
 *
 * The BPE itself (pre-tokenization regex, byte-to-unicode mapping, merge
 * loop, byte-level decoding, added/special token splitting) is done by the
 * pure-JS `@huggingface/tokenizers` library; this module only
 *
 *   - loads a Hugging Face tokenizer directory (`tokenizer.json`, or the
 *     legacy `vocab.json` + `merges.txt` pair, plus the optional
 *     `tokenizer_config.json` / `special_tokens_map.json` /
 *     `added_tokens.json`),
 *   - builds the equivalent `tokenizer.json` definition when only
 *     `vocab.json` + `merges.txt` exist (what `GPT2TokenizerFast` does),
 *   - validates everything up front and reports problems as MendErrors
 *     (`ERR_IO` for files that cannot be read, `ERR_TOKENIZER` for content
 *     that is malformed), and
 *   - writes the same files back in Hugging Face's format (`save`).
 *
 * Behaviour notes (matching Hugging Face `GPT2Tokenizer`/`GPT2TokenizerFast`):
 *   - `encode` never adds special tokens (GPT-2 has no BOS/EOS post-processor).
 *   - The literal text `<|endoftext|>` inside the input is recognised as the
 *     special token (id 50256 for GPT-2), exactly like Hugging Face. tiktoken's
 *     `r50k_base` instead refuses such text by default (`disallowedSpecial`),
 *     or encodes it as plain text when told to (`disallowedSpecial: []`); pass
 *     `{ parseSpecialTokens: false }` to `encode` to get that plain-text
 *     behaviour (`<|endoftext|>` -> 27, 91, 437, 1659, 5239, 91, 29).
 *   - `decode` does NOT apply `clean_up_tokenization_spaces` unless the
 *     directory's `tokenizer_config.json` asks for it explicitly (or the
 *     per-call option does), so `decode(encode(x)) === x` for every string x
 *     that is well-formed UTF-16 (lone surrogates become U+FFFD, as in HF).
 */
import { promises as fsp } from 'fs'
import * as path from 'path'
import { Tokenizer } from '@huggingface/tokenizers'
import { MendError, mendError } from '../core/errors'
import { makeDirectory, writeFileAtomic } from '../core/files'
import { BYTE_TO_CHAR } from './bytes'
import { padRows } from '../core/tensor'

/** The GPT-2 pre-tokenization regex (as used by OpenAI's encoder.py, tiktoken r50k_base and HF ByteLevel). */
export const GPT2_SPLIT_PATTERN =
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

/** GPT-2's only special token. */
export const ENDOFTEXT = '<|endoftext|>'

/** One entry of tokenizer.json's `added_tokens` list. */
export interface AddedTokenSpec {
  id: number
  content: string
  single_word?: boolean
  lstrip?: boolean
  rstrip?: boolean
  normalized?: boolean
  special?: boolean
}

/** Options for {@link GPT2Tokenizer.fromVocabAndMerges}. */
export interface GPT2TokenizerOptions {
  /** EOS token text; default `<|endoftext|>` (null: none). */
  eosToken?: string | null
  /** BOS token text; default `<|endoftext|>` (null: none). */
  bosToken?: string | null
  /** UNK token text; default `<|endoftext|>` (null: none). Only used for `unkTokenId`; GPT-2 never emits UNK. */
  unkToken?: string | null
  /** PAD token text; default none, in which case `padTokenId` falls back to the EOS id. */
  padToken?: string | null
  /**
   * Extra added tokens. Tokens whose content is in `vocab` keep that id
   * unless `id` says otherwise. `<|endoftext|>` is added automatically (as a
   * special token) when the vocab contains it.
   */
  addedTokens?: AddedTokenSpec[]
  /** `model_max_length` (GPT-2: 1024). Informational. */
  modelMaxLength?: number
  /** Default for {@link DecodeOptions.cleanUpTokenizationSpaces}; default false. */
  cleanUpTokenizationSpaces?: boolean
}

export interface EncodeOptions {
  /**
   * Recognise added/special tokens (e.g. `<|endoftext|>`) written literally in
   * the text. Default true (Hugging Face behaviour). With false the whole text
   * is byte-level BPE encoded as plain text (tiktoken's
   * `encode(text, [], [])` behaviour).
   */
  parseSpecialTokens?: boolean
}

export interface DecodeOptions {
  /** Drop special tokens (e.g. `<|endoftext|>`) from the output. Default false. */
  skipSpecialTokens?: boolean
  /**
   * Apply Hugging Face's `clean_up_tokenization` (" ." -> ".", " 's" -> "'s", ...).
   * Default: the tokenizer's setting, which is false unless the tokenizer
   * config says otherwise. Leave off for exact round trips.
   */
  cleanUpTokenizationSpaces?: boolean
}

/** The tokenizer.json object we hand to `@huggingface/tokenizers` (and write in `save`). */
interface TokenizerDefinition {
  version: string
  truncation: unknown
  padding: unknown
  added_tokens: Required<AddedTokenSpec>[]
  normalizer: unknown
  pre_tokenizer: unknown
  post_processor: unknown
  decoder: unknown
  model: Record<string, unknown> & { type: 'BPE'; vocab: Record<string, number>; merges: string[] }
  [key: string]: unknown
}

interface ResolvedOptions {
  eosToken: string | null
  bosToken: string | null
  unkToken: string | null
  padToken: string | null
  modelMaxLength: number | undefined
  cleanUpTokenizationSpaces: boolean
  additionalSpecialTokens: string[]
}

const GPT2_PRE_TOKENIZER = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true }
const GPT2_POST_PROCESSOR = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true }
const GPT2_DECODER = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true }


const errMsg = (e: unknown): string => (e instanceof Error ? e.message : String(e))

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** Validate a vocab object (token -> id) and return it as a Map. */
function vocabToMap(vocab: unknown, where: string): Map<string, number> {
  if (!isPlainObject(vocab)) {
    throw mendError('ERR_TOKENIZER', `${where}: vocab must be a JSON object mapping token strings to ids`)
  }
  const map = new Map<string, number>()
  for (const [tok, id] of Object.entries(vocab)) {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) {
      throw mendError('ERR_TOKENIZER', `${where}: vocab entry ${JSON.stringify(tok)} has invalid id ${JSON.stringify(id)}`)
    }
    map.set(tok, id)
  }
  if (map.size === 0) throw mendError('ERR_TOKENIZER', `${where}: vocab is empty`)
  return map
}

/**
 * Parse merges given as merges.txt lines ("a b"), or tokenizer.json entries
 * ("a b" strings or ["a", "b"] pairs); returns normalized "a b" strings.
 * Mirrors the Rust tokenizers checks: exactly two parts, and a, b and a+b must
 * all be in the vocab.
 */
function normalizeMerges(
  merges: unknown,
  vocab: Map<string, number>,
  where: string,
): string[] {
  if (!Array.isArray(merges)) {
    throw mendError('ERR_TOKENIZER', `${where}: merges must be an array`)
  }
  const out: string[] = []
  for (let i = 0; i < merges.length; i++) {
    const m: unknown = merges[i]
    let a: unknown
    let b: unknown
    if (typeof m === 'string') {
      const parts = m.split(' ')
      if (parts.length !== 2) {
        throw mendError('ERR_TOKENIZER', `${where}: malformed merge at index ${i}: ${JSON.stringify(m)} (expected "A B")`)
      }
      a = parts[0]
      b = parts[1]
    } else if (Array.isArray(m) && m.length === 2) {
      a = m[0]
      b = m[1]
    }
    if (typeof a !== 'string' || typeof b !== 'string' || a === '' || b === '' || a.includes(' ') || b.includes(' ')) {
      throw mendError('ERR_TOKENIZER', `${where}: malformed merge at index ${i}: ${JSON.stringify(m)}`)
    }
    for (const t of [a, b, a + b]) {
      if (!vocab.has(t)) {
        throw mendError('ERR_TOKENIZER', `${where}: merge ${JSON.stringify(a + ' ' + b)} at index ${i} uses token ${JSON.stringify(t)} which is not in the vocab`)
      }
    }
    out.push(`${a} ${b}`)
  }
  return out
}

/** Parse the text of a merges.txt file (optional "#version" header). */
function parseMergesText(text: string, vocab: Map<string, number>, where: string): string[] {
  const lines = text.split('\n')
  const merges: string[] = []
  const lineNumbers: number[] = []
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]
    if (line.endsWith('\r')) line = line.slice(0, -1)
    if (i === 0 && line.charCodeAt(0) === 0xfeff) line = line.slice(1)
    if (line.startsWith('#version')) continue
    if (line === '') {
      // Only allow empty lines at the end of the file (trailing newline).
      if (lines.slice(i + 1).every((l) => l === '' || l === '\r')) break
      throw mendError('ERR_TOKENIZER', `${where}: empty line ${i + 1} in merges`)
    }
    merges.push(line)
    lineNumbers.push(i + 1)
  }
  try {
    return normalizeMerges(merges, vocab, where)
  } catch (e) {
    // Re-map "index N" to the file's line number for a friendlier message.
    if (e instanceof MendError) {
      e.message = e.message.replace(/at index (\d+)/, (_s, n: string) => `at line ${lineNumbers[Number(n)]}`)
    }
    throw e
  }
}

function normalizeAddedToken(t: unknown, where: string): Required<AddedTokenSpec> {
  if (!isPlainObject(t) || typeof t.content !== 'string' || t.content === '' ||
      typeof t.id !== 'number' || !Number.isSafeInteger(t.id) || t.id < 0) {
    throw mendError('ERR_TOKENIZER', `${where}: malformed added token ${JSON.stringify(t)}`)
  }
  return {
    id: t.id,
    content: t.content,
    single_word: t.single_word === true,
    lstrip: t.lstrip === true,
    rstrip: t.rstrip === true,
    normalized: t.normalized !== false,
    special: t.special === true,
  }
}

/** A special-token value from tokenizer_config.json / special_tokens_map.json: "x", {content:"x"} or null. */
function tokenText(v: unknown): string | null | undefined {
  if (v === null) return null
  if (typeof v === 'string') return v
  if (isPlainObject(v) && typeof v.content === 'string') return v.content
  return undefined
}

function resolveOptions(o: GPT2TokenizerOptions, extraSpecial: string[] = []): ResolvedOptions {
  const pick = (v: string | null | undefined, dflt: string | null) => (v === undefined ? dflt : v)
  return {
    eosToken: pick(o.eosToken, ENDOFTEXT),
    bosToken: pick(o.bosToken, ENDOFTEXT),
    unkToken: pick(o.unkToken, ENDOFTEXT),
    padToken: pick(o.padToken, null),
    modelMaxLength: o.modelMaxLength,
    cleanUpTokenizationSpaces: o.cleanUpTokenizationSpaces === true,
    additionalSpecialTokens: extraSpecial,
  }
}

/** Merge the vocab's `<|endoftext|>` and configured special tokens into an added-token list. */
function buildAddedTokens(
  vocab: Map<string, number>,
  given: AddedTokenSpec[],
  specialTexts: (string | null)[],
  where: string,
): Required<AddedTokenSpec>[] {
  const byContent = new Map<string, Required<AddedTokenSpec>>()
  for (const t of given) {
    const n = normalizeAddedToken(t, where)
    byContent.set(n.content, n)
  }
  for (const s of [ENDOFTEXT, ...specialTexts]) {
    if (s === null || byContent.has(s)) continue
    const id = vocab.get(s)
    if (id === undefined) continue // not in vocab: ignored (its *TokenId getter returns undefined)
    byContent.set(s, {
      id, content: s, single_word: false, lstrip: false, rstrip: false, normalized: true, special: true,
    })
  }
  return [...byContent.values()].sort((x, y) => x.id - y.id)
}

function checkAddedTokenIds(vocab: Map<string, number>, added: Required<AddedTokenSpec>[], where: string): void {
  const idToTok = new Map<number, string>()
  for (const [tok, id] of vocab) if (!idToTok.has(id)) idToTok.set(id, tok)
  const seen = new Map<number, string>()
  for (const t of added) {
    const prevAdded = seen.get(t.id)
    if (prevAdded !== undefined && prevAdded !== t.content) {
      throw mendError('ERR_TOKENIZER', `${where}: added tokens ${JSON.stringify(prevAdded)} and ${JSON.stringify(t.content)} share id ${t.id}`)
    }
    seen.set(t.id, t.content)
    const inVocab = idToTok.get(t.id)
    if (inVocab !== undefined && inVocab !== t.content) {
      throw mendError('ERR_TOKENIZER', `${where}: added token ${JSON.stringify(t.content)} has id ${t.id}, which the vocab already uses for ${JSON.stringify(inVocab)}`)
    }
  }
}

function makeDefinition(
  vocab: Map<string, number>,
  merges: string[],
  added: Required<AddedTokenSpec>[],
): TokenizerDefinition {
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { ...GPT2_PRE_TOKENIZER },
    post_processor: { ...GPT2_POST_PROCESSOR },
    decoder: { ...GPT2_DECODER },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(vocab),
      merges,
    },
  }
}

/** JSON for a vocab in id order (JSON.stringify would hoist integer-like keys such as "0"). */
function vocabJson(entries: [string, number][], indent: string): string {
  if (entries.length === 0) return '{}'
  return '{\n' + entries.map(([k, v]) => `${indent}  ${JSON.stringify(k)}: ${v}`).join(',\n') + `\n${indent}}`
}

async function readText(file: string): Promise<string> {
  try {
    return await fsp.readFile(file, 'utf8')
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    const why = code === 'ENOENT' ? 'file not found' : errMsg(e)
    throw mendError('ERR_IO', `cannot read ${file}: ${why}`)
  }
}

async function readJson(file: string): Promise<unknown> {
  const text = await readText(file)
  try {
    return JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text)
  } catch (e) {
    throw mendError('ERR_TOKENIZER', `malformed JSON in ${file}: ${errMsg(e)}`)
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await fsp.access(file)
    return true
  } catch {
    return false
  }
}

async function writeFile(file: string, text: string): Promise<void> {
  writeFileAtomic(file, text) // ERR_IO naming the file
}

export class GPT2Tokenizer {
  /** Base vocab + added tokens: one past the largest token id (50257 for GPT-2). */
  readonly vocabSize: number
  /** Id of the EOS token (`<|endoftext|>` = 50256 for GPT-2), or undefined. */
  readonly eosTokenId: number | undefined
  /** Id of the BOS token (GPT-2: same as EOS), or undefined. */
  readonly bosTokenId: number | undefined
  /** Id of the UNK token (GPT-2: same as EOS; never produced by encode), or undefined. */
  readonly unkTokenId: number | undefined
  /** Id of the PAD token; defaults to the EOS id when no pad token is configured. */
  readonly padTokenId: number | undefined
  /** `model_max_length` from the tokenizer config, if any. */
  readonly modelMaxLength: number | undefined
  readonly eosToken: string | null
  readonly bosToken: string | null
  readonly unkToken: string | null
  readonly padToken: string | null

  private readonly def: TokenizerDefinition
  private readonly opts: ResolvedOptions
  private readonly tok: Tokenizer
  private plainTok: Tokenizer | undefined
  private readonly vocabMap: Map<string, number>
  private readonly idToTok: Map<number, string>
  private readonly specialIds: Set<number>
  /** Bytes whose byte-level char is missing from the vocab (empty for GPT-2); text containing them can't be encoded. */
  private readonly missingBytes: Set<number>
  private readonly libConfig: Record<string, unknown>

  private constructor(def: TokenizerDefinition, opts: ResolvedOptions, where: string) {
    this.def = def
    this.opts = opts
    this.vocabMap = new Map(Object.entries(def.model.vocab))
    this.idToTok = new Map()
    for (const [t, id] of this.vocabMap) if (!this.idToTok.has(id)) this.idToTok.set(id, t)
    for (const a of def.added_tokens) this.idToTok.set(a.id, a.content)
    this.specialIds = new Set(def.added_tokens.filter((a) => a.special).map((a) => a.id))

    let maxId = -1
    for (const id of this.idToTok.keys()) if (id > maxId) maxId = id
    this.vocabSize = maxId + 1

    this.missingBytes = new Set()
    for (let b = 0; b < 256; b++) if (!this.vocabMap.has(BYTE_TO_CHAR[b])) this.missingBytes.add(b)

    this.libConfig = {
      clean_up_tokenization_spaces: false,
      ...(opts.eosToken !== null ? { eos_token: opts.eosToken } : {}),
      ...(opts.bosToken !== null ? { bos_token: opts.bosToken } : {}),
      ...(opts.unkToken !== null ? { unk_token: opts.unkToken } : {}),
      ...(opts.padToken !== null ? { pad_token: opts.padToken } : {}),
      additional_special_tokens: opts.additionalSpecialTokens,
    }
    try {
      this.tok = new Tokenizer(def, this.libConfig)
    } catch (e) {
      throw mendError('ERR_TOKENIZER', `${where}: unsupported or malformed tokenizer definition: ${errMsg(e)}`)
    }

    const idOf = (s: string | null) => (s === null ? undefined : this.tokenToId(s))
    this.eosToken = opts.eosToken
    this.bosToken = opts.bosToken
    this.unkToken = opts.unkToken
    this.padToken = opts.padToken
    this.eosTokenId = idOf(opts.eosToken)
    this.bosTokenId = idOf(opts.bosToken)
    this.unkTokenId = idOf(opts.unkToken)
    this.padTokenId = idOf(opts.padToken) ?? this.eosTokenId
    this.modelMaxLength = opts.modelMaxLength
  }

  /**
   * Load a Hugging Face GPT-2 tokenizer directory. Uses `tokenizer.json` when
   * present, otherwise `vocab.json` + `merges.txt` (+ `added_tokens.json`).
   * `tokenizer_config.json` / `special_tokens_map.json` supply eos/bos/unk/pad
   * tokens, `model_max_length` and `clean_up_tokenization_spaces`.
   */
  static async fromPretrained(dir: string): Promise<GPT2Tokenizer> {
    let st
    try {
      st = await fsp.stat(dir)
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      throw mendError('ERR_IO', `tokenizer directory ${dir} ${code === 'ENOENT' ? 'does not exist' : 'cannot be read: ' + errMsg(e)}`)
    }
    if (!st.isDirectory()) throw mendError('ERR_IO', `tokenizer path ${dir} is not a directory`)

    // --- configs (all optional) ---
    const cfgFile = path.join(dir, 'tokenizer_config.json')
    const stmFile = path.join(dir, 'special_tokens_map.json')
    const cfg = (await exists(cfgFile)) ? await readJson(cfgFile) : {}
    const stm = (await exists(stmFile)) ? await readJson(stmFile) : {}
    if (!isPlainObject(cfg)) throw mendError('ERR_TOKENIZER', `${cfgFile}: expected a JSON object`)
    if (!isPlainObject(stm)) throw mendError('ERR_TOKENIZER', `${stmFile}: expected a JSON object`)
    const special = (key: string): string | null | undefined => {
      // tokenizer_config.json wins; special_tokens_map.json fills gaps.
      const a = key in cfg ? tokenText(cfg[key]) : undefined
      return a !== undefined ? a : key in stm ? tokenText(stm[key]) : undefined
    }
    const extra: string[] = []
    for (const src of [cfg.additional_special_tokens, stm.additional_special_tokens]) {
      if (!Array.isArray(src)) continue
      for (const s of src) {
        const tt = tokenText(s)
        if (typeof tt === 'string' && !extra.includes(tt)) extra.push(tt)
      }
    }
    const mml = cfg.model_max_length
    const opts = resolveOptions({
      eosToken: special('eos_token'),
      bosToken: special('bos_token'),
      unkToken: special('unk_token'),
      padToken: special('pad_token'),
      modelMaxLength: typeof mml === 'number' && Number.isFinite(mml) ? mml : undefined,
      cleanUpTokenizationSpaces: cfg.clean_up_tokenization_spaces === true,
    }, extra)
    const specialTexts = [opts.eosToken, opts.bosToken, opts.unkToken, opts.padToken, ...extra]

    // --- tokenizer.json ---
    const tjFile = path.join(dir, 'tokenizer.json')
    if (await exists(tjFile)) {
      const raw = await readJson(tjFile)
      return new GPT2Tokenizer(GPT2Tokenizer.definitionFromJson(raw, tjFile), opts, tjFile)
    }

    // --- vocab.json + merges.txt ---
    const vocabFile = path.join(dir, 'vocab.json')
    const mergesFile = path.join(dir, 'merges.txt')
    if (!(await exists(vocabFile))) {
      throw mendError('ERR_IO', `cannot read ${vocabFile}: file not found (directory ${dir} has neither tokenizer.json nor vocab.json + merges.txt)`)
    }
    const vocab = vocabToMap(await readJson(vocabFile), vocabFile)
    const merges = parseMergesText(await readText(mergesFile), vocab, mergesFile)

    const given: AddedTokenSpec[] = []
    // Newer transformers: tokenizer_config.json "added_tokens_decoder": {"50256": {content, special, ...}}
    if (isPlainObject(cfg.added_tokens_decoder)) {
      for (const [id, t] of Object.entries(cfg.added_tokens_decoder)) {
        if (!isPlainObject(t)) throw mendError('ERR_TOKENIZER', `${cfgFile}: malformed added_tokens_decoder entry ${id}`)
        given.push({ ...t, id: Number(id) } as unknown as AddedTokenSpec)
      }
    }
    // Older transformers: added_tokens.json {"[PAD]": 50257}
    const atFile = path.join(dir, 'added_tokens.json')
    if (await exists(atFile)) {
      const at = await readJson(atFile)
      if (!isPlainObject(at)) throw mendError('ERR_TOKENIZER', `${atFile}: expected a JSON object`)
      for (const [content, id] of Object.entries(at)) {
        if (given.some((g) => g.content === content)) continue
        given.push({ id: id as number, content, special: specialTexts.includes(content), normalized: !specialTexts.includes(content) })
      }
    }
    const added = buildAddedTokens(vocab, given, specialTexts, given.length ? cfgFile : vocabFile)
    checkAddedTokenIds(vocab, added, vocabFile)
    return new GPT2Tokenizer(makeDefinition(vocab, merges, added), opts, vocabFile)
  }

  /**
   * Build a GPT-2 style byte-level BPE tokenizer from an in-memory vocab and
   * merge list (merges.txt lines "a b"; a leading "#version" line and empty
   * lines are ignored; [a, b] pairs are accepted too).
   */
  static fromVocabAndMerges(
    vocab: Record<string, number>,
    merges: readonly string[] | readonly (readonly [string, string])[],
    opts: GPT2TokenizerOptions = {},
  ): GPT2Tokenizer {
    const where = 'fromVocabAndMerges'
    const v = vocabToMap(vocab, where)
    if (!Array.isArray(merges)) throw mendError('ERR_TOKENIZER', `${where}: merges must be an array`)
    const list = (merges as unknown[]).filter((m) => !(typeof m === 'string' && (m === '' || m.startsWith('#version'))))
    const m = normalizeMerges(list, v, where)
    const ro = resolveOptions(opts)
    const added = buildAddedTokens(v, opts.addedTokens ?? [], [ro.eosToken, ro.bosToken, ro.unkToken, ro.padToken], where)
    checkAddedTokenIds(v, added, where)
    return new GPT2Tokenizer(makeDefinition(v, m, added), ro, where)
  }

  /** Validate a parsed tokenizer.json and normalize it (string merges, added token defaults). */
  private static definitionFromJson(raw: unknown, where: string): TokenizerDefinition {
    if (!isPlainObject(raw)) throw mendError('ERR_TOKENIZER', `${where}: expected a JSON object`)
    const model = raw.model
    if (!isPlainObject(model)) throw mendError('ERR_TOKENIZER', `${where}: missing "model" object`)
    if (model.type !== undefined && model.type !== 'BPE') {
      throw mendError('ERR_TOKENIZER', `${where}: model type ${JSON.stringify(model.type)} is not BPE`)
    }
    if (model.vocab === undefined || model.merges === undefined) {
      throw mendError('ERR_TOKENIZER', `${where}: BPE model needs "vocab" and "merges"`)
    }
    const vocab = vocabToMap(model.vocab, where)
    const merges = normalizeMerges(model.merges, vocab, where)
    const addedRaw = raw.added_tokens ?? []
    if (!Array.isArray(addedRaw)) throw mendError('ERR_TOKENIZER', `${where}: "added_tokens" must be an array`)
    const added = addedRaw.map((t) => normalizeAddedToken(t, where))
    checkAddedTokenIds(vocab, added, where)
    // Keys that are absent get GPT-2's components; explicit nulls are kept.
    const pick = (k: string, dflt: unknown) => (k in raw ? raw[k] : dflt)
    return {
      ...raw,
      version: typeof raw.version === 'string' ? raw.version : '1.0',
      truncation: raw.truncation ?? null,
      padding: raw.padding ?? null,
      added_tokens: added,
      normalizer: pick('normalizer', null),
      pre_tokenizer: pick('pre_tokenizer', { ...GPT2_PRE_TOKENIZER }),
      post_processor: pick('post_processor', { ...GPT2_POST_PROCESSOR }),
      decoder: pick('decoder', { ...GPT2_DECODER }),
      model: { ...model, type: 'BPE', vocab: Object.fromEntries(vocab), merges },
    }
  }

  /** Token ids for `text`; no special tokens are added. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') {
      throw mendError('ERR_TOKENIZER', `encode: expected a string, got ${typeof text}`)
    }
    if (text === '') return []
    if (this.missingBytes.size > 0) {
      for (const b of Buffer.from(text, 'utf8')) {
        if (this.missingBytes.has(b)) {
          throw mendError('ERR_TOKENIZER', `encode: the vocab has no token for byte 0x${b.toString(16).padStart(2, '0')} in the input`)
        }
      }
    }
    const parse = options.parseSpecialTokens !== false
    const tk = parse || this.def.added_tokens.length === 0 ? this.tok : this.plainTokenizer()
    const ids = tk.encode(text, { add_special_tokens: false }).ids
    for (let i = 0; i < ids.length; i++) {
      if (typeof ids[i] !== 'number') {
        throw mendError('ERR_TOKENIZER', `encode: produced a token missing from the vocab (position ${i})`)
      }
    }
    return ids
  }

  /**
   * Token ids for several texts, as transformers' `tokenizer(texts, padding=True)`: with `padding`,
   * rows are padded to the longest with padTokenId (or 0) on `paddingSide` ('right' by default;
   * 'left' for generation) and `attentionMask` marks the real tokens.
   */
  encodeBatch(texts: string[], options: EncodeOptions & { padding?: boolean; paddingSide?: 'left' | 'right' } = {}): { inputIds: number[][]; attentionMask: number[][] } {
    if (!Array.isArray(texts)) throw mendError('ERR_TOKENIZER', `encodeBatch: expected an array of strings, got ${typeof texts}`)
    const { padding, paddingSide, ...enc } = options
    if (paddingSide !== undefined && paddingSide !== 'left' && paddingSide !== 'right') {
      throw mendError('ERR_INVALID_ARG', `Expected 'left' or 'right' for encodeBatch paddingSide but received ${JSON.stringify(paddingSide)}`)
    }
    const rows = texts.map((t) => this.encode(t, enc))
    if (!padding) return { inputIds: rows, attentionMask: rows.map((r) => r.map(() => 1)) }
    const b = padRows(rows, this.padTokenId ?? 0, { side: paddingSide ?? 'right' })
    return { inputIds: b.inputIds, attentionMask: b.attentionMask }
  }

  /** Text for `ids` (invalid UTF-8 byte sequences become U+FFFD, as in HF's errors="replace"). */
  decode(ids: readonly number[] | ArrayLike<number>, options: DecodeOptions = {}): string {
    if (ids === null || typeof ids !== 'object' || typeof (ids as ArrayLike<number>).length !== 'number') {
      throw mendError('ERR_TOKENIZER', 'decode: expected an array of token ids')
    }
    const list = Array.from(ids as ArrayLike<number>)
    for (const id of list) {
      if (!Number.isInteger(id) || !this.idToTok.has(id)) {
        throw mendError('ERR_TOKENIZER', `decode: unknown token id ${String(id)} (vocab size ${this.vocabSize})`)
      }
    }
    const kept = options.skipSpecialTokens ? list.filter((id) => !this.specialIds.has(id)) : list
    if (kept.length === 0) return ''
    return this.tok.decode(kept, {
      skip_special_tokens: false,
      clean_up_tokenization_spaces: options.cleanUpTokenizationSpaces ?? this.opts.cleanUpTokenizationSpaces,
    })
  }

  /** Id of a token string (byte-level form, e.g. "Ġthe"), or undefined. */
  tokenToId(token: string): number | undefined {
    return this.tok.token_to_id(token)
  }

  /** Token string (byte-level form) of an id, or undefined. */
  idToToken(id: number): string | undefined {
    return Number.isInteger(id) ? this.idToTok.get(id) : undefined
  }

  /** Byte-level token strings for `text` (e.g. ["Hello", "ĠWorld"]). */
  tokenize(text: string, options: EncodeOptions = {}): string[] {
    return this.encode(text, options).map((id) => this.idToTok.get(id) as string)
  }

  /** A copy of the vocab including added tokens (token -> id). */
  getVocab(): Map<string, number> {
    const m = new Map(this.vocabMap)
    for (const a of this.def.added_tokens) m.set(a.content, a.id)
    return m
  }

  /** Merge rules as "a b" strings, in priority order. */
  getMerges(): string[] {
    return [...this.def.model.merges]
  }

  /** Added tokens (e.g. `<|endoftext|>`), sorted by id. */
  getAddedTokens(): AddedTokenSpec[] {
    return this.def.added_tokens.map((a) => ({ ...a }))
  }

  /** The tokenizer.json definition as written by `save` (a fresh copy). */
  toTokenizerJson(): Record<string, unknown> {
    return JSON.parse(this.tokenizerJsonText()) as Record<string, unknown>
  }

  /**
   * Write the tokenizer to `dir` (created if needed) in Hugging Face's format:
   * vocab.json + merges.txt (as GPT2Tokenizer.save_vocabulary writes them),
   * tokenizer.json (GPT2TokenizerFast), added_tokens.json when some added
   * tokens are not in the base vocab, tokenizer_config.json and
   * special_tokens_map.json.
   */
  async save(dir: string): Promise<void> {
    makeDirectory(dir)
    // vocab.json: json.dumps(encoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    await writeFile(path.join(dir, 'vocab.json'), vocabJson(sortByCodePoint([...this.vocabMap]), '') + '\n')
    await writeFile(path.join(dir, 'merges.txt'), '#version: 0.2\n' + this.def.model.merges.map((m) => m + '\n').join(''))
    await writeFile(path.join(dir, 'tokenizer.json'), this.tokenizerJsonText())

    const extraAdded = this.def.added_tokens.filter((a) => this.vocabMap.get(a.content) !== a.id)
    if (extraAdded.length > 0) {
      await writeFile(path.join(dir, 'added_tokens.json'),
        JSON.stringify(Object.fromEntries(extraAdded.map((a) => [a.content, a.id])), null, 2) + '\n')
    }
    const stm: Record<string, unknown> = {}
    if (this.opts.bosToken !== null) stm.bos_token = this.opts.bosToken
    if (this.opts.eosToken !== null) stm.eos_token = this.opts.eosToken
    if (this.opts.padToken !== null) stm.pad_token = this.opts.padToken
    if (this.opts.unkToken !== null) stm.unk_token = this.opts.unkToken
    if (this.opts.additionalSpecialTokens.length) stm.additional_special_tokens = this.opts.additionalSpecialTokens
    await writeFile(path.join(dir, 'special_tokens_map.json'), JSON.stringify(stm, null, 2) + '\n')

    const addedDecoder: Record<string, unknown> = {}
    for (const a of this.def.added_tokens) {
      addedDecoder[String(a.id)] = {
        content: a.content, lstrip: a.lstrip, normalized: a.normalized, rstrip: a.rstrip,
        single_word: a.single_word, special: a.special,
      }
    }
    const cfg: Record<string, unknown> = {
      add_bos_token: false,
      add_prefix_space: false,
      added_tokens_decoder: addedDecoder,
      bos_token: this.opts.bosToken,
      clean_up_tokenization_spaces: this.opts.cleanUpTokenizationSpaces,
      eos_token: this.opts.eosToken,
      errors: 'replace',
      ...(this.opts.modelMaxLength !== undefined ? { model_max_length: this.opts.modelMaxLength } : {}),
      pad_token: this.opts.padToken,
      tokenizer_class: 'GPT2Tokenizer',
      unk_token: this.opts.unkToken,
    }
    if (this.opts.additionalSpecialTokens.length) cfg.additional_special_tokens = this.opts.additionalSpecialTokens
    await writeFile(path.join(dir, 'tokenizer_config.json'), JSON.stringify(cfg, null, 2) + '\n')
  }

  /** tokenizer.json text: 2-space indent like HF, vocab in id order. */
  private tokenizerJsonText(): string {
    const sentinel = '\u0000__node_mend_vocab__\u0000'
    const obj = { ...this.def, model: { ...this.def.model, vocab: sentinel } }
    const byId = [...this.vocabMap].sort(([, a], [, b]) => a - b)
    const text = JSON.stringify(obj, null, 2)
    const needle = JSON.stringify(sentinel)
    const at = text.indexOf(needle)
    return text.slice(0, at) + vocabJson(byId, '    ') + text.slice(at + needle.length) + '\n'
  }

  /** Tokenizer for `parseSpecialTokens: false`: same model, no added-token splitting. */
  private plainTokenizer(): Tokenizer {
    if (!this.plainTok) {
      this.plainTok = new Tokenizer({ ...this.def, added_tokens: [] }, this.libConfig)
    }
    return this.plainTok
  }
}

/** Sort [key, value] pairs by key in Unicode code point order (Python's sort_keys). */
function sortByCodePoint(entries: [string, number][]): [string, number][] {
  const cmp = (a: string, b: string): number => {
    const ia = a[Symbol.iterator]()
    const ib = b[Symbol.iterator]()
    for (;;) {
      const x = ia.next()
      const y = ib.next()
      if (x.done || y.done) return x.done ? (y.done ? 0 : -1) : 1
      const cx = x.value.codePointAt(0) as number
      const cy = y.value.codePointAt(0) as number
      if (cx !== cy) return cx - cy
    }
  }
  return entries.sort((p, q) => cmp(p[0], q[0]))
}
