#!/usr/bin/env node
// GPT-2 small shape (124M, random weights) on the native engine: forward, forward+backward and one
// KV-cache decode step, each against its floor measured in the same run:
//   compute floor = FLOPs / (our 1024³ GEMM rate), memory floor = weight bytes / read bandwidth.
// Usage: node bench/gpt2.js   (NODE_MEND_THREADS sets the threads; default: all cores)
'use strict'
const { GPT2LMHeadModel, setNumThreads, numThreads } = require('..')
const { machine, timeit, table, testingAddon } = require('./common')

async function main() {
  if (process.env.NODE_MEND_THREADS) setNumThreads(Number(process.env.NODE_MEND_THREADS))
  const testing = testingAddon()
  console.log(`# node-mend GPT-2 benchmark — ${machine()}`)
  console.log(`# threads ${numThreads()}, gemm backend ${testing.gemmBackend()}\n`)

  // References measured now: GEMM rate on 1024³ and memory read bandwidth (the testing addon's
  // kernels: the same code, its thread pool sized by NODE_MEND_THREADS too).
  const n = 1024
  const A = new Float32Array(n * n).map(() => Math.random() - 0.5)
  const B = new Float32Array(n * n).map(() => Math.random() - 0.5)
  const C = new Float32Array(n * n)
  const gemmMs = await timeit(() => testing.gemm(false, false, n, n, n, 1, A, n, B, n, 0, C, n), { reps: 9 })
  const gemmRate = (2 * n ** 3) / (gemmMs / 1e3) // FLOP/s
  const bw = testing.benchReadBandwidth(1024, 7) * 1e9 // B/s
  console.log(`reference: GEMM 1024³ ${gemmMs.toFixed(2)} ms = ${(gemmRate / 1e9).toFixed(1)} GFLOP/s; read bandwidth ${(bw / 1e9).toFixed(1)} GB/s\n`)

  const cfg = { nLayer: 12, nHead: 12, nEmbd: 768, vocabSize: 50257, nPositions: 1024 }
  const model = await GPT2LMHeadModel.random(cfg, 0)
  const C_ = cfg.nEmbd, V = cfg.vocabSize, L = cfg.nLayer
  const weightBytes = model.parameterBytes - cfg.nPositions * C_ * 4 // wpe rows beyond T are not read
  // Matmul FLOPs per token (blocks + LM head) and attention FLOPs for a sequence of T.
  const flopsPerToken = 2 * (L * 12 * C_ * C_ + C_ * V)
  const attnFlops = (B_, T) => B_ * L * 2 * 2 * T * T * C_ / 2 // QKᵀ and AV, causal half
  const ids = (B_, T) => Array.from({ length: B_ }, (_, b) => Array.from({ length: T }, (_, t) => (b * 131 + t * 17) % V))

  const rows = []
  const add = (name, ms, tokens, floorMs, target, note) => {
    const ratio = ms / floorMs
    rows.push([name, ms.toFixed(1), tokens ? (tokens / (ms / 1e3)).toFixed(0) : '', floorMs.toFixed(1), ratio.toFixed(2), target, note])
  }

  {
    const x = ids(1, 32)
    const ms = await timeit(() => model.forward({ inputIds: x }), { reps: 9 })
    const flops = 32 * flopsPerToken + attnFlops(1, 32)
    const floor = Math.max(flops / gemmRate, weightBytes / bw) * 1e3
    add('forward B=1 T=32', ms, 32, floor, '≤ 1.30', `floor = max(${(flops / gemmRate * 1e3).toFixed(1)} compute, ${(weightBytes / bw * 1e3).toFixed(1)} memory)`)
  }
  {
    const x = ids(1, 16)
    const ms = await timeit(() => model.forward({ inputIds: x }), { reps: 9 })
    const flops = 16 * flopsPerToken
    const floor = Math.max(flops / gemmRate, weightBytes / bw) * 1e3
    add('forward B=1 T=16', ms, 16, floor, '', 'the MEND benchmarks\' unit')
  }
  {
    const x = ids(8, 128)
    const ms = await timeit(() => model.forward({ inputIds: x }), { reps: 3, warmup: 1 })
    const flops = 8 * 128 * flopsPerToken + attnFlops(8, 128)
    const floor = (flops / gemmRate) * 1e3
    add('forward B=8 T=128', ms, 1024, floor, '≤ 1.43', `= ${((flops / (ms / 1e3)) / gemmRate * 100).toFixed(0)}% of the GEMM rate (target ≥ 70%)`)
  }
  {
    const x = ids(4, 64)
    const ms = await timeit(() => model.lossAndGrad({ inputIds: x, labels: x }), { reps: 3, warmup: 1 })
    const flops = 3 * (4 * 64 * flopsPerToken + attnFlops(4, 64))
    const floor = (flops / gemmRate) * 1e3
    add('forward+backward B=4 T=64 (all params)', ms, 256, floor, '', 'floor = 3× forward FLOPs / GEMM rate')
  }
  {
    const x = ids(1, 32)
    const k = 16
    const one = await timeit(() => model.generate(x, { maxNewTokens: 1 }), { reps: 5 })
    const many = await timeit(() => model.generate(x, { maxNewTokens: k + 1 }), { reps: 5 })
    const ms = (many - one) / k
    const floor = (weightBytes / bw) * 1e3
    add('decode step B=1 (KV cache, context 32)', ms, 1, floor, '≤ 1.30', 'floor = weight bytes / bandwidth')
  }
  table(['workload', 'median ms', 'tokens/s', 'floor ms', 'ms / floor', 'target', 'note'], rows)
  model.dispose()
}

main().catch((e) => { console.error(e); process.exit(1) })
