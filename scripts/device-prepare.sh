#!/usr/bin/env bash
# device-prepare.sh — run HERE (the development machine) before a device run: assembles .device-carry/
# (git-ignored) with what the GPU machine lacks: a Node binary (xz-compressed: the machine has no
# Node), the addon and dist/ built here, and the transformers-comparison fixtures
# (scripts/hf-fixture.js). Then, with the device tool:
#   run  command: "bash scripts/device-check.sh"   carry: [".device-carry"]   timeout_s: 480
# Needs the addon built with the CUDA backend (npm run build:native where nvcc is) and dist/ (npx tsc).
set -euo pipefail
cd "$(dirname "$0")/.."
out=.device-carry
test -f build/Release/node_mend.node || { echo "build the addon first: npm run build:native"; exit 1; }
test -f dist/model/gpt2.js || { echo "build the TypeScript first: npx tsc -p tsconfig.json"; exit 1; }
node -e "const i = require('./build/Release/node_mend.node').cudaInfo(); if (!i.built) { console.error('the addon has no CUDA backend (no nvcc at build time)'); process.exit(1) }"
rm -rf "$out"
mkdir -p "$out"
cp build/Release/node_mend.node "$out/"
cp -r dist "$out/dist"
node scripts/hf-fixture.js "$out/hf"
xz -T2 -6 -c "$(command -v node)" > "$out/node.xz"
du -sh "$out"
echo "carry: $out  (the working tree plus this must stay under the device tool's 64 MiB)"
