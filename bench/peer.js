#!/usr/bin/env node
// node-mend against its PyTorch peer (bench/torch_peer.py: GPT-2 and EasyEdit's MEND in plain torch,
// comparison only) on the same workloads: forward B=1 T=16, B=1 T=32, B=8 T=128, one MEND edit
// (as bench/edit.js) and one training step (as bench/train.js, accumulateBs 10). Both run with the
// same thread count and never at the same time: each round times a node-mend block, then the same
// workload in the (persistent) Python process; the table has the medians over all rounds' reps.
// Usage: node bench/peer.js [--threads N] [--rounds N] [--only forward,edit,train] [--omp-wait-policy P]
//        node bench/peer.js --check   (peer vs node-mend numerically, small random model and editor)
// The peer runs with OMP_WAIT_POLICY=PASSIVE unless it is set: GOMP's default spinning made it 1.7-3×
// slower at small sizes on the 2-core machine; `--omp-wait-policy default` measures that.
// Needs PyTorch for /usr/bin/python3 (Debian: apt-get install python3-torch); NODE_MEND_PYTHON overrides.
'use strict'
const { spawn, spawnSync } = require('child_process')
const fs = require('fs')
const os = require('os')
const path = require('path')
const readline = require('readline')
const { GPT2LMHeadModel, MEND, EditTrainer, setNumThreads, numThreads } = require('..')
const { machine, median, samples, table } = require('./common')

const argv = process.argv.slice(2)
const opt = (name, dflt) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : dflt }
const threads = Number(opt('--threads', process.env.NODE_MEND_THREADS || 2))
const rounds = Number(opt('--rounds', 3))
const only = opt('--only', 'forward,edit,train').split(',')
const PY = process.env.NODE_MEND_PYTHON || '/usr/bin/python3'
const PEER = path.join(__dirname, 'torch_peer.py')
const env = { ...process.env, NODE_MEND_THREADS: String(threads), OMP_NUM_THREADS: String(threads), OPENBLAS_NUM_THREADS: String(threads) }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

const WORKLOADS = [
  { key: 'fwd16', group: 'forward', label: 'forward B=1 T=16', goal: 2, reps: 9 },
  { key: 'fwd32', group: 'forward', label: 'forward B=1 T=32', goal: 1.5, reps: 9 },
  { key: 'fwd8x128', group: 'forward', label: 'forward B=8 T=128', goal: 1.15, reps: 3 },
  { key: 'edit', group: 'edit', label: 'one MEND edit (16 tokens)', goal: 4, reps: 9 },
  { key: 'train', group: 'train', label: 'one training step (edit 16 + loc 16 tokens)', goal: 4, reps: 10, warmup: 1 },
]

