// `node-mend demo` / runDemo: a few WorldFacts edits on a tiny model with an (untrained) editor:
// before/after completions, metrics, edit time, and each edit undone back to the pre-edit
// completion. Also BaseEditor.fromPretrained's bundled defaults and their errors.
import t, { type Test } from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawnSync } from 'child_process'
import { BaseEditor, GPT2LMHeadModel, GPT2Tokenizer, MEND, editorRequest } from '../lib/index'
import { worldFactsEvalRequests } from '../lib/app/factmodel'
import { runDemo } from '../lib/app/demo'
import { bundledAssetsPresent, BUNDLED_EDITOR_FILE, BUNDLED_MEND_EDITOR_FILE, BUNDLED_MODEL_DIR } from '../lib/data/assets'
import { runMain } from './helpers/cli'
import { writeTinyModelDir } from './helpers/tiny'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-demo-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const modelDir = path.join(tmp, 'model')
const editorFile = path.join(tmp, 'editor.safetensors')
const cli = path.join(__dirname, '..', 'dist', 'app', 'cli.js')

t.before(async () => {
  const model = await writeTinyModelDir(modelDir)
  // a large α so that the untrained editor's edits visibly change the model
  const mend = new MEND(model, { innerParams: ['transformer.h.1.mlp.c_proj.weight', 'transformer.h.1.mlp.c_fc.weight'], rank: 4, editLr: 10 })
  await mend.save(editorFile)
})

const Q = '"(?:[^"\\\\]|\\\\.)*"'
const ROW = new RegExp(`^ {2}(edit|held-out|unrelated) +(${Q}) +(${Q}) +(${Q})$`, 'gm')

