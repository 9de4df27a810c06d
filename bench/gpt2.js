#!/usr/bin/env node
// GPT-2 small shape (124M, random weights) on the native engine: forward, forward+backward and one
// KV-cache decode step, each against its floor measured in the same run:
//   compute floor = FLOPs / (our 1024³ GEMM rate), memory floor = weight bytes / read bandwidth.
// Usage: node bench/gpt2.js   (NODE_MEND_THREADS sets the threads; default: all cores)
'use strict'
const { GPT2LMHeadModel, setNumThreads, numThreads } = require('..')
const { machine, reference, timeit, table, testingAddon } = require('./common')

async function main() {
  if (process.env.NODE_MEND_THREADS) setNumThreads(Number(process.env.NODE_MEND_THREADS))
  const testing = testingAddon()
  console.log(`# node-mend GPT-2 benchmark — ${machine()}`)
  console.log(`# threads ${numThreads()}, gemm backend ${testing.gemmBackend()}\n`)

  // References (bench/common.js reference): before the workloads here, again after them.
  let ref = await reference(testing)
  const cfg = { nLayer: 12, nHead: 12, nEmbd: 768, vocabSize: 50257, nPositions: 1024 }
  const model = await GPT2LMHeadModel.random(cfg, 0)
  const C_ = cfg.nEmbd, V = cfg.vocabSize, L = cfg.nLayer
  const weightBytes = model.parameterBytes - cfg.nPositions * C_ * 4 // wpe rows beyond T are not read
  // Matmul FLOPs per token (blocks + LM head) and attention FLOPs for a sequence of T.
  const flopsPerToken = 2 * (L * 12 * C_ * C_ + C_ * V)
  const attnFlops = (B_, T) => B_ * L * 2 * 2 * T * T * C_ / 2 // QKᵀ and AV, causal half
  const ids = (B_, T) => Array.from({ length: B_ }, (_, b) => Array.from({ length: T }, (_, t) => (b * 131 + t * 17) % V))

  // Each row's floor and note are functions of the references, filled in after the second measurement.
  const pending = []
  const add = (name, ms, tokens, floorFn, target, noteFn) => pending.push({ name, ms, tokens, floorFn, target, noteFn })

  {
    const x = ids(1, 32)
    const ms = await timeit(() => model.forward({ inputIds: x }), { reps: 9 })
    const flops = 32 * flopsPerToken + attnFlops(1, 32)
    add('forward B=1 T=32', ms, 32, (r) => Math.max(flops / r.rate, weightBytes / r.bw) * 1e3, '≤ 1.30',
      (r) => `floor = max(${(flops / r.rate * 1e3).toFixed(1)} compute, ${(weightBytes / r.bw * 1e3).toFixed(1)} memory)`)
  }
  {
    const x = ids(1, 16)
    const ms = await timeit(() => model.forward({ inputIds: x }), { reps: 9 })
    const flops = 16 * flopsPerToken
    add('forward B=1 T=16', ms, 16, (r) => Math.max(flops / r.rate, weightBytes / r.bw) * 1e3, '≤ 1.30',
      (r) => `floor = max(${(flops / r.rate * 1e3).toFixed(1)} compute, ${(weightBytes / r.bw * 1e3).toFixed(1)} memory)`)
  }
  {
    const x = ids(8, 128)
    const ms = await timeit(() => model.forward({ inputIds: x }), { reps: 3, warmup: 1 })
    const flops = 8 * 128 * flopsPerToken + attnFlops(8, 128)
    add('forward B=8 T=128', ms, 1024, (r) => (flops / r.rate) * 1e3, '≤ 1.43',
      (r) => `= ${((flops / (ms / 1e3)) / r.rate * 100).toFixed(0)}% of the GEMM rate (target ≥ 70%)`)
  }
  {
    const x = ids(4, 64)
    const ms = await timeit(() => model.lossAndGrad({ inputIds: x, labels: x }), { reps: 3, warmup: 1 })
    const flops = 3 * (4 * 64 * flopsPerToken + attnFlops(4, 64))
    add('forward+backward B=4 T=64 (all params)', ms, 256, (r) => (flops / r.rate) * 1e3, '', () => 'floor = 3× forward FLOPs / GEMM rate')
  }
  {
    const x = ids(1, 32)
    const k = 16
    const one = await timeit(() => model.generate(x, { maxNewTokens: 1 }), { reps: 5 })
    const many = await timeit(() => model.generate(x, { maxNewTokens: k + 1 }), { reps: 5 })
    const ms = (many - one) / k
    add('decode step B=1 (KV cache, context 32)', ms, 1, (r) => (weightBytes / r.bw) * 1e3, '≤ 1.30', () => 'floor = weight bytes / bandwidth')
  }
  ref = await reference(testing, ref)
  console.log(`reference (best of before and after): GEMM 1024³ ${(ref.rate / 1e9).toFixed(1)} GFLOP/s; read bandwidth ${(ref.bw / 1e9).toFixed(1)} GB/s\n`)
  const rows = pending.map((p) => {
    const floor = p.floorFn(ref)
    return [p.name, p.ms.toFixed(1), p.tokens ? (p.tokens / (p.ms / 1e3)).toFixed(0) : '', floor.toFixed(1), (p.ms / floor).toFixed(2), p.target, p.noteFn(ref)]
  })
  table(['workload', 'median ms', 'tokens/s', 'floor ms', 'ms / floor', 'target', 'note'], rows)
  model.dispose()
}

main().catch((e) => { console.error(e); process.exit(1) })