function requireTorch() {
  const r = spawnSync(PY, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8', env })
  if (r.status !== 0) {
    console.error(`bench/peer.js: ${PY} cannot import torch (${(r.stderr || r.error?.message || '').trim().split('\n').pop()}).\n` +
      'The PyTorch peer needs it: on Debian/Ubuntu `apt-get install python3-torch libopenblas-dev` (CPU build; without OpenBLAS it runs on the reference BLAS), or set NODE_MEND_PYTHON to a Python that has torch.')
    process.exit(2)
  }
  return r.stdout.trim()
}

// The peer as a server: one JSON command per line in, one JSON reply per line out.
function startPeer() {
  const wait = opt('--omp-wait-policy')
  const child = spawn(PY, [PEER, '--serve', '--threads', String(threads), ...(wait ? ['--omp-wait-policy', wait] : [])], { env, stdio: ['pipe', 'pipe', 'inherit'] })
  const lines = readline.createInterface({ input: child.stdout })
  const waiting = []
  lines.on('line', (l) => waiting.shift()?.resolve(JSON.parse(l)))
  child.on('exit', (code) => { for (const w of waiting.splice(0)) w.reject(new Error(`torch_peer.py exited with ${code}`)) })
  const next = () => new Promise((resolve, reject) => waiting.push({ resolve, reject }))
  const ready = next()
  return {
    ready,
    time: (workload, reps, warmup = 2) => { const r = next(); child.stdin.write(JSON.stringify({ workload, reps, warmup }) + '\n'); return r },
    close: () => child.stdin.end(),
  }
}

async function bench() {
  const torchVersion = requireTorch()
  setNumThreads(threads)
  const cfg = { nLayer: 12, nHead: 12, nEmbd: 768, vocabSize: 50257, nPositions: 1024 }
  const V = cfg.vocabSize
  const model = await GPT2LMHeadModel.random(cfg, 0)
  const mend = new MEND(model) // rank 1920, mlp.c_proj + mlp.c_fc of blocks 9-11 (as bench/edit.js)
  const trainer = new EditTrainer(new MEND(model), { accumulateBs: 10 }) // as bench/train.js
  const ids = (B, T) => Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, t) => (b * 131 + t * 17) % V))
  let s = 0
  const editReq = (k) => {
    const x = Array.from({ length: 16 }, (_, t) => (k * 7919 + t * 131) % V)
    return { inputIds: [x], attentionMask: [x.map(() => 1)], labels: [x.map((v, t) => (t >= 12 ? v : -100))] }
  }
  const locReq = (k) => {
    const x = Array.from({ length: 16 }, (_, t) => (k * 104729 + t * 17) % V)
    return { inputIds: [x], attentionMask: [x.map(() => 1)] }
  }
  const probes = { fwd16: { inputIds: ids(1, 16) }, fwd32: { inputIds: ids(1, 32) }, fwd8x128: { inputIds: ids(8, 128) } }
  const nodeRun = {
    fwd16: () => model.forward(probes.fwd16),
    fwd32: () => model.forward(probes.fwd32),
    fwd8x128: () => model.forward(probes.fwd8x128),
    edit: () => mend.edit(editReq(s++)),
    train: () => { const k = s++; return trainer.trainStep({ edit: editReq(k), loc: locReq(k) }) },
  }

  const peer = startPeer()
  const pinfo = await peer.ready
  // Debian's torch links libblas.so.3, which is the reference BLAS (tens of times slower) unless OpenBLAS provides it.
  if (pinfo.blas.some((b) => b.startsWith('blas/'))) {
    peer.close()
    throw new Error(`the PyTorch peer runs on the reference BLAS (${pinfo.blas.join(', ')}), not OpenBLAS: apt-get install libopenblas-dev`)
  }
  console.log(`# node-mend vs PyTorch peer — ${machine()}`)
  console.log(`# threads: node-mend ${numThreads()}, PyTorch ${pinfo.threads} (OMP_NUM_THREADS ${pinfo.OMP_NUM_THREADS}, OPENBLAS_NUM_THREADS ${pinfo.OPENBLAS_NUM_THREADS}, OMP_WAIT_POLICY ${pinfo.OMP_WAIT_POLICY ?? 'unset: GOMP default'})`)
  console.log(`# torch ${torchVersion} (${PY}), BLAS ${pinfo.blas.join(', ') || 'unknown'}; GPT-2 small shape, random weights, float32`)
  console.log(`# ${rounds} round(s) of [node-mend block, PyTorch block] per workload; medians over all rounds' reps; load average ${os.loadavg()[0].toFixed(2)} at start\n`)

  const work = WORKLOADS.filter((w) => only.includes(w.group) || only.includes(w.key))
  const ms = Object.fromEntries(work.map((w) => [w.key, { node: [], torch: [] }]))
  for (let r = 0; r < rounds; r++) {
    for (const w of work) {
      ms[w.key].node.push(...(await samples(nodeRun[w.key], { reps: w.reps, warmup: w.warmup ?? 2 })))
      await sleep(300) // let spinning worker threads go idle before the other side starts
      ms[w.key].torch.push(...(await peer.time(w.key, w.reps, w.warmup ?? 2)).ms)
      await sleep(300)
      process.stderr.write(`round ${r + 1}/${rounds} ${w.key}: node-mend ${median(ms[w.key].node).toFixed(1)} ms, PyTorch ${median(ms[w.key].torch).toFixed(1)} ms\n`)
    }
  }
  peer.close()
  table(['workload', 'node-mend ms', 'PyTorch ms', 'speed-up (PyTorch / node-mend)', 'goal'], work.map((w) => {
    const a = median(ms[w.key].node), b = median(ms[w.key].torch)
    return [w.label, a.toFixed(1), b.toFixed(1), `${(b / a).toFixed(2)}×`, `≥ ${w.goal}×`]
  }))
  model.dispose()
}

