#!/usr/bin/env node
// bench/gemm.js — builds and runs the GEMM correctness check and benchmark (npm run bench:gemm).
// Compiles bench/gemm_check.cc (with native/testing/gemm_check.cc) and bench/gemm_bench.cc with
// native/kernels/cpu/gemm.cc (with bias.cc and gelu.cc, its epilogue) and native/core/threadpool.cc (g++ -O3, with the project's
// flags: no -march) into bench/out/,
// runs the check first (about a second) and prints timings only if it passes. When OpenBLAS's
// cblas.h is found the benchmark also times cblas_sgemm (comparison only; never a library dependency).
// Threads: NODE_MEND_THREADS (default 2). Exit code: non-zero if a build or the check fails.
'use strict'
const { spawnSync } = require('child_process')
const fs = require('fs')
const path = require('path')

const root = path.resolve(__dirname, '..')
const out = path.join(__dirname, 'out')
const cxx = process.env.CXX || 'g++'
const threads = process.env.NODE_MEND_THREADS || '2'
fs.mkdirSync(out, { recursive: true })

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts })
  if (r.error) { console.error(`gemm bench: cannot run ${cmd}: ${r.error.message}`); process.exit(1) }
  return r.status
}

function hasOpenBLAS() {
  const headers = ['/usr/include/x86_64-linux-gnu/cblas.h', '/usr/include/aarch64-linux-gnu/cblas.h',
    '/usr/include/cblas.h', '/usr/include/openblas/cblas.h', '/usr/local/include/cblas.h']
  if (!headers.some((h) => fs.existsSync(h))) {
    // Ask the compiler whether <cblas.h> is on its include path and -lopenblas links.
    const probe = path.join(out, 'probe.cc')
    fs.writeFileSync(probe, '#include <cblas.h>\nint main(){return 0;}\n')
    const r = spawnSync(cxx, [probe, '-o', path.join(out, 'probe'), '-lopenblas'], { stdio: 'ignore' })
    return !r.error && r.status === 0
  }
  return true
}

// gemm.cc's epilogue (bias, GELU) lives in bias.cc and gelu.cc.
const common = ['-O3', '-std=c++17', '-pthread', '-Inative', 'native/kernels/cpu/gemm.cc', 'native/kernels/cpu/bias.cc', 'native/kernels/cpu/gelu.cc', 'native/core/threadpool.cc']
const check = path.join(out, 'gemm_check')
const bench = path.join(out, 'gemm_bench')

console.log(`gemm bench: compiling (${cxx} -O3) into ${path.relative(root, out)}/`)
if (run(cxx, ['bench/gemm_check.cc', 'native/testing/gemm_check.cc', ...common, '-o', check]) !== 0) process.exit(1)
const blas = hasOpenBLAS()
const benchArgs = ['bench/gemm_bench.cc', ...common, '-o', bench]
if (blas) benchArgs.push('-DHAVE_OPENBLAS', '-lopenblas')
if (run(cxx, benchArgs) !== 0) process.exit(1)
if (!blas) {
  console.log('note: OpenBLAS (cblas.h / -lopenblas) not found: timing ours only. ' +
    'For the comparison: apt-get install libopenblas-dev')
}

const env = { ...process.env, NODE_MEND_THREADS: threads }
console.log('\n== correctness (vs. naive double-precision loop) ==')
if (run(check, [], { env }) !== 0) {
  console.error('gemm bench: the correctness check FAILED; not printing timings.')
  process.exit(1)
}
console.log('\n== timings ==')
process.exit(run(bench, [threads], { env }) === 0 ? 0 : 1)
