/**
 * `pnpm bench [--quick] [--repeat N] [--only <substring>] [--timeout <seconds>] [--tsx]`: runs every case (or those
 * whose id contains the substring) `repeat` times, each run in a fresh child process, rounds interleaved; prints
 * the table, the ratios of ours to each anchor and the issue's targets; writes `results/latest.json` and
 * `results/chart.svg` (quick: `results/quick.json` only).
 *
 * The children run JavaScript bundled once at the start (`build.ts`) under plain `node`, as users run the library;
 * `--tsx` runs them from the sources under tsx instead, to compare.
 *
 * Exits non-zero if one of ours failed, timed out, lost or duplicated a message: the only thing CI checks.
 * Anchors' losses are printed, never fatal; speeds are never asserted.
 */
import { spawn } from "node:child_process"
import { mkdirSync, writeFileSync } from "node:fs"
import * as Os from "node:os"
import { join } from "node:path"
import * as Build from "./build.js"
import { type Case, cases } from "./cases.js"
import {
  chart,
  type Entry,
  faulty,
  ratios,
  ratioTable,
  type Run,
  summarize,
  table,
  targets,
  targetTable
} from "./report.js"
import type { Result } from "./Result.js"
import * as Runtime from "./runtime.js"

interface Args {
  readonly quick: boolean
  readonly repeat: number
  readonly only: string | undefined
  readonly timeoutSeconds: number
  /** What the cases' processes run: the bundle under node, or the sources under tsx (`--tsx`). */
  readonly runtime: "bundle" | "tsx"
}

const usage = "usage: pnpm bench [--quick] [--repeat N] [--only <substring of a case id>] [--timeout <seconds>] [--tsx]"

/** The arguments, or what is wrong with them. */
const parseArgs = (argv: ReadonlyArray<string>): Args | string => {
  const flags = new Map<string, string | undefined>()
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!
    if (flag === "--quick" || flag === "--tsx") flags.set(flag, undefined)
    else if (flag === "--repeat" || flag === "--only" || flag === "--timeout") {
      const value = argv[++i]
      if (value === undefined) return `${flag} needs a value`
      flags.set(flag, value)
    } else return `unknown argument ${JSON.stringify(flag)}`
  }
  const quick = flags.has("--quick")
  const repeat = Number(flags.get("--repeat") ?? (quick ? 1 : 3))
  const timeoutSeconds = Number(flags.get("--timeout") ?? (quick ? 90 : 600))
  if (!Number.isInteger(repeat) || repeat < 1) return "--repeat needs a positive integer"
  if (!(timeoutSeconds > 0)) return "--timeout needs a positive number of seconds"
  return { quick, repeat, only: flags.get("--only"), timeoutSeconds, runtime: flags.has("--tsx") ? "tsx" : "bundle" }
}

/** Node flags for each case's process from `BENCH_CASE_NODE_ARGS` (`--cpu-prof` profiles it, say). */
const caseNodeArgs = process.env.BENCH_CASE_NODE_ARGS?.split(" ").filter((arg) => arg !== "") ?? []

/**
 * Runs one case in a fresh process, from the bundle in `bundle` or (undefined) under tsx; a crash, a bad exit or a
 * timeout becomes the run's error.
 */
const runChild = (c: Case, args: Args, bundle: string | undefined): Promise<{ result?: Result; error?: string }> =>
  new Promise((resolve) => {
    const { quick, timeoutSeconds } = args
    const child = spawn(
      process.execPath,
      [
        "--expose-gc",
        ...(c.nodeArgs ?? []),
        ...caseNodeArgs,
        ...Runtime.nodeArgs("child", bundle),
        c.id,
        ...(quick ? ["--quick"] : [])
      ],
      { cwd: Runtime.benchDir, stdio: ["ignore", "pipe", "pipe"] }
    )
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk))
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      child.kill("SIGKILL")
    }, timeoutSeconds * 1000)
    child.on("close", (code, signal) => {
      clearTimeout(timer)
      const line = stdout.split("\n").find((candidate) => candidate.startsWith("RESULT "))
      const lastError = stderr.trim().split("\n").slice(-3).join(" | ").slice(0, 300)
      if (timedOut) return resolve({ error: `timed out after ${timeoutSeconds} s` })
      if (code !== 0 || line === undefined) {
        return resolve({ error: `exited with ${signal ?? code}${lastError === "" ? "" : `: ${lastError}`}` })
      }
      try {
        resolve({ result: JSON.parse(line.slice("RESULT ".length)) as Result })
      } catch {
        resolve({ error: `unreadable result: ${line.slice(0, 200)}` })
      }
    })
  })

/** The cases of round `round`, rotated so that over the rounds no case always runs first or right after another. */
const orderOf = (list: ReadonlyArray<Case>, round: number, repeat: number): Array<Case> => {
  const shift = (round * Math.max(1, Math.floor(list.length / repeat))) % list.length
  return [...list.slice(shift), ...list.slice(0, shift)]
}

const progressOf = (result: Result | undefined, error: string | undefined): string => {
  if (error !== undefined) return `FAILED: ${error}`
  if (result === undefined) return "no result"
  if (result.skipped !== undefined) return `skipped: ${result.skipped}`
  const latency = result.latencyP50Millis === undefined ? "" : `, p50 ${result.latencyP50Millis.toFixed(2)} ms`
  const first = result.firstDeliveryMillis === undefined || result.sendLoopMillis === undefined
    ? ""
    : `, first delivery at ${result.firstDeliveryMillis.toFixed(0)} ms, send loop ended at ${
      result.sendLoopMillis.toFixed(0)
    } ms`
  const losses = result.lost + result.duplicated > 0 ? `, LOST ${result.lost}, DUP ${result.duplicated}` : ""
  return `${Math.round(result.perSecond).toLocaleString("en")} msg/s in ${
    result.seconds.toFixed(2)
  } s${latency}${first}${losses}`
}