// --check: a small random GPT-2 and a random non-identity editor; node-mend's logits, edit factors,
// training-step losses and accumulated editor gradients against the peer's on the same weights.
async function check() {
  requireTorch()
  const cfg = { nLayer: 3, nHead: 2, nEmbd: 16, vocabSize: 53, nPositions: 32 }
  const model = await GPT2LMHeadModel.random(cfg, 2)
  const mcfg = { rank: 6, nHidden: 1 }
  let seed = 12345
  const uni = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 }
  const randn = () => Math.sqrt(-2 * Math.log(uni() + 1e-12)) * Math.cos(2 * Math.PI * uni())
  const spec = new MEND(model, mcfg).editorSpec()
  for (const tr of spec.transforms) {
    for (const L of tr.layers) {
      for (const a of [L.u, L.v]) for (let i = 0; i < a.length; i++) a[i] = 0.3 * randn()
      for (const a of [L.bias, L.shift]) for (let i = 0; i < a.length; i++) a[i] = 0.1 * randn()
      for (let i = 0; i < L.scale.length; i++) L.scale[i] = 1 + 0.2 * randn()
    }
    for (const [m, sd, S] of [[tr.uMean, tr.uStd, tr.uS], [tr.vMean, tr.vStd, tr.vS]]) {
      for (let i = 0; i < m.length; i++) { m[i] = 0.01 * randn(); sd[i] = 0.5 + uni(); S[i] = 9 * sd[i] * sd[i] }
    }
    tr.k = 10
  }
  for (let i = 0; i < spec.editLrs.length; i++) spec.editLrs[i] = 0.05 * (1 + uni())
  const V = cfg.vocabSize
  const e = Array.from({ length: 10 }, () => Math.floor(uni() * V)), l = Array.from({ length: 8 }, () => Math.floor(uni() * V))
  const batch = {
    edit: { inputIds: [e], attentionMask: [e.map(() => 1)], labels: [e.map((v, i) => (i >= 6 ? v : -100))] },
    loc: { inputIds: [l], attentionMask: [l.map(() => 1)] },
  }
  const mend = MEND.fromEditorSpec(model, spec, mcfg)
  const logits = (await model.forward(batch.edit)).logits.data
  const { info } = await mend.edit(batch.edit, { returnFactors: true })
  const trainer = new EditTrainer(MEND.fromEditorSpec(model, spec, mcfg), { accumulateBs: 10 })
  const train = await trainer.trainStep(batch)
  const inner = mend.config.innerParams
  const out = {
    config: cfg, rank: mcfg.rank, nHidden: mcfg.nHidden, inner, editor: spec,
    params: Object.fromEntries(model.parameters().map((p) => [p.name, { shape: p.shape, data: model.parameter(p.name).data }])),
    batch: { edit: { ids: [e], mask: [e.map(() => 1)], labels: batch.edit.labels }, loc: { ids: [l], mask: [l.map(() => 1)] } },
    out: {
      logits,
      edit: { loss: info.loss, cos: inner.map((n) => info.cos[n]), factors: Object.fromEntries(inner.map((n) => [n, { u: info.factors[n].u.data, d: info.factors[n].d.data }])) },
      train: { ...train, grads: trainer.nativeTrainer.grads() },
    },
  }
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'node-mend-peer-')), 'check.json')
  fs.writeFileSync(file, JSON.stringify(out, (k, v) => (ArrayBuffer.isView(v) ? Array.from(v) : v)))
  const r = spawnSync(PY, [PEER, '--check', file, '--threads', String(threads)], { stdio: 'inherit', env })
  fs.rmSync(path.dirname(file), { recursive: true, force: true })
  process.exit(r.status ?? 1)
}

;(argv.includes('--check') ? check() : bench()).catch((e) => { console.error(e); process.exit(1) })
