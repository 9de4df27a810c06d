#!/usr/bin/env node
/**
 * `npm run assets`: rebuilds the bundled WorldFacts model and its MEND editor in
 * assets/worldfacts-gpt2/ from the world-countries data, reproducibly (seeded; the same machine
 * and thread count give the same bytes), and prints how long each stage took.
 *
 *   1. a byte-level BPE vocabulary trained on the pretraining corpus  (vocab.json, merges.txt)
 *   2. a small GPT-2 pretrained on the training phrasings              (config.json, model.safetensors,
 *                                                                       tokenizer_config.json)
 *   3. a MEND editor trained with EditTrainer on training-subject edits (mend-editor.safetensors)
 *   4. the lifelong (kind 'malmen') editor: the preservation covariance C0 of the training-subject
 *      corpus, and the MEND editor trained on through the joint solve, on top of a background log
 *      of training edits                                               (malmen-editor.safetensors)
 *   5. the evaluation of both on held-out-subject edits                 (metrics.json, report.md, plot.svg)
 *
 * Needs the compiled package (dist/, `npm run build:ts`) and the native addon.
 */
'use strict'
const fs = require('fs')
const path = require('path')
const { Command } = require('commander')

const root = path.resolve(__dirname, '..')
const m = require(path.join(root, 'dist', 'index.js'))
const fm = require(path.join(root, 'dist', 'app', 'factmodel.js'))
const { BUNDLED_MODEL_DIR } = require(path.join(root, 'dist', 'data', 'assets.js'))
const { checkMuSchedule, checkRefine } = require(path.join(root, 'dist', 'mend', 'network.js'))