const main = async (): Promise<number> => {
  const args = parseArgs(process.argv.slice(2))
  if (typeof args === "string") {
    console.error(`${args}\n${usage}`)
    return 2
  }
  const selected = cases.filter((c) => args.only === undefined || c.id.includes(args.only))
  if (selected.length === 0) {
    console.error(`no case id contains "${args.only ?? ""}"; ids: ${cases.map((c) => c.id).join(", ")}`)
    return 2
  }
  // Checked (and started) once here, so each mosquitto case does not spend seconds finding out on its own.
  const mosquitto = selected.some((c) => c.needsMosquitto === true)
    ? await (await import("./anchors/mqtt.js")).ensureMosquitto()
    : undefined
  if (mosquitto !== undefined) console.log(`MQTT → mosquitto cases skipped: ${mosquitto}`)
  const skippedOf = (c: Pick<Case, "needsMosquitto">) => (c.needsMosquitto === true ? mosquitto : undefined)
  const runnable = selected.filter((c) => skippedOf(c) === undefined)

  const began = performance.now()
  let bundle: string | undefined
  if (args.runtime === "bundle") {
    try {
      bundle = await Build.build()
    } catch (error) {
      console.error(`the cases could not be bundled: ${error instanceof Error ? error.message : String(error)}`)
      return 1
    }
    console.log(`bundled the cases in ${((performance.now() - began) / 1000).toFixed(1)} s`)
  }

  const runs = new Map<string, Array<Run>>(selected.map((c) => [c.id, []]))
  try {
    for (let round = 0; round < args.repeat; round++) {
      for (const [index, c] of orderOf(runnable, round, args.repeat).entries()) {
        const prefix = `[round ${round + 1}/${args.repeat}, ${index + 1}/${runnable.length}] ${c.id}`
        process.stdout.write(`${prefix} … `)
        const started = performance.now()
        const { result, error } = await runChild(c, args, bundle)
        runs.get(c.id)!.push({ round, result, error })
        console.log(`${progressOf(result, error)} (${((performance.now() - started) / 1000).toFixed(1)} s wall)`)
      }
    }
  } finally {
    if (bundle !== undefined) Build.remove(bundle)
  }
  const totalSeconds = (performance.now() - began) / 1000

  // Each case without its runner: what the report and the JSON hold.
  const entries: Array<Entry> = selected.map(({ run: _run, ...info }) => ({
    case: info,
    skipped: skippedOf(info),
    runs: runs.get(info.id)!
  }))
  const labelOf = (id: string) => selected.find((c) => c.id === id)?.label ?? id
  const ratioList = ratios(entries)
  const targetList = targets(entries)
  const mode = args.quick ? "quick (sizes too small for the numbers to mean anything)" : "full"

  console.log(`\n${mode}, ${args.runtime}, ${args.repeat} round(s), ${totalSeconds.toFixed(0)} s\n`)
  console.log(table(entries))
  if (ratioList.length > 0) {
    console.log(`\nRatios, ours ÷ anchor (msg/s, per round):\n${ratioTable(ratioList, labelOf)}`)
  }
  console.log(`\nTargets (printed, never asserted):\n${targetTable(targetList)}`)

  const cpus = Os.cpus()
  const machine = {
    cpuModel: cpus[0]?.model ?? "unknown",
    cpus: cpus.length,
    memoryGiB: Math.round(Os.totalmem() / 2 ** 30),
    platform: `${Os.platform()} ${Os.release()}`,
    node: process.version
  }
  const report = {
    date: new Date().toISOString(),
    mode: args.quick ? "quick" : "full",
    /** What the cases' processes ran: the bundle under node, or the sources under tsx. */
    runtime: args.runtime,
    repeat: args.repeat,
    totalSeconds,
    machine,
    cases: entries.map((entry) => ({
      ...entry.case,
      skipped: entry.skipped,
      runs: entry.runs,
      summary: summarize(entry)
    })),
    ratios: ratioList,
    targets: targetList
  }
  const resultsDir = join(Runtime.benchDir, "results")
  mkdirSync(resultsDir, { recursive: true })
  // Only a full run of every case, bundled as users run it, replaces the published results.
  const written = args.quick
    ? ["quick.json"]
    : args.only !== undefined || args.runtime === "tsx"
    ? ["selection.json"]
    : ["latest.json", "chart.svg"]
  writeFileSync(join(resultsDir, written[0]!), `${JSON.stringify(report, null, 2)}\n`)
  if (written.includes("chart.svg")) {
    const subtitle = `${machine.cpus} × ${machine.cpuModel}, Node ${machine.node}, ${args.repeat} round(s), ${
      report.date.slice(0, 10)
    }`
    writeFileSync(join(resultsDir, "chart.svg"), chart(entries, subtitle))
  }
  console.log(`\nwrote ${written.map((name) => `results/${name}`).join(", ")}`)

  const broken = entries.filter((entry) => entry.case.stack === "ours" && faulty(summarize(entry)))
  for (const entry of broken) {
    const s = summarize(entry)
    console.error(`FAIL ${entry.case.id}: ${s.failed} failed run(s), ${s.lost} lost, ${s.duplicated} duplicated`)
  }
  return broken.length > 0 ? 1 : 0
}

process.exitCode = await main()
