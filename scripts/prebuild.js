#!/usr/bin/env node
// `npm pack` / `npm publish` (prepack): puts the product addon this machine built into
// prebuilds/<platform>-<arch>/node_mend.node, so that installing the package on the same platform
// needs no cmake or C++ toolchain (scripts/build-native.js uses it when it loads). The testing addon
// is not shipped.
'use strict'
const fs = require('fs')
const path = require('path')

const root = path.resolve(__dirname, '..')
const built = path.join(root, 'build', 'Release', 'node_mend.node')
if (!fs.existsSync(built)) {
  console.error('node-mend prebuild: build/Release/node_mend.node is missing (run npm run build:native)')
  process.exit(1)
}
const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`)
fs.rmSync(path.join(root, 'prebuilds'), { recursive: true, force: true })
fs.mkdirSync(dir, { recursive: true })
fs.copyFileSync(built, path.join(dir, 'node_mend.node'))
console.log(`node-mend prebuild: ${path.relative(root, path.join(dir, 'node_mend.node'))} (${(fs.statSync(built).size / 1024).toFixed(0)} KiB)`)
