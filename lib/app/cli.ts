#!/usr/bin/env node
/**
 * The `node-mend` command line. `node-mend train` trains a MEND editor for a Hugging Face GPT-2
 * directory from a zsRE or CounterFact JSON file, with a progress bar, a JSONL log of every step,
 * and a checkpoint on Ctrl-C that `--resume` continues. `node-mend edit` makes one edit, `node-mend eval`
 * scores an editor on a data set, `node-mend demo` shows a few edits end to end (lib/demo.ts).
 * `edit`, `eval` and `demo` default to the bundled WorldFacts model and editor (lib/assets.ts).
 */
import * as fs from 'fs'
import { Command, InvalidArgumentError } from 'commander'
import { SingleBar } from 'cli-progress'
import { EditRequest, loadCounterFact, loadZsre } from '../data/editdata'
import { GPT2Inference, GPT2LMHeadModel } from '../model/gpt2'
import { MEND } from '../mend/mend'
import { numThreads, setNumThreads } from '../core/native'
import { GPT2Tokenizer } from '../tokenizer/tokenizer'
import { EditTrainer, Progress, TrainBatch, trainBatches } from '../mend/trainer'
import { loadMENDHparams } from '../mend/hparams'
import { BaseEditor, greedyCompletions } from '../easyedit/base-editor'
import { EvalResult, evaluateEditor, markdownReport, svgPlot } from '../easyedit/eval'
import { BUNDLED_MEND_EDITOR_FILE } from '../data/assets'
import { runDemo } from './demo'
import { makeDirectory, writeFileAtomic } from '../core/files'
import { MendError, mendError } from '../core/errors'
import { worldFactsEvalRequests } from './factmodel'
import * as path from 'path'

// Decimal numbers only: Number() would read '' as 0 and '0x10' as 16.
const DECIMAL = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/
const num = (what: string, integer = false, min?: number) => (v: string): number => {
  const n = DECIMAL.test(v.trim()) ? Number(v) : NaN
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n)) || (min !== undefined && n < min)) {
    throw new InvalidArgumentError(`Expected ${integer ? 'an integer' : 'a number'} for ${what}${min !== undefined ? ` (at least ${min})` : ''} but received "${v}"`)
  }
  return n
}
const FORMATS = ['auto', 'zsre', 'counterfact']
const format = (v: string): string => {
  if (!FORMATS.includes(v)) throw new InvalidArgumentError(`Expected one of ${FORMATS.join(', ')} for --format but received "${v}"`)
  return v
}

/** A write stream whose failure (a bad --log path, a full disk) ends the command with one line. */
function openLog(file: string, flags: 'a' | 'w'): fs.WriteStream {
  let fd: number
  try {
    fd = fs.openSync(file, flags)
  } catch (e) {
    throw mendError('ERR_IO', `cannot write the log ${file}: ${(e as Error).message}`)
  }
  const s = fs.createWriteStream(file, { fd })
  s.on('error', (e) => fail(mendError('ERR_IO', `cannot write the log ${file}: ${e.message}`)))
  return s
}

async function loadRecords(file: string, format: string): Promise<{ records: EditRequest[]; skipped: { index: number; reason: string }[] }> {
  let f = format
  if (f === 'auto') {
    let first: unknown
    try {
      first = JSON.parse(fs.readFileSync(file, 'utf8'))[0]
    } catch {
      first = undefined // the loader reports the real error
    }
    f = first && typeof first === 'object' && 'requested_rewrite' in (first as object) ? 'counterfact' : 'zsre'
  }
  return f === 'counterfact' ? loadCounterFact(file) : loadZsre(file)
}

function toTrainBatches(tok: GPT2Tokenizer, records: EditRequest[], file: string): TrainBatch[] {
  const { batches, noLocality } = trainBatches(tok, records)
  if (noLocality) process.stderr.write(`${file}: ${noLocality} record(s) without a locality prompt skipped (training needs one)\n`)
  return batches
}

