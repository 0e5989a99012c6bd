/**
 * Builds what the cases' processes run: plain JavaScript, as users run the library, not TypeScript under tsx
 * (whose loader and in-memory compiled sources cost a case's process memory and start-up time). esbuild bundles the
 * bench's own sources, one file per entry point and one chunk per lazily imported case, so a case's process loads
 * only that case's modules. Every package it imports stays outside the bundle and loads from its installed files,
 * as in an application: effect, better-sqlite3, mqtt, …, and the library itself, from the packages' built
 * JavaScript (`dist/`, which `pnpm bench` builds first), what users install.
 *
 * Each run builds into a directory of its own, `dist/run-<pid>` (gitignored): another `pnpm bench` in the same tree
 * keeps running the bundle it built.
 */
import * as Esbuild from "esbuild"
import { mkdirSync, readdirSync, rmSync } from "node:fs"
import { isBuiltin } from "node:module"
import { join } from "node:path"
import { benchDir, entries } from "./runtime.js"

const distDir = join(benchDir, "dist")

/**
 * Leaves packages external under their resolved file path. A bare name would be resolved again from `dist/`,
 * where the bench's dependencies are not installed; the path is the file Node would load from the importing source.
 * esbuild resolves it with Node's conditions (`conditions: []` below drops its bundler-only `module`).
 */
const externalPackages: Esbuild.Plugin = {
  name: "external-packages",
  setup(build) {
    build.onResolve({ filter: /^[^./]/ }, async (args) => {
      if (isBuiltin(args.path) || args.pluginData === "external-packages") {
        return undefined
      }
      const resolved = await build.resolve(args.path, {
        kind: args.kind,
        resolveDir: args.resolveDir,
        importer: args.importer,
        pluginData: "external-packages"
      })
      return resolved.errors.length > 0 ? { errors: resolved.errors } : { path: resolved.path, external: true }
    })
  }
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

/** Removes what runs that ended without cleaning up (killed, interrupted) left in `dist/`. */
const sweep = (): void => {
  mkdirSync(distDir, { recursive: true })
  for (const name of readdirSync(distDir)) {
    const pid = /^run-(\d+)$/.exec(name)?.[1]
    if (pid === undefined || !alive(Number(pid))) rmSync(join(distDir, name), { recursive: true, force: true })
  }
}

/** Bundles every entry point into this run's directory and returns it; {@link remove} it once the run is over. */
export const build = async (): Promise<string> => {
  sweep()
  const dir = join(distDir, `run-${process.pid}`)
  await Esbuild.build({
    absWorkingDir: benchDir,
    entryPoints: Object.fromEntries(Object.entries(entries).map(([name, source]) => [name, join(benchDir, source)])),
    outdir: dir,
    // Chunks sit next to the entry points, so `import.meta.url` locates the bundle from any of them.
    chunkNames: "[name]-[hash]",
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: `node${process.versions.node}`,
    conditions: [],
    sourcemap: "linked",
    logLevel: "warning",
    plugins: [externalPackages]
  })
  return dir
}

export const remove = (dir: string): void => rmSync(dir, { recursive: true, force: true })
