#!/usr/bin/env node
// MEND training-step benchmark, GPT-2 small shape (random weights), rank-1920 editor on the six
// default inner params, edit and locality batches of 16 tokens, accumulateBs 10. Reference measured
// in the same run: the base forward B=1,T=16.
'use strict'
const { GPT2LMHeadModel, MEND, EditTrainer, setNumThreads, numThreads } = require('..')
const { machine, timePaired, table } = require('./common')

async function main() {
  if (process.env.NODE_MEND_THREADS) setNumThreads(Number(process.env.NODE_MEND_THREADS))
  console.log(`# node-mend training benchmark — ${machine()}; threads ${numThreads()}\n`)
  const cfg = { nLayer: 12, nHead: 12, nEmbd: 768, vocabSize: 50257, nPositions: 1024 }
  const model = await GPT2LMHeadModel.random(cfg, 0)
  const trainer = new EditTrainer(new MEND(model), { accumulateBs: 10 })
  const V = cfg.vocabSize
  let s = 0
  const req = () => {
    const ids = Array.from({ length: 16 }, (_, t) => (s * 7919 + t * 131) % V)
    const loc = Array.from({ length: 16 }, (_, t) => (s * 104729 + t * 17) % V)
    s++
    return {
      edit: { inputIds: [ids], attentionMask: [ids.map(() => 1)], labels: [ids.map((v, t) => (t >= 12 ? v : -100))] },
      loc: { inputIds: [loc], attentionMask: [loc.map(() => 1)] },
    }
  }
  const probe = { inputIds: [Array.from({ length: 16 }, (_, t) => (t * 17) % V)] }
  const [fwd, step] = await timePaired([() => model.forward(probe), () => trainer.trainStep(req())], { reps: 10, warmup: 1 })
  table(['measure', 'median', 'reference', 'ratio', 'target'], [
    ['training step (edit 16 + loc 16 tokens)', `${step.toFixed(0)} ms`, `forward B=1 T=16 ${fwd.toFixed(1)} ms`, (step / fwd).toFixed(2), '≤ 12'],
  ])
}

main().catch((e) => { console.error(e); process.exit(1) })
