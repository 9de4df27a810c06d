#!/usr/bin/env node
// Checks lib/'s layering (run by `npm test` through test/10.layout.test.ts): every import points
// down the layer order below, there is no import cycle between files, and only lib/core/ loads the
// native addon. Prints the violations and exits 1 if there are any.
'use strict'
const fs = require('fs')
const path = require('path')

// Lower layers first; a module may import its own layer or any layer before it.
const LAYERS = ['core', 'tokenizer', 'model', 'data', 'mend', 'easyedit', 'app', 'index']
const lib = path.resolve(__dirname, '..', 'lib')

function files(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : [])
}
const layerOf = (f) => {
  const rel = path.relative(lib, f)
  return rel === 'index.ts' ? 'index' : rel.split(path.sep)[0]
}

function check() {
  const problems = []
  const graph = new Map()
  for (const f of files(lib)) {
    const src = fs.readFileSync(f, 'utf8')
    const deps = []
    for (const m of src.matchAll(/(?:from|import\(|require\()\s*['"](\.{1,2}\/[^'"]+)['"]/g)) {
      const target = path.resolve(path.dirname(f), m[1]) + '.ts'
      deps.push(target)
      const a = layerOf(f), b = layerOf(target)
      if (!LAYERS.includes(a)) problems.push(`${path.relative(lib, f)}: folder "${a}" is not a known layer`)
      else if (LAYERS.indexOf(b) > LAYERS.indexOf(a)) problems.push(`${path.relative(lib, f)} (${a}) imports ${path.relative(lib, target)} (${b}): imports must point down`)
    }
    if (layerOf(f) !== 'core' && (/node_mend(_testing)?\.node/.test(src) || /NODE_MEND_ADDON/.test(src))) {
      problems.push(`${path.relative(lib, f)} loads the native addon (only lib/core/ may)`)
    }
    if (layerOf(f) !== 'core' && /import\s*\{[^}]*\bnative\b[^}]*\}\s*from\s*'[^']*core\/native'/.test(src)) {
      problems.push(`${path.relative(lib, f)} reaches into the addon object (native()); use the functions lib/core/native.ts exports`)
    }
    graph.set(f, deps)
  }
  // Cycles: depth-first search over file imports.
  const state = new Map()
  const visit = (f, stack) => {
    state.set(f, 1)
    for (const d of graph.get(f) || []) {
      if (state.get(d) === 1) problems.push(`import cycle: ${[...stack.slice(stack.indexOf(d)), d].map((x) => path.relative(lib, x)).join(' -> ')}`)
      else if (!state.has(d) && graph.has(d)) visit(d, [...stack, d])
    }
    state.set(f, 2)
  }
  for (const f of graph.keys()) if (!state.has(f)) visit(f, [f])
  return problems
}

module.exports = { check, LAYERS }
if (require.main === module) {
  const p = check()
  for (const x of p) console.error(x)
  console.log(p.length ? `${p.length} layering problem(s)` : `lib/ layering ok (${LAYERS.join(' < ')})`)
  process.exit(p.length ? 1 : 0)
}
