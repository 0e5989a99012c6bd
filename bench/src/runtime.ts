/**
 * How the bench's processes run its code: a bundle of plain JavaScript under `node` (built by `build.ts`, one
 * directory per `pnpm bench` run under `dist/`), or the TypeScript sources under tsx. This module loads nothing, so
 * that a case's process pays for none of it.
 */
import { join } from "node:path"
import { fileURLToPath } from "node:url"

/** The entry points the bench starts in processes of their own, by their source in the bench's directory. */
export const entries = {
  /** Runs one case. */
  child: "src/child.ts",
  /** A receiving peer in a process of its own. */
  receiver: "src/ours/receiver.ts"
} as const

/**
 * The directory of the bundle this process runs, or undefined when it runs the sources under tsx. Every file of a
 * bundle, entry point or chunk, sits in that one directory.
 */
export const currentBundle: string | undefined = import.meta.url.endsWith(".ts")
  ? undefined
  : fileURLToPath(new URL(".", import.meta.url))

/**
 * The bench's directory, from the sources (`src/runtime.ts`, as the parent process runs them) or from a bundle
 * (`dist/run-<pid>/`, as a case's process may): the browser cases bundle their pages from the sources there.
 */
export const benchDir = fileURLToPath(new URL(currentBundle === undefined ? ".." : "../..", import.meta.url))

/** The Node arguments that run `entry`: from the bundle in `bundle`, or from the sources under tsx. */
export const nodeArgs = (entry: keyof typeof entries, bundle: string | undefined): Array<string> =>
  bundle === undefined
    ? ["--import", "tsx", "--conditions=@intersession/source", join(benchDir, entries[entry])]
    : [join(bundle, `${entry}.js`)]
