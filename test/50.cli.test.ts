// `node-mend train`: trains an editor for a Hugging Face directory from a zsRE file, logs every step,
// writes an editor that MEND.fromPretrained loads; Ctrl-C saves a checkpoint that --resume continues.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawn } from 'child_process'
import { GPT2LMHeadModel, MEND } from '../lib/index'
import { main } from '../lib/app/cli'
import { writeTinyModelDir } from './helpers/tiny'
import { runMain } from './helpers/cli'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mend-cli-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
const modelDir = path.join(tmp, 'model')
const inner = ['transformer.h.1.mlp.c_proj.weight', 'transformer.h.1.mlp.c_fc.weight']

t.before(async () => {
  await writeTinyModelDir(modelDir)
  const facts = [['France', 'Paris', 'Lyon'], ['Italy', 'Rome', 'Milan'], ['Spain', 'Madrid', 'Seville'], ['Japan', 'Tokyo', 'Osaka']]
  const zsre = facts.map(([c, , alt], i) => ({
    subject: c, src: `What is the capital of ${c}?`, alt: `${alt} city`, answers: ['x'], rephrase: `Which city is the capital of ${c}?`,
    loc: `nq question: who wrote book number ${i}`, loc_ans: 'an author',
  }))
  fs.writeFileSync(path.join(tmp, 'train.json'), JSON.stringify([...zsre, { src: 42 }]))
  fs.writeFileSync(path.join(tmp, 'val.json'), JSON.stringify(zsre.slice(0, 2)))
})

t.test('train from zsRE: log, editor file, checkpoint', async (t) => {
  const out = path.join(tmp, 'editor.safetensors')
  const { stderr: text } = await runMain(['train', '--model', modelDir, '--data', path.join(tmp, 'train.json'), '--val', path.join(tmp, 'val.json'),
    '--out', out, '--inner-params', ...inner, '--rank', '4', '--max-iters', '6', '--accumulate-bs', '2', '--val-interval', '3', '--lr', '1e-4', '--no-progress'])
  t.comment(text.trim())
  t.match(text, /record 4 skipped: .*src/, 'the malformed record is reported with its index')
  t.match(text, /validation at step 3/, 'validation is reported')
  t.match(text, /done: 6 steps/, 'finishes')
  const lines = fs.readFileSync(`${out}.log.jsonl`, 'utf8').trim().split('\n').map((l) => JSON.parse(l))
  t.equal(lines.length, 6, 'one JSONL line per step')
  t.same(lines.map((l) => l.step), [1, 2, 3, 4, 5, 6])
  t.ok(lines.every((l) => Number.isFinite(l.total) && Number.isFinite(l.editAcc)), 'losses and accuracy logged')
  t.ok(fs.existsSync(`${out}.ckpt.safetensors`), 'checkpoint written')
  const model = await GPT2LMHeadModel.fromPretrained(modelDir)
  const mend = await MEND.fromPretrained(model, out)
  t.same(mend.config.innerParams, inner, 'the editor file records its inner params')
  const ids = [464, 3139, 286, 4881, 318, 6342, 1748]
  const { edited } = await mend.edit({ inputIds: [ids], labels: [ids.map((v, i) => (i >= 5 ? v : -100))] })
  t.ok(Number.isFinite((await edited.model.forward({ inputIds: [ids] })).logits.data[0]), 'the trained editor edits')
})

t.test('Ctrl-C saves a checkpoint that --resume continues', async (t) => {
  const cli = path.join(__dirname, '..', 'dist', 'app', 'cli.js')
  t.ok(fs.existsSync(cli), 'dist/app/cli.js is built (npm install builds it; npm run build:ts rebuilds it)')
  const out = path.join(tmp, 'sig.safetensors')
  const child = spawn(process.execPath, [cli, 'train', '--model', modelDir, '--data', path.join(tmp, 'train.json'), '--out', out,
    '--inner-params', ...inner, '--rank', '4', '--max-iters', '100000', '--accumulate-bs', '3', '--no-progress'], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d) => { stderr += d })
  const log = `${out}.log.jsonl`
  const t0 = Date.now()
  while (!(fs.existsSync(log) && fs.readFileSync(log, 'utf8').split('\n').length > 3) && Date.now() - t0 < 60000) await new Promise((r) => setTimeout(r, 50))
  child.kill('SIGINT')
  const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)))
  t.equal(code, 130, `exits with 130 after Ctrl-C (${stderr.trim().split('\n').pop()})`)
  t.match(stderr, /continue with --resume/)
  const ck = `${out}.ckpt.safetensors`
  t.ok(fs.existsSync(ck), 'checkpoint written on Ctrl-C')
  t.ok(fs.existsSync(out), 'the editor so far is written on Ctrl-C too')
  t.match(stderr, /interrupted at step \d+: editor .*sig\.safetensors, as trained so far \(no validation yet\)/, 'and says which editor it is')
  const m = await GPT2LMHeadModel.fromPretrained(modelDir)
  const fromOut = await MEND.fromPretrained(m, out)
  const fromCk = await MEND.fromPretrained(m, ck)
  t.same(fromCk.config.innerParams, inner, 'a checkpoint where an editor is expected loads its editor')
  t.same(Array.from(fromCk.editorSpec().transforms[0].layers[0].u), Array.from(fromOut.editorSpec().transforms[0].layers[0].u), 'the same editor as the one written beside it')
  const logFile = path.join(tmp, 'a-log.safetensors')
  await (await fromOut.edit({ inputIds: [[464, 3139, 286, 4881]], labels: [[-100, -100, 286, 4881]] })).edited.model.saveEdits(logFile)
  await t.rejects(MEND.fromPretrained(m, logFile), { code: 'ERR_SAFETENSORS', message: /is a node-mend edit log .*not an editor.*loadEdits/ }, 'an edit log given as an editor says what it is')
  const stepsDone = fs.readFileSync(log, 'utf8').trim().split('\n').length
  const { stderr: resumed } = await runMain(['train', '--model', modelDir, '--data', path.join(tmp, 'train.json'), '--out', out,
    '--resume', ck, '--max-iters', String(stepsDone + 2), '--no-progress'])
  t.match(resumed, new RegExp(`done: ${stepsDone + 2} steps`), `resumed from step ${stepsDone} and finished at ${stepsDone + 2}`)
  const steps = fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l).step)
  t.same(steps.slice(-2), [stepsDone + 1, stepsDone + 2], 'the log continues after the resume')
})

