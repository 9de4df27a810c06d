#!/usr/bin/env node
// MEND edit benchmark, GPT-2 small shape (random weights), rank-1920 editor on the six default
// inner params, one request of 16 tokens. Reference measured in the same run: the base forward.
// Usage: node bench/edit.js [--edits 100]
'use strict'
const { GPT2LMHeadModel, MEND, setNumThreads, numThreads } = require('..')
const { machine, timeit, timePaired, table } = require('./common')

async function main() {
  if (process.env.NODE_MEND_THREADS) setNumThreads(Number(process.env.NODE_MEND_THREADS))
  const nEdits = Number(process.argv[process.argv.indexOf('--edits') + 1]) || 100
  console.log(`# node-mend edit benchmark — ${machine()}; threads ${numThreads()}\n`)
  const cfg = { nLayer: 12, nHead: 12, nEmbd: 768, vocabSize: 50257, nPositions: 1024 }
  const model = await GPT2LMHeadModel.random(cfg, 0)
  let t0 = Date.now()
  const mend = new MEND(model) // rank 1920, mlp.c_proj + mlp.c_fc of blocks 9-11
  console.log(`editor built in ${Date.now() - t0} ms (${mend.config.innerParams.length} inner params, rank ${mend.config.rank})`)
  const V = cfg.vocabSize
  const req = (s) => {
    const ids = Array.from({ length: 16 }, (_, t) => (s * 7919 + t * 131) % V)
    return { inputIds: [ids], attentionMask: [ids.map(() => 1)], labels: [ids.map((v, t) => (t >= 12 ? v : -100))] }
  }
  const probe32 = { inputIds: [Array.from({ length: 32 }, (_, t) => (t * 17) % V)] }
  const probe16 = { inputIds: [Array.from({ length: 16 }, (_, t) => (t * 17) % V)] }

  let s = 0
  const infos = []
  const [fwd16, editMs] = await timePaired([
    () => model.forward(probe16),
    async () => { const r = await mend.edit(req(s++)); infos.push(r.info) },
  ], { reps: 9 })
  const med = (k) => infos.map((i) => i.timings[k]).sort((a, b) => a - b)[Math.floor(infos.length / 2)]
  const one = (await mend.edit(req(1000))).edited
  const [base32, e1] = await timePaired([() => model.forward(probe32), () => one.model.forward(probe32)], { reps: 21 })
  const bytes1 = one.model.overlayBytes
  t0 = Date.now()
  let cur = mend
  for (let i = 0; i < nEdits; i++) cur = (await cur.edit(req(2000 + i))).edited
  const seqMs = (Date.now() - t0) / nEdits
  const [baseN, eN] = await timePaired([() => model.forward(probe32), () => cur.model.forward(probe32)], { reps: 21 })
  const bytesN = cur.model.overlayBytes
  const rows1 = Object.values(infos[0].keptRows).reduce((a, b) => a + b, 0)
  const dense = model.parameters().filter((p) => mend.config.innerParams.includes(p.name)).reduce((a, p) => a + p.shape[0] * p.shape[1] * 4, 0)

  table(['measure', 'median', 'reference', 'ratio', 'target'], [
    ['edit latency (16 tokens)', `${editMs.toFixed(1)} ms`, `forward B=1 T=16 ${fwd16.toFixed(1)} ms`, (editMs / fwd16).toFixed(2), '≤ 3.5'],
    ['  pre-edit pass / editor / overlay', `${med('preMs').toFixed(1)} / ${med('editorMs').toFixed(1)} / ${med('overlayMs').toFixed(1)} ms`, '', '', ''],
    ['forward B=1 T=32, 1 edit', `${e1.toFixed(1)} ms`, `base ${base32.toFixed(1)} ms`, (e1 / base32).toFixed(3), '≤ 1.05'],
    [`forward B=1 T=32, ${nEdits} edits`, `${eN.toFixed(1)} ms`, `base ${baseN.toFixed(1)} ms`, (eN / baseN).toFixed(3), ''],
    ['overlay memory, 1 edit', `${(bytes1 / 2 ** 20).toFixed(2)} MiB`, `N·(d_in+d_out)·4 B = ${(rows1 * 3840 * 4 / 2 ** 20).toFixed(2)} MiB`, (bytes1 / (rows1 * 3840 * 4)).toFixed(2), '≈ 1'],
    [`overlay memory, ${nEdits} edits`, `${(bytesN / 2 ** 20).toFixed(1)} MiB`, `dense inner weights ${(dense / 2 ** 20).toFixed(1)} MiB`, (bytesN / dense).toFixed(2), ''],
    ['sequential edit (mean over the run)', `${seqMs.toFixed(1)} ms`, '', '', ''],
  ])
}

main().catch((e) => { console.error(e); process.exit(1) })
