#!/usr/bin/env node
// Builds the native addons with cmake-js (run by `npm install`): the product addon node_mend.node
// and, unless NODE_MEND_TESTING=0, the testing addon node_mend_testing.node that `npm test` and the
// benchmarks use. Checks the toolchain first so a missing tool is named instead of failing deep
// inside CMake, and fails the install (non-zero exit) rather than leaving a package without its
// addon; each built addon must load.
'use strict'
const { spawnSync } = require('child_process')
const fs = require('fs')
const path = require('path')

const root = path.resolve(__dirname, '..')
const release = path.join(root, 'build', 'Release')
const out = path.join(release, 'node_mend.node')
const testing = !['0', 'off', 'false', 'no'].includes(String(process.env.NODE_MEND_TESTING ?? '1').toLowerCase())
const targets = [out, ...(testing ? [path.join(release, 'node_mend_testing.node')] : [])]

function has(cmd, args) {
  const r = spawnSync(cmd, args, { stdio: 'ignore' })
  return !r.error && r.status === 0
}

function fail(msg) {
  console.error(`\nnode-mend: ${msg}\n`)
  for (const f of targets) try { fs.rmSync(f, { force: true }) } catch {}
  process.exit(1)
}

// An installed package ships a prebuilt N-API binary for linux-x64 (prebuilds/, made by `npm pack`):
// when it loads here, no toolchain is needed. `--force` (npm run build:native) always builds.
const prebuilt = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'node_mend.node')
if (!process.argv.includes('--force') && !process.env.NODE_MEND_BUILD_FROM_SOURCE && fs.existsSync(prebuilt) && !fs.existsSync(out)) {
  try {
    require(prebuilt)
    console.log(`node-mend: using the prebuilt addon ${path.relative(root, prebuilt)} (NODE_MEND_BUILD_FROM_SOURCE=1 builds from source)`)
    process.exit(0)
  } catch (e) {
    console.log(`node-mend: the prebuilt addon does not load here (${e.message}); building from source`)
  }
}

const missing = []
if (!has('cmake', ['--version'])) missing.push('cmake >= 3.15 (Debian/Ubuntu: apt-get install cmake)')
const cxx = process.env.CXX || 'c++'
if (!has(cxx, ['--version']) && !has('g++', ['--version']) && !has('clang++', ['--version'])) {
  missing.push('a C++17 compiler (Debian/Ubuntu: apt-get install g++)')
}
if (!has('make', ['--version']) && !has('ninja', ['--version'])) missing.push('make or ninja (apt-get install make)')
if (missing.length) fail(`cannot build the native addon; missing:\n  - ${missing.join('\n  - ')}`)

const cmakeJs = require.resolve('cmake-js/bin/cmake-js')
const args = [cmakeJs, 'compile', '--directory', root, '--log-level', 'warn', `--CDNODE_MEND_TESTING=${testing ? 'ON' : 'OFF'}`]
// The CUDA backend builds where CMake finds nvcc; NODE_MEND_CUDA=0 turns it off, =1 requires it.
if (process.env.NODE_MEND_CUDA !== undefined && process.env.NODE_MEND_CUDA !== '') {
  const on = !['0', 'off', 'false', 'no'].includes(String(process.env.NODE_MEND_CUDA).toLowerCase())
  args.push(`--CDNODE_MEND_CUDA=${on ? 'ON' : 'OFF'}`)
}
if (process.env.NODE_MEND_DEBUG) args.push('--debug')
const jobs = process.env.CMAKE_BUILD_PARALLEL_LEVEL || String(require('os').availableParallelism?.() || 2)
const t0 = Date.now()
console.log(`node-mend: building the native addon${testing ? 's (product + testing)' : ''} (cmake-js, ${jobs} jobs)…`)
const r = spawnSync(process.execPath, args, {
  cwd: root, stdio: 'inherit', env: { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: jobs },
})
if (r.status !== 0) fail('the native build failed (see the compiler output above).')
for (const f of targets) {
  if (!fs.existsSync(f)) fail(`the build finished but ${path.relative(root, f)} is missing.`)
  try {
    require(f)
  } catch (e) {
    fail(`the built addon ${path.relative(root, f)} does not load: ${e.message}`)
  }
}
const cuda = require(out).cudaInfo()
console.log(`node-mend: ${targets.map((f) => path.basename(f)).join(' and ')} built in ${((Date.now() - t0) / 1000).toFixed(1)} s` +
  ` (CUDA backend: ${cuda.built ? 'built' + (cuda.available ? ', ' + cuda.device : '; no GPU here') : 'not built'})`)
