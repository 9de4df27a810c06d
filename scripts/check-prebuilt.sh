#!/usr/bin/env bash
# Install without a compiler (run by .ci/run): `npm pack` (prepack puts the prebuilt linux-x64 addon
# into prebuilds/), then install the tarball into an empty folder with a PATH that has node and npm
# but no cmake, no C++ compiler and no make, and run `npx node-mend demo` there.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
npm pack --silent --pack-destination "$work" > "$work/pack.txt"
tarball="$work/$(tail -1 "$work/pack.txt")"
echo "packed $(basename "$tarball") ($(du -h "$tarball" | cut -f1))"
tar -tzf "$tarball" > "$work/files.txt"
grep -q 'package/prebuilds/linux-x64/node_mend.node' "$work/files.txt" || { echo "the tarball has no prebuilt addon"; exit 1; }
bin="$work/bin"
mkdir -p "$bin"
for t in node npm npx sh bash env cat ls mkdir rm cp mv ln chmod uname tar gzip grep sed dirname basename readlink; do
  p="$(command -v "$t" || true)"
  [ -n "$p" ] && ln -s "$p" "$bin/$t"
done
for t in cmake c++ g++ gcc cc make ninja; do
  if PATH="$bin" command -v "$t" >/dev/null 2>&1; then echo "the test PATH still has $t"; exit 1; fi
done
mkdir "$work/app"
cd "$work/app"
echo '{ "name": "prebuilt-check", "private": true }' > package.json
PATH="$bin" HOME="$work" npm install --no-audit --no-fund --loglevel=error "$tarball" 2>&1 | tail -5
test ! -e node_modules/node-mend/build || { echo "node-mend was built from source"; exit 1; }
PATH="$bin" HOME="$work" npx --no-install node-mend demo -n 1 | tail -8
echo "prebuilt install ok: no cmake, compiler or make on PATH"
