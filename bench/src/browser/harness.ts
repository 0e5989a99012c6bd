/**
 * What the browser cases share: their page, bundled with esbuild from its sources when the case starts and served
 * on 127.0.0.1 (a secure context, which WebCrypto and Web Locks need), Debian's Chromium driven by playwright-core,
 * and one run: the page sends, the case's Node side counts what its application gets on a {@link Watch}.
 */
import * as Esbuild from "esbuild"
import { existsSync, mkdirSync, writeFileSync } from "node:fs"
import * as Http from "node:http"
import { join } from "node:path"
import { chromium, type Page } from "playwright-core"
import { skipped, Watch } from "../anchors/harness.js"
import { type Result, Tally } from "../Result.js"
import { benchDir } from "../runtime.js"
import type { PageApi } from "./page/api.js"

export const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium"

/** The result of a browser case on a machine without Chromium, or undefined when it has it. */
export const withoutChromium = (messages: number): Result | undefined =>
  existsSync(chromiumPath)
    ? undefined
    : skipped(messages, `Chromium not found at ${chromiumPath}: apt-get install chromium`)

/**
 * The page `name` (`page/<name>.ts`) as one script. The library is bundled from its packages' built JavaScript
 * (`dist/`, which `pnpm bench` builds first), what a browser application ships: no `@intersession/source`.
 */
const bundle = async (name: "ours" | "socketIo"): Promise<string> => {
  const built = await Esbuild.build({
    absWorkingDir: benchDir,
    entryPoints: [join(benchDir, "src", "browser", "page", `${name}.ts`)],
    bundle: true,
    write: false,
    format: "esm",
    platform: "browser",
    target: "es2022",
    logLevel: "warning"
  })
  return built.outputFiles[0]!.text
}

// No favicon: its request would fail, and show as an error of the page.
const html = `<!doctype html><html><head><meta charset="utf-8"><title>bench</title><link rel="icon" href="data:,">
<script type="module" src="/page.js"></script></head><body></body></html>`

/** Serves the page at `/` on a free port of 127.0.0.1 until the returned function is called. */
const serve = async (script: string): Promise<{ readonly url: string; readonly close: () => Promise<void> }> => {
  const server = Http.createServer((request, response) => {
    const [status, type, body] = request.url === "/page.js"
      ? [200, "text/javascript", script]
      : request.url?.startsWith("/?") === true || request.url === "/"
      ? [200, "text/html", html]
      : [404, "text/plain", "not found"]
    response.writeHead(status, { "Content-Type": `${type}; charset=utf-8`, "Cache-Control": "no-store" })
    response.end(body)
  })
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, "127.0.0.1", resolve))
  const address = server.address()
  const port = typeof address === "object" && address !== null ? address.port : 0
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
}

/** Chromium, headless, as root on a closed network: no sandbox, nothing fetched in the background. */
const launch = () =>
  chromium.launch({
    executablePath: chromiumPath,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync"
    ]
  })

/** How long the page may take to connect: it retries for ever, which a refusal would turn into a hang. */
const readyMillis = 30_000

/** `promise`, or a failure saying what did not happen once `millis` have passed. */
const within = <A>(millis: number, what: string, promise: Promise<A>): Promise<A> => {
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${millis} ms waiting for ${what}`)), millis)
  })
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer))
}

/**
 * With `BENCH_PAGE_CPU_PROF` naming a directory, profiles the page's JavaScript through the DevTools protocol, as
 * `--cpu-prof` does a Node process: the returned function stops and writes `page-<name>-<pid>.cpuprofile` there.
 */
const startProfile = async (tab: Page): Promise<((name: string) => Promise<void>) | undefined> => {
  const dir = process.env.BENCH_PAGE_CPU_PROF
  if (dir === undefined || dir === "") return undefined
  const session = await tab.context().newCDPSession(tab)
  await session.send("Profiler.enable")
  await session.send("Profiler.start")
  return async (name) => {
    const { profile } = await session.send("Profiler.stop")
    mkdirSync(dir, { recursive: true })
    writeFileSync(join(dir, `page-${name}-${process.pid}.cpuprofile`), JSON.stringify(profile))
  }
}

export interface Options {
  readonly messages: number
  readonly payloadBytes: number
  /**
   * Whether the result reports the messages' ages on delivery as their latency (by default): not where they
   * measure a queue on the page's side.
   */
  readonly latency?: boolean | undefined
}

/**
 * Opens page `name` with `query` in a fresh Chromium, waits until it is connected, then times one run: from the
 * page being told to send until the Node side's application got every message (`running.watch`, set here, is what
 * it tells) and the page had every acknowledgement. The browser is closed whatever happens.
 */
export const run = async (
  name: "ours" | "socketIo",
  query: Record<string, string>,
  options: Options,
  running: { watch?: Watch }
): Promise<Result> => {
  const { messages, payloadBytes } = options
  const page = await serve(await bundle(name))
  try {
    const browser = await launch()
    try {
      const tab = await browser.newPage()
      // What goes wrong in the page shows in the case's error output.
      tab.on("pageerror", (error) => process.stderr.write(`page: ${error.message}\n`))
      tab.on("console", (message) => {
        if (message.type() === "error") process.stderr.write(`page console: ${message.text()}\n`)
      })
      await tab.goto(`${page.url}/?${new URLSearchParams(query)}`)
      await tab.waitForFunction(() => "bench" in globalThis)
      await within(
        readyMillis,
        "the page to connect",
        tab.evaluate(() => (globalThis as unknown as { bench: PageApi }).bench.ready)
      )

      const profiler = await startProfile(tab)
      // The page has one ack to give, once it has them all: the watch then waits for that and every delivery.
      const watch = new Watch(new Tally(messages), 1)
      running.watch = watch
      const pageErrors: Array<unknown> = []
      tab.evaluate(
        ([messages, payloadBytes]) => (globalThis as unknown as { bench: PageApi }).bench.run(messages, payloadBytes),
        [messages, payloadBytes] as const
      ).then(
        (failed) => watch.ack(failed === 0),
        (error: unknown) => {
          pageErrors.push(error)
          watch.ack(false)
        }
      )
      await watch.finished
      await profiler?.(name)
      // A page that failed fails the case with its error, rather than with the messages it did not send.
      return pageErrors.length === 0
        ? watch.result(options.latency === false ? { latencyP50Millis: undefined, latencyP99Millis: undefined } : {})
        : Promise.reject(pageErrors[0])
    } finally {
      await browser.close()
    }
  } finally {
    await page.close()
  }
}