async function train(opts: Record<string, any>): Promise<void> {
  if (opts.threads) setNumThreads(opts.threads)
  const t0 = Date.now()
  const model = await GPT2LMHeadModel.fromPretrained(opts.model)
  const tok = await GPT2Tokenizer.fromPretrained(opts.model)
  const data = await loadRecords(opts.data, opts.format)
  for (const s of data.skipped) process.stderr.write(`${opts.data}: record ${s.index} skipped: ${s.reason}\n`)
  const trainSet = toTrainBatches(tok, data.records, opts.data)
  if (trainSet.length === 0) throw mendError('ERR_DATA', `${opts.data}: no usable training records`)
  let valSet: TrainBatch[] = []
  if (opts.val) {
    const v = await loadRecords(opts.val, opts.format)
    for (const s of v.skipped) process.stderr.write(`${opts.val}: record ${s.index} skipped: ${s.reason}\n`)
    valSet = toTrainBatches(tok, v.records, opts.val)
  }
  const runCfg = {
    lr: opts.lr, lrLr: opts.lrLr, cedit: opts.cedit, cloc: opts.cloc, accumulateBs: opts.accumulateBs, gradClip: opts.gradClip,
    maxIters: opts.maxIters, valInterval: opts.valInterval, valSteps: opts.valSteps, earlyStopPatience: opts.earlyStopPatience, seed: opts.seed,
  }
  for (const k of Object.keys(runCfg) as (keyof typeof runCfg)[]) if (runCfg[k] === undefined) delete runCfg[k]
  // EasyEdit's hparams YAML gives the defaults; command-line flags override it.
  const hp = opts.hparams ? loadMENDHparams(opts.hparams) : null
  if (hp) {
    for (const [k, v] of Object.entries(hp.trainer)) if ((runCfg as Record<string, unknown>)[k] === undefined) (runCfg as Record<string, unknown>)[k] = v
    if (runCfg.seed === undefined && hp.mend.seed !== undefined) runCfg.seed = hp.mend.seed // EasyEdit's one seed
    process.stderr.write(`node-mend train: hyper-parameters from ${opts.hparams}\n`)
  }
  const mendCfg = { ...(hp ? hp.mend : {}) } as Record<string, unknown>
  for (const [k, v] of Object.entries({ innerParams: opts.innerParams, rank: opts.rank, editLr: opts.editLr, nHidden: opts.nHidden, seed: opts.seed })) if (v !== undefined) mendCfg[k] = v
  const ckpt = opts.checkpoint ?? `${opts.out}.ckpt.safetensors`
  const trainer = opts.resume
    ? await EditTrainer.resume(model, opts.resume, runCfg)
    : new EditTrainer(new MEND(model, mendCfg), runCfg)
  const logFile = opts.log ?? `${opts.out}.log.jsonl`
  const log = openLog(logFile, opts.resume ? 'a' : 'w')
  process.stderr.write(`node-mend train: ${trainSet.length} training and ${valSet.length} validation requests; ` +
    `${trainer.mend.config.innerParams.length} inner params, rank ${trainer.mend.config.rank}; loaded in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`)

  const ac = new AbortController()
  const onSigint = () => { process.stderr.write('\nstopping after this step: saving a checkpoint…\n'); ac.abort() }
  process.once('SIGINT', onSigint)
  const start = trainer.steps
  const bar = opts.progress !== false && process.stderr.isTTY
    ? new SingleBar({
      format: 'train |{bar}| {value}/{total} | {speed} steps/s | loss {loss} edit {edit} loc {loc} acc {acc} | ETA {etaText}',
      stream: process.stderr, hideCursor: true,
    })
    : null
  bar?.start(trainer.config.maxIters, start, { speed: '0.00', loss: '-', edit: '-', loc: '-', acc: '-', etaText: '-' })
  const tRun = Date.now()
  let lastLine = 0
  // Seconds per step, smoothed (an exponential moving average over about 20 steps) for the ETA.
  let perStep = 0, tPrev = Date.now()
  const onProgress = (p: Progress) => {
    log.write(JSON.stringify({ time: new Date().toISOString(), ...p }) + '\n')
    const now = Date.now(), dt = (now - tPrev) / 1000
    tPrev = now
    perStep = perStep === 0 ? dt : 0.95 * perStep + 0.05 * dt
    const speed = (p.step - start) / Math.max(1e-3, (now - tRun) / 1000)
    const fields = { speed: speed.toFixed(2), loss: p.total.toFixed(4), edit: p.edit.toFixed(4), loc: p.loc.toExponential(2), acc: p.editAcc.toFixed(2), etaText: formatDuration((p.maxIters - p.step) * perStep) }
    if (bar) bar.update(p.step, fields)
    else if (Date.now() - lastLine > 5000 || p.val || p.step === p.maxIters) {
      lastLine = Date.now()
      process.stderr.write(`step ${p.step}/${p.maxIters} | ${fields.speed} steps/s | loss ${fields.loss} edit ${fields.edit} loc ${fields.loc} acc ${fields.acc} | ETA ${fields.etaText}\n`)
    }
    if (p.val) {
      const line = `validation at step ${p.step}: val edit loss ${p.val.edit.toFixed(4)}, val loc KL ${p.val.loc.toExponential(2)}, val edit acc ${p.val.editAcc.toFixed(2)} (best val loss ${p.best?.toFixed(4)})\n`
      if (bar) bar.updateETA()
      process.stderr.write(bar ? `\n${line}` : line)
    }
  }
  const res = await trainer.run(trainSet, valSet, { onProgress, signal: ac.signal })
  bar?.stop()
  process.removeListener('SIGINT', onSigint)
  await new Promise<void>((r) => log.end(r))
  await trainer.saveCheckpoint(ckpt)
  // The best editor so far is written on an interrupt too (the checkpoint alone is for resuming),
  // with the settings and the validation result that chose it.
  const metadata: Record<string, string> = {
    trainer: JSON.stringify(trainer.config), steps: String(res.steps), stopped: res.stopped,
    validation: JSON.stringify(res.best ?? null), data: JSON.stringify({ train: opts.data, val: opts.val ?? null }),
  }
  if (hp) metadata.hparams = JSON.stringify(hp.raw)
  await trainer.bestMEND().save(opts.out, { metadata })
  if (res.stopped === 'aborted') {
    const which = res.best ? `the best so far (validation at step ${res.best.step})` : 'as trained so far (no validation yet)'
    process.stderr.write(`interrupted at step ${res.steps}: editor ${opts.out}, ${which}; checkpoint ${ckpt} (continue with --resume ${ckpt})\n`)
    process.exitCode = 130
    return
  }
  const best = res.best ? ` (best validation at step ${res.best.step}: edit ${res.best.val.edit.toFixed(4)}, loc ${res.best.val.loc.toExponential(2)})` : ''
  process.stderr.write(`done: ${res.steps} steps (${res.stopped})${best}; editor ${opts.out}, checkpoint ${ckpt}, log ${logFile}\n`)
}

