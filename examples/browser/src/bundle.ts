/**
 * The page: `page/index.html` and `page/main.ts` bundled by esbuild for the browser, in memory, when the server
 * starts. The workspace's packages are bundled from their TypeScript sources (the `@intersession/source` condition),
 * so the example needs no build first.
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Esbuild from "esbuild"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

const pageDir = Path.join(Path.dirname(fileURLToPath(import.meta.url)), "..", "page")

export class BundleError extends Data.TaggedError("BundleError")<{ readonly cause: unknown }> {
  override get message(): string {
    return `cannot bundle the page: ${String(this.cause)}`
  }
}

export const bundlePage = Effect.tryPromise({
  try: async () => {
    const result = await Esbuild.build({
      entryPoints: [Path.join(pageDir, "main.ts")],
      bundle: true,
      write: false,
      format: "esm",
      platform: "browser",
      target: "es2022",
      conditions: ["@intersession/source"],
      minify: true,
      sourcemap: false,
      logLevel: "silent"
    })
    return {
      html: Fs.readFileSync(Path.join(pageDir, "index.html"), "utf8"),
      script: result.outputFiles[0]!.text
    }
  },
  catch: (cause) => new BundleError({ cause })
})