const int = (name) => (v) => {
  const n = Number(v)
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got ${v}`)
  return n
}
const num = (name) => (v) => {
  const n = Number(v)
  if (!Number.isFinite(n)) throw new Error(`${name} must be a number, got ${v}`)
  return n
}
// "upTo:mu[:scale],…" -> [{ upTo, mu, scale? }], checked now by the library's own check (not after pretraining)
const muSchedule = (v) => {
  const steps = v.trim() === '' ? [] : v.split(',').map((step) => {
    const parts = step.split(':').map(Number)
    if (parts.length < 2 || parts.length > 3) throw new Error(`--lifelong-mu-schedule steps are upTo:mu or upTo:mu:scale, got ${step}`)
    const [upTo, mu, scale] = parts
    return scale === undefined ? { upTo, mu } : { upTo, mu, scale }
  })
  return checkMuSchedule(steps)
}
// "rounds:step" -> { rounds, step } (the editor's proposals), "gradient:rounds[:weighting]" ->
// { rounds, step: 0.1, method: 'gradient', weighting? }
const refine = (v) => {
  const parts = v.split(':')
  if (parts[0] === 'gradient') {
    if (parts.length !== 2 && parts.length !== 3) throw new Error(`--lifelong-refine gradient is gradient:rounds or gradient:rounds:weighting, got ${v}`)
    return checkRefine({ rounds: Number(parts[1]), step: 0.1, method: 'gradient', ...(parts[2] ? { weighting: parts[2] } : {}) }, '--lifelong-refine')
  }
  if (parts.length !== 2) throw new Error(`--lifelong-refine is rounds:step or gradient:rounds[:weighting], got ${v}`)
  return checkRefine({ rounds: Number(parts[0]), step: Number(parts[1]) }, '--lifelong-refine')
}
const program = new Command()
program.name('build-assets').description('Rebuild the bundled WorldFacts GPT-2 and its MEND editor')
  .option('--out <dir>', 'output directory', BUNDLED_MODEL_DIR)
  .option('--seed <n>', 'seed of the vocabulary, initialisation, data order and editor', int('--seed'), 0)
  .option('--vocab-size <n>', 'BPE vocabulary size', int('--vocab-size'), 2048)
  .option('--layers <n>', 'transformer blocks', int('--layers'), 4)
  .option('--width <n>', 'model width', int('--width'), 256)
  .option('--heads <n>', 'attention heads', int('--heads'), 4)
  .option('--epochs <n>', 'pretraining epochs', int('--epochs'), 30)
  .option('--editor-steps <n>', 'editor training steps', int('--editor-steps'), 3000)
  .option('--editor-rank <n>', 'editor rank', int('--editor-rank'), 256)
  .option('--edit-blocks <n>', 'edit mlp.c_fc and mlp.c_proj of the last n blocks (at most all; at least 1)', int('--edit-blocks'), 3)
  .option('--editor-lr <x>', 'editor learning rate (Adam)', num('--editor-lr'), 1e-5)
  .option('--editor-lr-lr <x>', 'learning rate of the per-layer edit step sizes α', num('--editor-lr-lr'), 1e-3)
  .option('--edit-lr <x>', 'initial α', num('--edit-lr'), 1e-4)
  .option('--cedit <x>', 'edit loss weight', num('--cedit'), 1)
  .option('--cloc <x>', 'locality loss weight', num('--cloc'), 1)
  .option('--accumulate-bs <n>', 'editor training steps per optimizer step', int('--accumulate-bs'), 10)
  .option('--lifelong-steps <n>', 'lifelong editor training steps through the solve (0: the MEND network as trained, with the solve; see README)', int('--lifelong-steps'), 0)
  .option('--lifelong-edits <n>', 'edits solved jointly per lifelong training step', int('--lifelong-edits'), 16)
  .option('--lifelong-background <n>', 'edits in the background log of lifelong training', int('--lifelong-background'), 400)
  .option('--lifelong-mu <x>', 'weight of the preservation covariance', num('--lifelong-mu'), 30000)
  .option('--lifelong-mu-schedule <steps>', 'the smaller μ of short logs, as upTo:mu[:scale],… (μ, and the value scale, while the log holds at most upTo live edits; "" for none)', muSchedule, muSchedule('1:30:1.3,9:300,49:1000,200:6000'))
  .option('--lifelong-refine <how>', 'refinement of sequential logs (MEND.refine): rounds:step (rounds of the editor\'s proposals on the edited model, each × step) or gradient:rounds[:edit|token] (rounds of gradient descent on the log\'s edit loss, each edit or each target token weighed the same)', refine, refine('gradient:12:token'))
  .option('--lifelong-log-ridge <x>', 'log of the solve\'s ridge', num('--lifelong-log-ridge'), -1.6)
  .option('--lifelong-lr <x>', 'lifelong editor learning rate (Adam)', num('--lifelong-lr'), 1e-5)
  .option('--lifelong-cloc <x>', 'lifelong locality loss weight', num('--lifelong-cloc'), 5)
  .option('--skip-classic', 'reuse mend-editor.safetensors in --out; only build the lifelong editor and evaluate')
  .option('--eval-n <n>', 'held-out edits evaluated (single edits)', int('--eval-n'), 1000)
  .option('--eval-sequential <n>', 'sequential edits evaluated (both editors, the same edits)', int('--eval-sequential'), 1000)
  .option('--threads <n>', 'native threads (default: all cores)', int('--threads'))
  .option('--skip-pretrain', 'reuse the model in --out; only retrain the editor and evaluate')
  .parse(process.argv)
const o = program.opts()

// so that Hugging Face's AutoTokenizer loads the directory as a GPT-2 tokenizer
const TOKENIZER_CONFIG = {
  tokenizer_class: 'GPT2Tokenizer', model_max_length: 0 /* n_positions */, add_prefix_space: false,
  bos_token: '<|endoftext|>', eos_token: '<|endoftext|>', unk_token: '<|endoftext|>',
}

const t0 = Date.now()
const secs = (t) => ((Date.now() - t) / 1000).toFixed(1)
const log = (s) => process.stdout.write(`[${secs(t0).padStart(7)} s] ${s}\n`)
const pct = (x) => (x === undefined ? '—' : `${(100 * x).toFixed(1)}%`)

async function main() {
  if (o.threads) m.setNumThreads(o.threads)
  fs.mkdirSync(o.out, { recursive: true })
  const wf = m.buildWorldFacts({ seed: o.seed })
  log(`WorldFacts: ${wf.facts.length} facts, ${wf.relations.length} relations, ${wf.trainSubjects.length}/${wf.heldOutSubjects.length} train/held-out subjects; ${m.numThreads()} threads`)
  const timings = {}

  let model, tok
  if (o.skipPretrain) {
    model = await m.GPT2LMHeadModel.fromPretrained(o.out)
    tok = await m.GPT2Tokenizer.fromPretrained(o.out)
    log(`reusing the model in ${o.out}`)
  } else {
    let t = Date.now()
    const voc = fm.factVocabulary(wf, o.vocabSize)
    m.writeVocabAndMerges(o.out, voc.bpe)
    tok = voc.tokenizer
    const rows = fm.corpusRows(wf, tok)
    timings.vocabulary_s = Number(secs(t))
    log(`vocabulary: ${tok.vocabSize} tokens, corpus ${rows.length} sentences, ${rows.reduce((s, r) => s + r.length, 0)} tokens (${timings.vocabulary_s} s)`)

    t = Date.now()
    let last = Date.now(), lsum = 0, ln = 0
    model = await fm.pretrainFactModel(wf, tok, {
      seed: o.seed, nLayer: o.layers, nEmbd: o.width, nHead: o.heads, epochs: o.epochs,
      onProgress: (p) => {
        lsum += p.loss; ln++
        if (Date.now() - last > 10000 || p.step === p.totalSteps) {
          const eta = ((Date.now() - t) / p.step) * (p.totalSteps - p.step) / 1000
          log(`pretrain epoch ${p.epoch + 1}/${o.epochs} step ${p.step}/${p.totalSteps} loss ${(lsum / ln).toFixed(4)} (eta ${eta.toFixed(0)} s)`)
          last = Date.now(); lsum = 0; ln = 0
        }
      },
    })
    timings.pretrain_s = Number(secs(t))
    await model.savePretrained(o.out)
    const tokCfg = { ...TOKENIZER_CONFIG, model_max_length: model.config.nPositions }
    fs.writeFileSync(path.join(o.out, 'tokenizer_config.json'), JSON.stringify(tokCfg, null, 2) + '\n')
    log(`pretrained and saved in ${timings.pretrain_s} s`)
  }

  let t = Date.now()
  const accTrain = await fm.factAccuracy(model, tok, wf, 'train')
  const accHeld = await fm.factAccuracy(model, tok, wf, 'heldOut')
  log(`fact accuracy (greedy): training phrasings ${pct(accTrain.accuracy)} of ${accTrain.n}, held-out phrasings ${pct(accHeld.accuracy)} of ${accHeld.n} (${secs(t)} s)`)
  for (const r of Object.keys(accTrain.byRelation)) log(`  ${r.padEnd(13)} train ${pct(accTrain.byRelation[r])}  held-out ${pct(accHeld.byRelation[r])}`)

  const editorFile = path.join(o.out, 'mend-editor.safetensors')
  let classic
  if (o.skipClassic) {
    classic = await m.MEND.fromPretrained(model, editorFile)
    log(`reusing the MEND editor ${editorFile}`)
  } else {
    // the last min(--edit-blocks, n_layer) blocks
    const editBlocks = Math.min(Math.max(1, o.editBlocks), model.config.nLayer)
    t = Date.now()
    let lastE = Date.now()
    const ed = await fm.trainFactEditor(model, tok, wf, {
      seed: o.seed,
      mend: {
        rank: o.editorRank, editLr: o.editLr,
        innerParams: Array.from({ length: editBlocks }, (_, k) => model.config.nLayer - editBlocks + k)
          .flatMap((b) => [`transformer.h.${b}.mlp.c_proj.weight`, `transformer.h.${b}.mlp.c_fc.weight`]),
      },
      trainer: { maxIters: o.editorSteps, valInterval: 250, lr: o.editorLr, lrLr: o.editorLrLr, cedit: o.cedit, cloc: o.cloc, accumulateBs: o.accumulateBs },
      onProgress: (p) => {
        if (p.val || Date.now() - lastE > 10000 || p.step === p.maxIters) {
          const v = p.val ? ` | val edit ${p.val.edit.toFixed(3)} loc ${p.val.loc.toFixed(4)} acc ${pct(p.val.editAcc)}` : ''
          log(`editor step ${p.step}/${p.maxIters} edit ${p.edit.toFixed(3)} loc ${p.loc.toFixed(4)} acc ${pct(p.editAcc)}${v}`)
          lastE = Date.now()
        }
      },
    })
    timings.editor_s = Number(secs(t))
    await ed.mend.save(editorFile)
    log(`editor trained (${ed.steps} steps, best at ${ed.best ? ed.best.step : '—'}) and saved in ${timings.editor_s} s`)

  classic = ed.mend
  }

  // The lifelong editor: C0, then the MEND network trained on through the joint solve.
  t = Date.now()
  const cov = await fm.worldFactsKeyCovariance(classic, tok, wf)
  log(`preservation covariance C0 from ${cov.rows} corpus tokens of the training subjects (${secs(t)} s)`)
  let lastL = Date.now()
  const ll = await fm.trainLifelongEditor(classic, tok, wf, {
    seed: o.seed, mu: o.lifelongMu, muSchedule: o.lifelongMuSchedule, refine: o.lifelongRefine, logRidge: o.lifelongLogRidge, keyCov: cov.keyCov,
    editsPerStep: o.lifelongEdits, backgroundEdits: o.lifelongBackground,
    trainer: { maxIters: o.lifelongSteps, valInterval: 100, lr: o.lifelongLr, lrLr: o.editorLrLr, cedit: 1, cloc: o.lifelongCloc, accumulateBs: 1 },
    onProgress: (p) => {
      if (p.val || Date.now() - lastL > 10000 || p.step === p.maxIters) {
        const v = p.val ? ` | val edit ${p.val.edit.toFixed(3)} loc ${p.val.loc.toFixed(4)} acc ${pct(p.val.editAcc)}` : ''
        log(`lifelong step ${p.step}/${p.maxIters} edit ${p.edit.toFixed(3)} loc ${p.loc.toFixed(4)} acc ${pct(p.editAcc)}${v}`)
        lastL = Date.now()
      }
    },
  })
  timings.lifelong_s = Number(secs(t))
  await ll.mend.save(path.join(o.out, 'malmen-editor.safetensors'))
  log(`lifelong editor trained (${ll.steps} steps, best at ${ll.best ? ll.best.step : '—'}) and saved in ${timings.lifelong_s} s`)

  t = Date.now()
  const reqs = fm.worldFactsEvalRequests(wf, o.seed + 2).slice(0, Math.max(o.evalN, o.evalSequential))
  const seqN = Math.min(o.evalSequential, reqs.length)
  const results = {}
  for (const [name, mend] of [['lifelong', ll.mend], ['mend', classic]]) {
    const editor = await m.Editor.fromPretrained({ model, editor: mend, tokenizer: tok })
    let lastP = Date.now()
    results[name] = await m.evaluateEditor(editor, reqs, {
      sequential: seqN,
      onProgress: (done, total) => {
        if (Date.now() - lastP > 10000) { log(`evaluating the ${name} editor: ${done}/${total}`); lastP = Date.now() }
      },
    })
    log(`evaluated the ${name} editor on ${reqs.length} edits (${seqN} sequential)`)
  }
  timings.eval_s = Number(secs(t))
  const report = m.markdownReport(results.lifelong, `Bundled WorldFacts model: the lifelong (malmen) editor on held-out-subject edits`) + '\n' +
    m.markdownReport(results.mend, 'The classic MEND editor on the same edits').replace(/^# /, '## ')
  fs.writeFileSync(path.join(o.out, 'report.md'), report)
  fs.writeFileSync(path.join(o.out, 'plot.svg'), m.svgPlot(results.lifelong.sequential, 'sequential editing: lifelong (solid) and MEND (dashed)',
    { rows: results.mend.sequential, label: 'MEND', mainLabel: 'lifelong (malmen)' }))
  fs.writeFileSync(path.join(o.out, 'metrics.json'), JSON.stringify({
    config: { ...o, out: undefined, skipPretrain: undefined, skipClassic: undefined }, threads: m.numThreads(),
    factAccuracy: { train: accTrain, heldOut: accHeld }, lifelong: { steps: ll.steps, best: ll.best, c0Rows: cov.rows },
    eval: { lifelong: results.lifelong, mend: results.mend }, timings_s: timings,
    total_s: Number(secs(t0)),
  }, null, 2) + '\n')
  process.stdout.write('\n' + report + '\n')
  log(`done in ${secs(t0)} s → ${o.out}`)
}

main().catch((e) => {
  process.stderr.write(`build-assets: ${e.stack || e.message}${e.code ? ` [${e.code}]` : ''}\n`)
  process.exit(1)
})