/** Seconds as "1h02m03s" / "2m05s" / "7s" (rounded once, so never "1m60s"). */
export function formatDuration(sec: number): string {
  if (!Number.isFinite(sec) || sec < 0) return '-'
  const t = Math.round(sec), h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = t % 60
  const two = (x: number) => String(x).padStart(2, '0')
  return h > 0 ? `${h}h${two(m)}m${two(s)}s` : m > 0 ? `${m}m${two(s)}s` : `${s}s`
}

// node-mend edit: one edit, with the greedy completions before and after and EasyEdit's metrics.
async function edit(opts: Record<string, any>): Promise<void> {
  if (opts.threads) setNumThreads(opts.threads)
  const editor = await BaseEditor.fromPretrained({ model: opts.model, editor: opts.editor })
  const prompts: string[] = [opts.prompt, ...(opts.rephrase ?? []), ...(opts.unrelated ?? [])]
  // Completions without <|endoftext|> runs (a row that ends early is padded with them).
  const complete = async (m: GPT2Inference) => (await greedyCompletions(m, editor.tokenizer, prompts, opts.maxNewTokens, { skipSpecialTokens: true })).text
  const before = await complete(editor.model)
  const unrelated: string[] = opts.unrelated ?? []
  const nReph = opts.rephrase?.length ?? 0
  // Locality on the unrelated prompts: their own pre-edit completions are the answers (EasyEdit's
  // locality compares the post-edit predictions with the pre-edit ones on those tokens).
  const loc = unrelated.map((p, i) => ({ prompt: p, answer: before[1 + nReph + i].trim() })).filter((x) => x.answer !== '')
  const { metrics, edited } = await editor.edit({
    prompts: opts.prompt, targetNew: opts.target,
    rephrasePrompts: nReph ? [opts.rephrase] : undefined,
    localityInputs: loc.length ? { prompt: [loc.map((x) => x.prompt)], groundTruth: [loc.map((x) => x.answer)] } : undefined,
  })
  const after = await complete(edited.model)
  const out = process.stdout
  prompts.forEach((p, i) => {
    const kind = i === 0 ? 'edit prompt' : i <= nReph ? 'rephrasing' : 'unrelated'
    out.write(`${kind}: ${JSON.stringify(p)}\n  before: ${JSON.stringify(before[i])}\n  after:  ${JSON.stringify(after[i])}\n`)
  })
  const m = metrics[0]
  out.write(`metrics: ${JSON.stringify({ requestedRewrite: m.requestedRewrite, pre: m.pre, post: m.post, time: Math.round(m.time * 10) / 10 })}\n`)
}