/** Checks the printed structure of a demo run against what runDemo returned. */
function checkOutput(t: Test, text: string, edits: number) {
  t.notMatch(text, /\x1b\[/, 'no ANSI escapes')
  t.match(text, new RegExp(`^MEND demo: ${edits} edits? of held-out WorldFacts facts`), 'header')
  const blocks = text.split(/\n(?=\[\d+\/\d+\] )/).slice(1)
  t.equal(blocks.length, edits, `${edits} edit blocks`)
  blocks.forEach((b, i) => {
    t.match(b, new RegExp(`^\\[${i + 1}/${edits}\\] (${Q}) -> (${Q}) {2}\\(was (${Q})\\)\\n`), `edit ${i + 1}: request line`)
    const prompt = JSON.parse(b.match(new RegExp(`^\\[\\d+/\\d+\\] (${Q})`))![1])
    const rows = [...b.matchAll(ROW)].map((m) => ({ kind: m[1], prompt: JSON.parse(m[2]), before: JSON.parse(m[3]), after: JSON.parse(m[4]) }))
    t.same(rows.map((r) => r.kind), ['edit', 'held-out', 'unrelated'], `edit ${i + 1}: before/after rows for the edit prompt, a held-out phrasing and an unrelated prompt`)
    t.equal(rows[0].prompt, prompt, 'the first row is the edit prompt')
    t.match(b, /\n {2}metrics {2}rewrite_acc \d\.\d\d -> \d\.\d\d \| rephrase_acc \d\.\d\d -> \d\.\d\d \| locality \d\.\d\d/, `edit ${i + 1}: metrics line`)
    t.match(b, /\n {2}edit {5}\d+\.\d ms\n/, `edit ${i + 1}: edit time`)
    const undone = b.match(new RegExp(`\\n {2}undone {3}(${Q}) -> (${Q}) {2}\\(= before`))
    t.ok(undone, `edit ${i + 1}: undone line`)
    if (undone) {
      t.equal(JSON.parse(undone[1]), prompt)
      t.equal(JSON.parse(undone[2]), rows[0].before, `edit ${i + 1}: undone completion = the pre-edit completion`)
    }
  })
  t.match(text, /\ntotal \d+\.\d\d s for \d+ edits? \(loading \d+\.\d\d s\)\n$/, 'total time')
}

t.test('runDemo prints each edit: completions before/after, metrics, time, undone', async (t) => {
  const out: string[] = []
  const log: string[] = []
  const res = await runDemo({ model: modelDir, editor: editorFile, log: (s) => log.push(s) }, (s) => out.push(s))
  const text = out.join('')
  t.comment(text)
  t.match(log.join(''), /^node-mend demo: loading .*\n$/, 'one loading note on the log stream')
  t.equal(res.edits.length, 3, 'three edits by default')
  checkOutput(t, text, 3)
  for (const e of res.edits) {
    t.equal(e.undone, e.rows[0].before, 'undone = before')
    t.ok(e.editMs > 0 && e.editMs === e.metrics.time, 'edit time from BaseEditor.edit')
    t.not(e.request.rephrasePrompts.indexOf(e.rows[1].prompt), -1, 'the held-out row is a rephrase prompt of the request')
    t.equal(e.rows[2].prompt, e.request.localityPrompts[0].prompt, 'the unrelated row is a locality prompt')
    for (const k of ['rewrite_acc', 'rephrase_acc'] as const) t.ok(e.metrics.pre[k]! >= 0 && e.metrics.post[k]! <= 1, k)
  }
  t.ok(res.edits.some((e) => e.rows.some((r) => r.after !== r.before)), 'some completion changes after an edit')

  // deterministic: the same seed gives the same text (but for times)
  const out2: string[] = []
  await runDemo({ model: modelDir, editor: editorFile, log: () => {} }, (s) => out2.push(s))
  const strip = (s: string) => s.replace(/\d+\.\d+ (ms|s)/g, 'T')
  t.equal(strip(out2.join('')), strip(text), 'same seed, same output')
  const out3: string[] = []
  await runDemo({ model: modelDir, editor: editorFile, seed: 5, n: 1, log: () => {} }, (s) => out3.push(s))
  t.not(strip(out3.join('')), strip(text), 'another seed, other requests')

  const colored: string[] = []
  await runDemo({ model: modelDir, editor: editorFile, n: 1, color: true, log: () => {} }, (s) => colored.push(s))
  t.match(colored.join(''), /\x1b\[/, 'color: true adds ANSI escapes')

  await t.rejects(runDemo({ model: modelDir, editor: editorFile, n: 0, log: () => {} }, () => {}), { code: 'ERR_INVALID_ARG' }, 'n must be >= 1')
  await t.rejects(runDemo({ model: path.join(tmp, 'nope'), editor: editorFile, log: () => {} }, () => {}), { code: 'ERR_IO' }, 'a missing model dir is a coded error')
})

t.test('node-mend demo: --n 2, --help, errors', async (t) => {
  const { stdout, stderr } = await runMain(['demo', '--model', modelDir, '--editor', editorFile, '--n', '2', '--max-new-tokens', '4', '--seed', '1'])
  checkOutput(t, stdout, 2)
  t.match(stderr, /^node-mend demo: loading /, 'loading note on stderr')

  t.ok(fs.existsSync(cli), 'dist/app/cli.js is built')
  const help = spawnSync(process.execPath, [cli, 'demo', '--help'], { encoding: 'utf8' })
  t.equal(help.status, 0, 'demo --help exits 0')
  for (const o of ['--model', '--editor', '-n, --n <edits>', '--seed', '--max-new-tokens', '--threads']) t.ok(help.stdout.includes(o), `help lists ${o}`)
  t.match(help.stdout, /default: 3/, 'help shows the default number of edits')
  const top = spawnSync(process.execPath, [cli, '--help'], { encoding: 'utf8' })
  t.match(top.stdout, /\n {2}demo /, 'demo is listed in the top-level help')
  for (const cmd of ['edit', 'eval']) {
    const h = spawnSync(process.execPath, [cli, cmd, '--help'], { encoding: 'utf8' })
    t.match(h.stdout.replace(/\s+/g, ' '), /--model <dir> Hugging Face GPT-2 directory with its tokenizer \(default: the bundled WorldFacts model\)/, `${cmd}: --model is optional, defaulting to the bundled model`)
  }

  const missing = spawnSync(process.execPath, [cli, 'demo', '--model', path.join(tmp, 'nope'), '--editor', editorFile], { encoding: 'utf8' })
  t.equal(missing.status, 1, 'a missing model dir: exit code 1')
  t.match(missing.stderr, /^node-mend demo: loading .*\nnode-mend: .*nope.* \[ERR_IO\]\n$/, 'one coded error line, no stack trace')
  t.equal(missing.stdout, '', 'nothing on stdout')
  const noEditor = spawnSync(process.execPath, [cli, 'demo', '--model', modelDir], { encoding: 'utf8' })
  t.equal(noEditor.status, 1, 'a non-bundled model without --editor: exit code 1')
  t.match(noEditor.stderr, /editor is missing.*\[ERR_INVALID_ARG\]/)
  const bad = spawnSync(process.execPath, [cli, 'demo', '--n', 'x'], { encoding: 'utf8' })
  t.not(bad.status, 0, 'a non-integer --n is refused')
  t.match(bad.stderr, /Expected an integer for --n/)
})

t.test('BaseEditor.fromPretrained defaults to the bundled assets', async (t) => {
  await t.rejects(BaseEditor.fromPretrained({ model: modelDir }), { code: 'ERR_INVALID_ARG', message: /editor is missing.*bundled editor is the default only for the bundled model/ },
    'no editor for a non-bundled model: a clear coded error')
  const model = await GPT2LMHeadModel.fromPretrained(modelDir)
  await t.rejects(BaseEditor.fromPretrained({ model, tokenizer: modelDir }), { code: 'ERR_INVALID_ARG', message: /editor is missing/ }, 'same for a loaded model')
  await t.rejects(BaseEditor.fromPretrained({ model: 42 as unknown as string }), { code: 'ERR_INVALID_ARG', message: /Expected a directory path or a GPT2LMHeadModel for BaseEditor.fromPretrained model but received 42/ }, 'a bad model type is still reported as such')
  const explicit = await BaseEditor.fromPretrained({ model: modelDir, editor: editorFile })
  t.ok(explicit instanceof BaseEditor, 'explicit model and editor still load')
  t.ok(bundledAssetsPresent(), `the bundled assets are in the repository (${BUNDLED_MODEL_DIR})`)
  const e = await BaseEditor.fromPretrained()
  t.ok(e instanceof BaseEditor, 'no options: the bundled model and editor')
  t.equal(e.tokenizer.vocabSize, e.model.config.vocabSize, 'the bundled tokenizer fits the bundled model')
  const e2 = await BaseEditor.fromPretrained({ model: BUNDLED_MODEL_DIR })
  t.same(e2.mend.config.innerParams, e.mend.config.innerParams, 'the bundled model dir without an editor: the bundled editor')
  t.ok(fs.existsSync(BUNDLED_EDITOR_FILE))
})

t.test('the bundled demo', async (t) => {
  const out: string[] = []
  const res = await runDemo({ log: () => {} }, (s) => out.push(s))
  t.comment(out.join(''))
  checkOutput(t, out.join(''), 3)
  // The bundled (lifelong) editor's greedy exact match on held-out single edits is 80.8% (README,
  // node-mend eval), so one of three random demo edits can miss; two of three must land (p ≈ 0.90).
  let landed = 0
  for (const e of res.edits) {
    const ok = e.rows[0].after.trim().startsWith(e.request.targetNew)
    landed += ok ? 1 : 0
    t.comment(`edit prompt ${ok ? 'now completes' : 'does NOT complete'} with the target ${JSON.stringify(e.request.targetNew)}: ${JSON.stringify(e.rows[0].after)} (rewrite_acc ${e.metrics.post.rewrite_acc})`)
    if (!ok) t.ok(e.metrics.post.rewrite_acc < 1, 'a missed greedy completion shows in the teacher-forced metric too')
    t.equal(e.rows[0].before.trim().startsWith(e.request.groundTruth!), true, `before the edit it completed with the true answer: ${JSON.stringify(e.rows[0].before)}`)
  }
  t.ok(landed >= 2, `${landed} of 3 demo edits complete greedily with the new target`)
  t.comment(`total ${res.totalMs} ms`)
})

t.test('edit and eval default to the bundled model, editor and WorldFacts evaluation set', async (t) => {
  const ed = spawnSync(process.execPath, [cli, 'edit', '--prompt', 'The capital of France is', '--target', 'Berlin', '--unrelated', 'The capital of Japan is'], { encoding: 'utf8' })
  t.equal(ed.status, 0, `edit exits 0 ${ed.stderr}`)
  t.match(ed.stdout, /edit prompt: "The capital of France is"\n {2}before: " Paris[^\n]*\n {2}after: {2}" Berlin/, 'the bundled model learns the new capital')
  t.match(ed.stdout, /unrelated: "The capital of Japan is"\n {2}before: " Tokyo[^\n]*\n {2}after: {2}" Tokyo/, 'and keeps an unrelated one')

  const outDir = path.join(tmp, 'eval-bundled')
  const ev = spawnSync(process.execPath, [cli, 'eval', '-n', '4', '--sequential', '2', '--out-dir', outDir, '--no-progress'], { encoding: 'utf8' })
  t.equal(ev.status, 0, `eval exits 0 ${ev.stderr}`)
  const res = JSON.parse(fs.readFileSync(path.join(outDir, 'results.json'), 'utf8'))
  t.equal(res.single.requests, 4, 'the first 4 WorldFacts held-out edits')
  t.ok(typeof res.single.portability === 'number', 'portability is reported for WorldFacts edits')
  t.match(fs.readFileSync(path.join(outDir, 'report.md'), 'utf8'), /WorldFacts held-out-subject edits/)
  // With the bundled (lifelong) editor, eval compares with the bundled classic MEND editor on the same edits.
  t.equal(res.provenance.editorConfig.kind, 'malmen', 'the bundled default editor is the lifelong one')
  t.ok(res.compare && res.compare.provenance.editorConfig.kind === 'mend' && res.compare.single.requests === 4, 'results.json holds the classic editor on the same 4 edits')
  t.same(res.compare.sequential.map((r: { edits: number }) => r.edits), res.sequential.map((r: { edits: number }) => r.edits), 'the same sequential checkpoints')
  const svg = fs.readFileSync(path.join(outDir, 'plot.svg'), 'utf8')
  t.match(svg, /stroke-dasharray/, 'the plot draws the classic editor dashed')
  t.match(svg, /lifelong \(malmen\)/, 'and labels both')
  const ev2 = spawnSync(process.execPath, [cli, 'eval', '-n', '2', '--no-compare', '--out-dir', outDir + '-2', '--no-progress'], { encoding: 'utf8' })
  t.equal(ev2.status, 0, `eval --no-compare exits 0 ${ev2.stderr}`)
  t.notOk(JSON.parse(fs.readFileSync(path.join(outDir + '-2', 'results.json'), 'utf8')).compare, '--no-compare: one editor')
})

t.test('the bundled lifelong editor holds 30 sequential edits that the bundled classic MEND editor loses', async (t) => {
  const model = await GPT2LMHeadModel.fromPretrained(BUNDLED_MODEL_DIR)
  const tok = await GPT2Tokenizer.fromPretrained(BUNDLED_MODEL_DIR)
  const reqs = worldFactsEvalRequests().slice(0, 30)
  const run = async (file: string) => {
    const editor = new BaseEditor(await MEND.fromPretrained(model, file), tok)
    const [ms] = await editor.sequentialCurve(editorRequest(reqs), [30])
    return ms.reduce((a, m) => a + m.post.rewrite_acc, 0) / ms.length
  }
  const lifelong = await run(BUNDLED_EDITOR_FILE), classic = await run(BUNDLED_MEND_EDITOR_FILE)
  t.comment(`reliability over the 30 edits after all 30: lifelong ${(100 * lifelong).toFixed(1)}%, classic MEND ${(100 * classic).toFixed(1)}%`)
  // README: 95.7% after 20 and 89.9% after 50 edits for the lifelong editor, 14.3% and 3.9% for classic MEND.
  t.ok(lifelong >= 0.85, 'the lifelong editor keeps at least 85% of them')
  t.ok(lifelong >= classic + 0.5, 'at least 50 points more than classic MEND')
})

t.test("the README's twenty-line example (examples/quickstart.js) prints what the README says", async (t) => {
  const r = spawnSync(process.execPath, [path.join(__dirname, '..', 'examples', 'quickstart.js')], { encoding: 'utf8' })
  t.equal(r.status, 0, `exits 0 ${r.stderr}`)
  t.match(r.stdout, /\{ rewrite_acc: 1, rephrase_acc: 1, locality: 1 \}\nedited: +Berlin\nbase: +Paris\nundone: +Paris\n/, r.stdout)
})
