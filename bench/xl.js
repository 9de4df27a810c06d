#!/usr/bin/env node
// GPT-2 XL shape (48 layers x 1600, 1.56B parameters, random weights) as a user would try it:
// GPT2LMHeadModel.random, forward B=1 T=16, and one MEND edit (rank 1920, mlp.c_fc + mlp.c_proj of the
// top three blocks), each against its floor measured in the same run (bench/gpt2.js's definitions):
//   forward floor = max(FLOPs / GEMM rate, weight bytes / read bandwidth)
//   edit floor    = forward floor + the editor's FLOPs / GEMM rate
// Needs about 8 GB of memory. Usage: node bench/xl.js   (NODE_MEND_THREADS sets the threads)
'use strict'
const { GPT2LMHeadModel, MEND, setNumThreads, numThreads } = require('..')
const { machine, reference, timeit, table, testingAddon } = require('./common')

async function main() {
  if (process.env.NODE_MEND_THREADS) setNumThreads(Number(process.env.NODE_MEND_THREADS))
  const testing = testingAddon()
  console.log(`# node-mend GPT-2 XL benchmark — ${machine()}; threads ${numThreads()}, gemm backend ${testing.gemmBackend()}\n`)
  let ref = await reference(testing)

  const cfg = { nLayer: 48, nHead: 25, nEmbd: 1600, vocabSize: 50257, nPositions: 1024 }
  let t0 = Date.now()
  const cpu0 = process.cpuUsage()
  const model = await GPT2LMHeadModel.random(cfg, 0)
  const cpu = process.cpuUsage(cpu0)
  const randomMs = Date.now() - t0
  const randomCpu = (cpu.user + cpu.system) / 1e3
  const Cd = cfg.nEmbd, V = cfg.vocabSize, L = cfg.nLayer
  const weightBytes = model.parameterBytes - cfg.nPositions * Cd * 4
  const flopsPerToken = 2 * (L * 12 * Cd * Cd + Cd * V)
  const T = 16
  const fwdFlops = T * flopsPerToken
  const ids = Array.from({ length: T }, (_, t) => (t * 131) % V)
  const fwd = await timeit(() => model.forward({ inputIds: [ids] }), { reps: 5, warmup: 1 })

  t0 = Date.now()
  const mend = new MEND(model)
  const buildMs = Date.now() - t0
  const rank = mend.config.rank, D = cfg.nEmbd + 4 * cfg.nEmbd
  let s = 0
  const req = () => {
    const x = Array.from({ length: T }, (_, t) => (s * 7919 + t * 131) % V)
    s++
    return { inputIds: [x], attentionMask: [x.map(() => 1)], labels: [x.map((v, t) => (t >= 12 ? v : -100))] }
  }
  const infos = []
  const edit = await timeit(async () => { infos.push((await mend.edit(req())).info) }, { reps: 5, warmup: 1 })
  const rows = infos[infos.length - 1].keptRows
  // Editor FLOPs: per kept row, each of the two layers does z·Vᵀ and h·Uᵀ (2 · D · rank each).
  const editorRows = Object.values(rows).reduce((a, b) => a + b, 0)
  const editorFlops = editorRows * 2 * 2 * 2 * D * rank
  ref = await reference(testing, ref)
  const { rate, bw } = ref
  console.log(`reference (best of before and after): GEMM 1024³ ${(rate / 1e9).toFixed(1)} GFLOP/s; read bandwidth ${(bw / 1e9).toFixed(1)} GB/s\n`)
  const fwdFloor = Math.max(fwdFlops / rate, weightBytes / bw) * 1e3
  const editFloor = fwdFloor + (editorFlops / rate) * 1e3
  const med = (k) => infos.map((i) => i.timings[k]).sort((a, b) => a - b)[Math.floor(infos.length / 2)]
  table(['workload', 'median', 'floor', 'ratio', 'target', 'note'], [
    ['GPT2LMHeadModel.random', `${(randomMs / 1e3).toFixed(1)} s`, '', '', '', `${(randomCpu / randomMs).toFixed(2)} CPUs busy on average (${(randomCpu / 1e3).toFixed(1)} s CPU)`],
    ['forward B=1 T=16', `${fwd.toFixed(0)} ms`, `${fwdFloor.toFixed(0)} ms`, (fwd / fwdFloor).toFixed(2), '', `floor = max(${(fwdFlops / rate * 1e3).toFixed(0)} compute, ${(weightBytes / bw * 1e3).toFixed(0)} memory)`],
    ['one edit (16 tokens, 4-token target)', `${edit.toFixed(0)} ms`, `${editFloor.toFixed(0)} ms`, (edit / editFloor).toFixed(2), '≤ 1.5', `pre-edit ${med('preMs').toFixed(0)} / editor ${med('editorMs').toFixed(0)} / overlay ${med('overlayMs').toFixed(1)} ms; editor ${(editorFlops / 1e9).toFixed(1)} GFLOP`],
  ])
  console.log(`\nMEND(model) built in ${buildMs} ms (rank ${rank}, ${mend.config.innerParams.length} inner params)`)
  model.dispose()
}

main().catch((e) => { console.error(e); process.exit(1) })