t.test('node-mend edit prints completions before and after, and the metrics', async (t) => {
  const { stdout: text } = await runMain(['edit', '--model', modelDir, '--editor', path.join(tmp, 'editor.safetensors'),
    '--prompt', 'The capital of France is', '--target', 'Lyon', '--rephrase', 'France has its capital in', '--unrelated', 'Water boils at', '--max-new-tokens', '3'])
  t.comment(text.trim())
  t.match(text, /edit prompt: "The capital of France is"\n {2}before: .*\n {2}after: /, 'edit prompt shown before and after')
  t.match(text, /rephrasing: "France has its capital in"/)
  t.match(text, /unrelated: "Water boils at"/)
  t.notMatch(text, /<\|endoftext\|>/, 'completions carry no <|endoftext|> runs')
  const m = JSON.parse(text.split('metrics: ')[1])
  t.ok(typeof m.post.locality === 'number', `--unrelated gives the locality metric (${m.post.locality})`)
  t.ok(typeof m.time === 'number' && m.requestedRewrite.targetNew === 'Lyon', 'the API\'s field names (requestedRewrite, pre, post, time)')
  for (const k of ['rewrite_acc', 'rephrase_acc'] as const) {
    for (const when of ['pre', 'post'] as const) {
      const v = m[when][k]
      t.ok(typeof v === 'number' && v >= 0 && v <= 1, `${when}.${k} = ${v} is reported, in [0, 1]`)
    }
  }
  await t.rejects(main(['node', 'node-mend', 'edit', '--model', modelDir, '--editor', path.join(tmp, 'none.safetensors'), '--prompt', 'a', '--target', 'b']), { code: 'ERR_IO' }, 'a missing editor file is a coded error')
})

t.test('node-mend eval writes JSON, a Markdown report and an SVG plot', async (t) => {
  const outDir = path.join(tmp, 'eval')
  const { stdout } = await runMain(['eval', '--model', modelDir, '--editor', path.join(tmp, 'editor.safetensors'),
    '--data', path.join(tmp, 'train.json'), '--sequential', '3', '--out-dir', outDir, '--no-progress'])
  const res = JSON.parse(fs.readFileSync(path.join(outDir, 'results.json'), 'utf8'))
  t.match(res.provenance, { package: /^node-mend@/, model: path.resolve(modelDir), editor: path.resolve(path.join(tmp, 'editor.safetensors')), requests: 4, sequential: 3 }, 'results.json records what produced it')
  t.equal(res.requests.single.length, 4, 'and every request\'s metrics')
  t.same(res.requests.sequential.map((c: { edits: number; metrics: unknown[] }) => [c.edits, c.metrics.length]), [[1, 1], [2, 2], [3, 3]], 'per sequential checkpoint')
  t.equal(res.single.requests, 4, 'four usable requests (the malformed one is skipped)')
  t.same(res.sequential.map((r: { edits: number }) => r.edits), [1, 2, 3], 'sequential checkpoints 1, 2, 3')
  for (const row of [res.single, ...res.sequential]) {
    for (const k of ['reliability', 'generalization', 'locality', 'greedy']) t.ok(row[k] >= 0 && row[k] <= 1, `${k} at ${row.edits} edit(s) = ${row[k]}`)
  }
  const md = fs.readFileSync(path.join(outDir, 'report.md'), 'utf8')
  t.match(md, /\| edits \| requests \| reliability \| generalization \| locality \| portability \| greedy match \|/)
  t.equal(stdout, md, 'the report is also printed')
  const svg = fs.readFileSync(path.join(outDir, 'plot.svg'), 'utf8')
  t.match(svg, /^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/)
  t.equal((svg.match(/<polyline/g) ?? []).length, 4, 'reliability, generalization, locality and greedy-match lines')
  t.ok((svg.match(/<circle/g) ?? []).length >= 12, 'with markers')
  t.match(svg, /font-weight="bold">MEND under sequential editing</, 'a title'); t.match(svg, />metric after the last edit \(%\)</, 'a y-axis label')
  t.match(md, /Produced by:\n\n- package: node-mend@/, 'report.md says what produced it')
  for (const name of ['reliability', 'generalization', 'locality', 'greedy match']) t.match(svg, new RegExp(`>${name}<`), `legend: ${name}`)
})

t.test('the training ETA is formatted once (no "1m60s")', async (t) => {
  const { formatDuration } = await import('../lib/app/cli')
  t.equal(formatDuration(119.6), '2m00s', '119.6 s -> 2m00s (rounded before splitting)')
  t.equal(formatDuration(59.5), '1m00s')
  t.equal(formatDuration(7.2), '7s')
  t.equal(formatDuration(3723), '1h02m03s')
  t.equal(formatDuration(NaN), '-')
})
