/**
 * The browser scenarios' kit: the example's Node peer as a child process (killed with SIGKILL and started again on
 * the same data), Debian's Chromium driven by playwright-core, and what each side recorded.
 */
import Sqlite from "better-sqlite3"
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core"

const exampleDir = fileURLToPath(new URL("..", import.meta.url))

export const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium"
export const chromiumMissing = existsSync(chromiumPath)
  ? undefined
  : `Chromium is missing at ${chromiumPath}: install it with \`apt-get install -y chromium\` (or set CHROMIUM_PATH)`

/** Two free ports in a row: the page's HTTP server, then the engine's WebSocket. */
const freePorts = async (): Promise<number> => {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = createServer()
      server.once("error", reject)
      server.listen(0, "127.0.0.1", () => {
        const address = server.address()
        server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0))
      })
    })
    if (port > 0 && port < 65535 && await isFree(port + 1)) return port
  }
  throw new Error("no two free ports in a row")
}

const isFree = (port: number) =>
  new Promise<boolean>((resolve) => {
    const server = createServer()
    server.once("error", () => resolve(false))
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)))
  })

export const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis))

/** Polls `check` until it returns a value that is not `undefined`, for at most `timeout` ms. */
export const until = async <A>(
  what: string,
  check: () => Promise<A | undefined>,
  timeout = 60_000,
  every = 100
): Promise<A> => {
  const deadline = Date.now() + timeout
  let last: unknown
  while (Date.now() < deadline) {
    try {
      const value = await check()
      if (value !== undefined) return value
    } catch (error) {
      last = error
    }
    await sleep(every)
  }
  throw new Error(`timed out waiting for ${what}${last === undefined ? "" : `: ${String(last)}`}`)
}

/** The example's Node peer, in a child process on a data directory that outlives it. */
export class Server {
  private child: ChildProcess | undefined
  private constructor(readonly port: number, readonly data: string) {}

  static async start(): Promise<Server> {
    const server = new Server(await freePorts(), mkdtempSync(join(tmpdir(), "intersession-browser-test-")))
    await server.spawn()
    return server
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`
  }

  async spawn(): Promise<void> {
    // Node itself, with tsx's loader: the `tsx` command would run the server in a child process of its own, which a
    // SIGKILL of the command leaves running.
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "--conditions=@intersession/source",
        "src/server.ts",
        "--data",
        this.data,
        "--port",
        String(this.port),
        "--ws-port",
        String(this.port + 1)
      ],
      { cwd: exampleDir, stdio: ["ignore", "pipe", "pipe"] }
    )
    this.child = child
    let output = ""
    child.stdout?.on("data", (chunk: Buffer) => output += chunk.toString())
    child.stderr?.on("data", (chunk: Buffer) => output += chunk.toString())
    await until(`the server to listen (output: ${output})`, async () => {
      if (child.exitCode !== null) throw new Error(`the server exited with ${child.exitCode}: ${output}`)
      const response = await fetch(`${this.url}/api/status`)
      return response.ok ? true : undefined
    })
  }

  /** `kill -9`, and waits until the process is gone. */
  async kill(): Promise<void> {
    const child = this.child
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((resolve) => child.once("exit", resolve))
    child.kill("SIGKILL")
    await exited
  }

  async stop(): Promise<void> {
    await this.kill()
    rmSync(this.data, { recursive: true, force: true })
  }

  /** Sends `s<from>` … to the tab `peer` on `lane`; returns once they are stored. */
  async send(peer: string, lane: string, from: number, count: number): Promise<void> {
    const response = await fetch(`${this.url}/api/send?peer=${peer}&lane=${lane}&from=${from}&count=${count}`, {
      method: "POST"
    })
    if (!response.ok) throw new Error(`send failed: ${response.status} ${await response.text()}`)
  }

  /** What the server's store holds of `peer` on `lane`, read from its file while the server is down. */
  receivedOffline(peer: string, lane: string): Array<string> {
    // Not read-only: a store left by a killed process has a write-ahead log to recover, which a reader cannot.
    const db = new Sqlite(join(this.data, "server.db"), { fileMustExist: true })
    try {
      const rows = db.prepare("SELECT body FROM received WHERE source = ? AND lane = ? ORDER BY id").all(peer, lane)
      return rows.map((row) => (row as { body: string }).body)
    } finally {
      db.close()
    }
  }

  /** What the server's application recorded from `peer` on `lane`, in delivery order. */
  async received(peer: string, lane: string): Promise<Array<string>> {
    const response = await fetch(`${this.url}/api/received?peer=${peer}&lane=${lane}`)
    return ((await response.json()) as { bodies: Array<string> }).bodies
  }
}

/** Chromium, headless, as root on a closed network (see vitest.config.ts). */
export const launch = (): Promise<Browser> =>
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

export interface Recorded {
  readonly lane: string
  readonly seq: number
  readonly text: string
}

/** A tab of the example page, for the tab `peer`. */
export class Tab {
  private constructor(readonly page: Page, readonly peer: string) {}

  static async open(context: BrowserContext, server: Server, peer: string, query = ""): Promise<Tab> {
    const page = await context.newPage()
    const tab = new Tab(page, peer)
    await tab.goto(server, query)
    return tab
  }

  async goto(server: Server, query = ""): Promise<void> {
    await this.page.goto(`${server.url}/?peer=${this.peer}${query}`)
    await this.page.waitForFunction(() => "example" in globalThis)
  }

  /** Resolves once the tab's engine runs (its store is open). */
  ready(): Promise<boolean> {
    return this.page.evaluate(() => (globalThis as unknown as { example: { ready: Promise<boolean> } }).example.ready)
  }

  async reload(): Promise<void> {
    await this.page.reload()
    await this.page.waitForFunction(() => "example" in globalThis)
  }

  send(lane: string, texts: ReadonlyArray<string>): Promise<number> {
    return this.page.evaluate(
      ([lane, texts]) =>
        (globalThis as unknown as {
          example: { send: (lane: string, texts: ReadonlyArray<string>) => Promise<number> }
        })
          .example.send(lane, texts),
      [lane, texts] as const
    )
  }

  records(): Promise<Array<Recorded>> {
    return this.page.evaluate(() =>
      (globalThis as unknown as { example: { records: () => Promise<Array<Recorded>> } }).example.records()
    )
  }

  /** Messages the tab sent that the server has not acknowledged yet. */
  pending(): Promise<number> {
    return this.page.evaluate(() =>
      (globalThis as unknown as { example: { pending: () => Promise<number> } }).example.pending()
    )
  }

  status(): Promise<string> {
    return this.page.evaluate(() => document.getElementById("status")?.textContent ?? "")
  }
}

export const texts = (prefix: string, from: number, count: number) =>
  Array.from({ length: count }, (_, i) => `${prefix}${from + i}`)

/** The texts of `lane`, in the order the page's store keeps them (by seq). */
export const onLane = (records: ReadonlyArray<Recorded>, lane: string) =>
  records.filter((record) => record.lane === lane).map((record) => record.text)

/** Where the reload scenario saves the page before the reload, just after it and once complete, when set. */
export const shots = process.env.SCREENSHOT_DIR
