// better-sqlite3, when installed, downloads a prebuilt addon from GitHub, and builds it from source (minutes of
// compiling) where GitHub is out of reach, as on this project's CI machines. This stands in for that download: it
// puts the addon the workspace's install built into prebuild-install's download cache, under the URL it would
// fetch, so the packaging test's install takes what a user's would. A version the workspace did not build is not
// seeded: its install builds it from source, and the test only takes longer.
import { execFileSync } from "node:child_process"
import { createHash } from "node:crypto"
import { existsSync, mkdirSync, readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { homedir } from "node:os"
import { dirname, join } from "node:path"

// The workspace's better-sqlite3, as platform-node's SQLite driver resolves it.
const platformNode = new URL("../../packages/platform-node/package.json", import.meta.url)
const require = createRequire(createRequire(platformNode).resolve("@effect/sql-sqlite-node/package.json"))
const root = dirname(require.resolve("better-sqlite3/package.json"))
const { version } = JSON.parse(readFileSync(join(root, "package.json"), "utf8"))
const addon = join(root, "build", "Release", "better_sqlite3.node")
if (!existsSync(addon)) {
  console.log(`no built better-sqlite3 ${version} in the workspace: the install will build it`)
  process.exit(0)
}
const name = `better-sqlite3-v${version}-node-v${process.versions.modules}-${process.platform}-${process.arch}.tar.gz`
const url = `https://github.com/WiseLibs/better-sqlite3/releases/download/v${version}/${name}`
const cache = join(process.env.npm_config_cache ?? join(homedir(), ".npm"), "_prebuilds")
const digest = createHash("sha512").update(url).digest("hex").slice(0, 6)
const file = join(cache, `${digest}-${name.replace(/[^a-zA-Z0-9.]+/g, "-")}`)
mkdirSync(cache, { recursive: true })
execFileSync("tar", ["czf", file, "-C", root, "build/Release/better_sqlite3.node"])
console.log(`better-sqlite3 ${version}: the workspace's addon stands in for ${url}`)
