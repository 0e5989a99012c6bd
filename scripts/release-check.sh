#!/usr/bin/env bash
# `pnpm release:check [OUT]`: builds every published package and packs it as `pnpm publish` would (workspace
# versions replaced, `files` applied) into OUT (build/packages by default), listing each tarball's contents.
set -euo pipefail
cd "$(dirname "$0")/.."

out="$(mkdir -p "${1:-build/packages}" && cd "${1:-build/packages}" && pwd)"
rm -f "$out"/intersession-*.tgz
pnpm build
for package in core testing platform-node platform-browser; do
  (cd "packages/$package" && pnpm pack --pack-destination "$out" >/dev/null)
done
for tarball in "$out"/intersession-*.tgz; do
  echo "$(basename "$tarball"): $(tar tzf "$tarball" | wc -l) files, $(du -k "$tarball" | cut -f1) KiB"
  tar tzf "$tarball" | sed 's|^package/||' | grep -v '^src/\|^dist/' | sed 's/^/  /'
  for folder in dist src; do
    echo "  $folder/: $(tar tzf "$tarball" | grep -c "^package/$folder/") files"
  done
done