// node-mend eval: metrics of an editor on a data set; writes results.json, report.md and plot.svg.
async function evalCmd(opts: Record<string, any>): Promise<void> {
  if (opts.threads) setNumThreads(opts.threads)
  makeDirectory(opts.outDir) // before the evaluation: a directory that cannot be made fails at once
  const editor = await BaseEditor.fromPretrained({ model: opts.model, editor: opts.editor })
  let all: EditRequest[]
  if (opts.data === undefined) {
    all = worldFactsEvalRequests()
  } else {
    const data = await loadRecords(opts.data, opts.format)
    for (const s of data.skipped) process.stderr.write(`${opts.data}: record ${s.index} skipped: ${s.reason}\n`)
    all = data.records
  }
  const records = opts.n ? all.slice(0, opts.n) : all
  const bar = opts.progress !== false && process.stderr.isTTY
    ? new SingleBar({ format: 'eval |{bar}| {percentage}% | {value}/{total} steps (edits, refinement, measurements) | ETA {eta_formatted}', stream: process.stderr, hideCursor: true })
    : null
  let started = false
  const onBar = (done: number, total: number) => { if (bar) { if (!started) { bar.start(total, 0); started = true } bar.setTotal(total); bar.update(done) } }
  const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { name: string; version: string }
  const provenance = {
    package: `${pkg.name}@${pkg.version}`, date: new Date().toISOString(), node: process.version, threads: numThreads(),
    model: opts.model ? path.resolve(opts.model) : 'the bundled WorldFacts model', editor: opts.editor ? path.resolve(opts.editor) : 'the bundled editor',
    editorConfig: { ...editor.mend.config, layerActivations: editor.mend.layerActivations },
    data: opts.data ? path.resolve(opts.data) : 'WorldFacts held-out-subject edits (worldFactsEvalRequests, seed 2)',
    requests: records.length, sequential: opts.sequential ?? 0,
  }
  // The second editor of the comparison: --compare, or for the bundled editor (no --editor, no
  // --model) the bundled classic MEND editor, on the same edits (--no-compare skips it).
  let compareFile: string | undefined = typeof opts.compare === 'string' ? opts.compare : undefined
  if (opts.compare !== false && typeof opts.compare !== 'string' && opts.editor === undefined && opts.model === undefined && fs.existsSync(BUNDLED_MEND_EDITOR_FILE)) compareFile = BUNDLED_MEND_EDITOR_FILE
  const res = await evaluateEditor(editor, records, {
    sequential: opts.sequential, provenance,
    onProgress: onBar,
  })
  bar?.stop()
  let cmp: EvalResult | undefined
  let cmpKind = 'mend'
  if (compareFile) {
    process.stderr.write(`comparing with ${compareFile}\n`)
    const other = new BaseEditor(await MEND.fromPretrained(editor.model as GPT2LMHeadModel, path.resolve(compareFile)), editor.tokenizer)
    cmpKind = other.mend.kind
    started = false
    cmp = await evaluateEditor(other, records, {
      sequential: opts.sequential,
      provenance: { ...provenance, editor: path.resolve(compareFile), editorConfig: { ...other.mend.config, layerActivations: other.mend.layerActivations } },
      onProgress: onBar,
    })
    bar?.stop()
  }
  const title = `node-mend eval: ${opts.data === undefined ? 'WorldFacts held-out-subject edits' : path.basename(opts.data)}`
  const kindName = (k: string) => (k === 'malmen' ? 'lifelong (malmen)' : 'MEND')
  let report = markdownReport(res, cmp ? `${title} — ${kindName(editor.mend.kind)} editor` : title)
  if (cmp) report += '\n' + markdownReport(cmp, `compared with: ${kindName(cmpKind)} editor (${path.basename(compareFile!)})`).replace(/^# /, '## ')
  writeFileAtomic(path.join(opts.outDir, 'results.json'), JSON.stringify(cmp ? { ...res, compare: cmp } : res, null, 2) + '\n')
  writeFileAtomic(path.join(opts.outDir, 'report.md'), report)
  if (res.sequential.length) {
    const plotTitle = cmp ? `sequential editing: ${kindName(editor.mend.kind)} (solid) and ${kindName(cmpKind)} (dashed)` : 'MEND under sequential editing'
    writeFileAtomic(path.join(opts.outDir, 'plot.svg'), svgPlot(res.sequential, plotTitle,
      cmp ? { rows: cmp.sequential, label: kindName(cmpKind), mainLabel: kindName(editor.mend.kind) } : undefined))
  }
  process.stdout.write(report)
  process.stderr.write(`wrote ${path.join(opts.outDir, 'report.md')}, results.json${res.sequential.length ? ' and plot.svg' : ''}\n`)
}

// node-mend demo: a few edits end to end (lib/demo.ts); colors only on a terminal.
async function demo(opts: Record<string, any>): Promise<void> {
  await runDemo({
    model: opts.model, editor: opts.editor, n: opts.n, seed: opts.seed, maxNewTokens: opts.maxNewTokens, threads: opts.threads,
    color: !!process.stdout.isTTY && !process.env.NO_COLOR,
  }, (s) => { process.stdout.write(s) })
}

export function main(argv: string[]): Promise<void> {
  const program = new Command()
  program.name('node-mend').description('Knowledge editing for GPT-2 with MEND')
  program.command('train')
    .description('Train a MEND editor for a Hugging Face GPT-2 directory from zsRE or CounterFact JSON')
    .requiredOption('--model <dir>', 'Hugging Face GPT-2 directory (config.json, model.safetensors, tokenizer)')
    .requiredOption('--data <file>', 'training requests (zsRE or CounterFact JSON)')
    .requiredOption('--out <file>', 'where to write the trained editor (safetensors)')
    .option('--val <file>', 'validation requests (same format)')
    .option('--hparams <file>', "EasyEdit's MEND hyper-parameter YAML (hparams/MEND/*.yaml); flags override it")
    .option('--format <f>', 'auto, zsre or counterfact', format, 'auto')
    .option('--inner-params <names...>', 'Conv1D weights to edit (default: mlp.c_proj and mlp.c_fc of the last 3 blocks)')
    .option('--rank <n>', 'editor rank', num('--rank', true, 1))
    .option('--n-hidden <n>', 'editor hidden layers', num('--n-hidden', true, 0))
    .option('--edit-lr <x>', 'initial α', num('--edit-lr'))
    .option('--lr <x>', 'editor learning rate (default 1e-6)', num('--lr'))
    .option('--lr-lr <x>', 'α learning rate (default 1e-4)', num('--lr-lr'))
    .option('--cedit <x>', 'edit loss weight (default 0.1)', num('--cedit'))
    .option('--cloc <x>', 'locality loss weight (default 1.0)', num('--cloc'))
    .option('--accumulate-bs <n>', 'steps per optimizer step (default 10)', num('--accumulate-bs', true, 1))
    .option('--grad-clip <x>', 'global gradient-norm clip (default 100)', num('--grad-clip'))
    .option('--max-iters <n>', 'training steps (default 1000)', num('--max-iters', true, 0))
    .option('--val-interval <n>', 'validate every n steps (default 100)', num('--val-interval', true, 1))
    .option('--val-steps <n>', 'validation requests per validation (default all)', num('--val-steps', true, 0))
    .option('--early-stop-patience <n>', 'steps without improvement before stopping (default 20000)', num('--early-stop-patience', true, 0))
    .option('--seed <n>', 'seed of the data order and editor initialisation', num('--seed', true, 0))
    .option('--log <file>', 'JSONL log of every step (default <out>.log.jsonl)')
    .option('--checkpoint <file>', 'checkpoint path (default <out>.ckpt.safetensors)')
    .option('--resume <file>', 'continue from a checkpoint')
    .option('--threads <n>', 'native threads', num('--threads', true, 1))
    .option('--no-progress', 'plain progress lines instead of a progress bar')
    .action(train)
  program.command('edit')
    .description('Edit one fact and show the greedy completions before and after, with the metrics')
    .requiredOption('--prompt <text>', 'the edit prompt, e.g. "The capital of France is"')
    .requiredOption('--target <text>', 'the new target, e.g. "Lyon"')
    .option('--model <dir>', 'Hugging Face GPT-2 directory with its tokenizer (default: the bundled WorldFacts model)')
    .option('--editor <file>', 'MEND editor file (default: the bundled editor, with the bundled model)')
    .option('--rephrase <text...>', 'rephrasings of the prompt (generalization)')
    .option('--unrelated <text...>', 'unrelated prompts (locality, shown before and after)')
    .option('--max-new-tokens <n>', 'tokens to generate for each completion', num('--max-new-tokens', true, 1), 8)
    .option('--threads <n>', 'native threads', num('--threads', true, 1))
    .action(edit)
  program.command('eval')
    .description('Evaluate an editor on zsRE or CounterFact requests: reliability, generalization, locality; optionally a sequential-editing curve')
    .option('--data <file>', 'requests (zsRE or CounterFact JSON; default: the WorldFacts held-out-subject edits the bundled editor never saw)')
    .option('--model <dir>', 'Hugging Face GPT-2 directory with its tokenizer (default: the bundled WorldFacts model)')
    .option('--editor <file>', 'MEND editor file (default: the bundled editor, with the bundled model)')
    .option('--format <f>', 'auto, zsre or counterfact', format, 'auto')
    .option('-n, --n <count>', 'evaluate only the first n requests', num('--n', true, 1))
    .option('--sequential <n>', 'also measure after 1, 2, 5, 10, … up to n accumulated edits', num('--sequential', true, 0))
    .option('--compare <file>', 'a second editor file evaluated on the same edits (default with the bundled editor: the bundled classic MEND editor)')
    .option('--no-compare', 'no second editor')
    .option('--out-dir <dir>', 'where to write report.md, results.json and plot.svg', 'mend-eval')
    .option('--threads <n>', 'native threads', num('--threads', true, 1))
    .option('--no-progress', 'no progress bar')
    .action(evalCmd)
  program.command('demo')
    .description('Edit a few held-out WorldFacts facts: completions before and after, metrics, edit time, and each edit undone')
    .option('--model <dir>', 'Hugging Face GPT-2 directory with its tokenizer (default: the bundled WorldFacts model)')
    .option('--editor <file>', 'MEND editor file (default: the bundled editor, with the bundled model)')
    .option('-n, --n <edits>', 'number of edits', num('--n', true, 1), 3)
    .option('--seed <n>', 'seed of the sampled requests', num('--seed', true, 0), 0)
    .option('--max-new-tokens <n>', 'greedy tokens per completion', num('--max-new-tokens', true, 1), 6)
    .option('--threads <n>', 'native threads', num('--threads', true, 1))
    .action(demo)
  return program.parseAsync(argv).then(() => undefined)
}

/**
 * Ends the command on an error: a user error (a MendError, with its code) is one line; anything
 * else is a programming error and keeps its stack.
 */
function fail(e: unknown): never {
  const err = e as Error & { code?: string }
  if (err instanceof MendError) process.stderr.write(`node-mend: ${err.message} [${err.code}]\n`)
  else process.stderr.write(`node-mend: ${err && err.stack ? err.stack : String(err)}\n`)
  process.exit(1)
}

if (require.main === module) {
  // A closed stdout (`node-mend eval | head`) ends the command quietly; other write errors are one line.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: Error & { code?: string }) => {
      if (e.code === 'EPIPE') process.exit(0)
      if (stream === process.stdout) fail(mendError('ERR_IO', `cannot write the output: ${e.message}`))
      process.exit(1)
    })
  }
  main(process.argv).catch(fail)
}
