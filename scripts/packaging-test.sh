#!/usr/bin/env bash
# The packaging test: packs every package, installs the tarballs with npm into fresh projects outside the
# workspace, as a user would, and runs them with plain node.
#   1. An application with every package and the SQLite driver: every public module loads, a consumer of the public
#      types type-checks, the two-peers and TCP + SQLite examples run, and `npx intersession demo` keeps its promises.
#   2. A PostgreSQL-only application: better-sqlite3 is neither installed nor built, SqliteBackend says what to
#      install, and (when PostgreSQL runs on 127.0.0.1:5432) two peers exchange messages through it.
#   3. A browser application: the browser package's modules load, a tab's engine type-checks with the DOM's types
#      and esbuild bundles it for the browser.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/intersession-packaging-XXXXXX")"
trap 'rm -rf "$work"' EXIT
step() { printf '\n== %s\n' "$*"; }
npm_install() { npm install --no-audit --no-fund --loglevel=error "$@"; }

step "pack"
bash scripts/release-check.sh "$work/tarballs"
core="$work/tarballs/intersession-core-0.2.0.tgz"
testing="$work/tarballs/intersession-testing-0.2.0.tgz"
node="$work/tarballs/intersession-platform-node-0.2.0.tgz"
browser="$work/tarballs/intersession-platform-browser-0.2.0.tgz"
for tarball in "$core" "$testing" "$node" "$browser"; do test -f "$tarball" || { echo "no $tarball" >&2; exit 1; }; done

consumer() { # DIR: a new project with the consumer's tsconfig
  mkdir -p "$1/src"
  printf '{ "name": "consumer", "private": true, "type": "module" }\n' >"$1/package.json"
  cp scripts/packaging/tsconfig.json "$1/"
}

step "an application with every package and SQLite"
app="$work/app"
consumer "$app"
cp examples/two-peers.ts examples/production.ts "$app/src/"
node scripts/packaging/seed-prebuild.mjs
(cd "$app" && npm_install "$core" "$testing" "$node" "@effect/sql-sqlite-node@^0.53.0" typescript@5.9.3 "@types/node@^20")
(cd "$app" && node "$repo/scripts/packaging/check-install.mjs" @intersession/core @intersession/testing @intersession/platform-node)
(cd "$app" && npx tsc -p . && echo "the consumer type-checks against the published declarations (skipLibCheck off)")
(cd "$app" && node dist/two-peers.js && node dist/production.js)
# 600 messages and 3 kills: with 200 and 2, the transfer often ended before the second kill, and on a loaded machine
# the first could miss too, leaving no kill mid-transfer (the demo then fails, rightly: its kills proved nothing).
(cd "$app" && npx intersession --version && npx intersession demo --messages 600 --kills 3)

step "a PostgreSQL-only application"
pg="$work/pg"
consumer "$pg"
cp scripts/packaging/pg/app.ts "$pg/src/"
cp scripts/packaging/pg/driver-missing.mjs "$pg/"
(cd "$pg" && npm_install "$core" "$node" "@effect/sql-pg@^0.53.0")
if [ -e "$pg/node_modules/better-sqlite3" ] || [ -e "$pg/node_modules/@effect/sql-sqlite-node" ]; then
  echo "the PostgreSQL-only install holds the SQLite driver" >&2
  exit 1
fi
echo "install size without better-sqlite3: $(du -sh "$pg/node_modules" | cut -f1), $(ls "$pg/node_modules" "$pg"/node_modules/@*/ | grep -vc '^$\|:$') packages; the largest:"
(cd "$pg/node_modules" && du -s -- [!@]* @*/* | sort -n | tail -5 | awk '{ printf "  %s %d MiB\n", $2, $1 / 1024 }')
(cd "$pg" && node "$repo/scripts/packaging/check-install.mjs" @intersession/core @intersession/platform-node)
(cd "$pg" && node driver-missing.mjs)
# @effect/sql-pg's declarations import those of its driver, pg: a consumer type-checking them needs @types/pg.
(cd "$pg" && npm_install typescript@5.9.3 "@types/node@^20" "@types/pg@^8" && npx tsc -p . &&
  echo "the PostgreSQL-only consumer type-checks against the published declarations (skipLibCheck off)")
if (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  (cd "$pg" && node dist/app.js)
else
  echo "SKIPPED running the PostgreSQL application: no PostgreSQL on 127.0.0.1:5432"
fi
step "a browser application"
web="$work/web"
mkdir -p "$web/src"
printf '{ "name": "web", "private": true, "type": "module" }\n' >"$web/package.json"
cp scripts/packaging/browser/tsconfig.json "$web/"
cp scripts/packaging/browser/app.ts "$web/src/"
(cd "$web" && npm_install "$core" "$browser" "@effect/platform-browser@^0.77.1" esbuild@0.28.2 typescript@5.9.3)
(cd "$web" && node "$repo/scripts/packaging/check-install.mjs" @intersession/platform-browser)
(cd "$web" && npx tsc -p . && echo "the tab's engine type-checks against the published declarations (skipLibCheck off)")
(cd "$web" && npx esbuild src/app.ts --bundle --format=esm --platform=browser --minify --outfile=dist/app.js \
  --log-level=warning && echo "bundled for the browser: $(du -h dist/app.js | cut -f1) minified")

step "the packages install and run as published"
