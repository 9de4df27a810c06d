// Where the native addon is: the source build (build/Release, from `npm install` in a clone or on a
// platform without a prebuilt binary) first, then the prebuilt N-API binary shipped in the npm
// package for this platform (prebuilds/<platform>-<arch>/node_mend.node, node-gyp-build's layout).
// Used by lib/core/native.ts (at run time) and scripts/build-native.js (at install time).
'use strict'
const fs = require('fs')
const path = require('path')

const root = path.resolve(__dirname, '..')

function candidates(name = 'node_mend.node') {
  return [
    path.join(root, 'build', 'Release', name),
    path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, name),
  ]
}

/** The first candidate that exists, or null. */
function findAddon(name) {
  return candidates(name).find((f) => fs.existsSync(f)) ?? null
}

module.exports = { candidates, findAddon, root }
