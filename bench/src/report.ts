/**
 * What a benchmark run reports: per-case summaries, the table, ratios of ours to each anchor, the issue's targets
 * and an SVG chart. Pure functions of the collected runs; `main.ts` does the running and the writing.
 */
import type { Case } from "./cases.js"
import type { Result } from "./Result.js"

/** One run of one case: its result, or why there is none (crash, timeout). */
export interface Run {
  readonly round: number
  readonly result?: Result | undefined
  readonly error?: string | undefined
}

export type CaseInfo = Omit<Case, "run">

export interface Entry {
  readonly case: CaseInfo
  /** Why the case was not run at all (e.g. no mosquitto); its runs are then empty. */
  readonly skipped?: string | undefined
  readonly runs: ReadonlyArray<Run>
}

export interface Spread {
  readonly median: number
  readonly min: number
  readonly max: number
}

export interface Summary {
  readonly id: string
  readonly perSecond?: Spread | undefined
  readonly latencyP50Millis?: Spread | undefined
  readonly latencyP99Millis?: Spread | undefined
  readonly peakRssMiB?: Spread | undefined
  readonly rssBeforeMiB?: Spread | undefined
  readonly firstDeliveryMillis?: Spread | undefined
  readonly sendLoopMillis?: Spread | undefined
  /** Per run, how long before the send loop returned the first message was delivered (negative: after). */
  readonly firstDeliveryBeforeLoopEndMillis?: Spread | undefined
  /** Totals over all runs. */
  readonly lost: number
  readonly duplicated: number
  readonly reordered: number
  /** Runs that crashed or timed out. */
  readonly failed: number
  readonly skipped?: string | undefined
}

export const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

const spread = (values: ReadonlyArray<number | undefined>): Spread | undefined => {
  const present = values.filter((value): value is number => value !== undefined && Number.isFinite(value))
  return present.length === 0
    ? undefined
    : { median: median(present), min: Math.min(...present), max: Math.max(...present) }
}

const resultsOf = (entry: Entry): Array<Result> =>
  entry.runs.flatMap((run) => (run.result === undefined || run.result.skipped !== undefined ? [] : [run.result]))

export const summarize = (entry: Entry): Summary => {
  const results = resultsOf(entry)
  const skipped = entry.skipped ?? entry.runs.find((run) => run.result?.skipped !== undefined)?.result?.skipped
  const sum = (key: "lost" | "duplicated" | "reordered") => results.reduce((total, result) => total + result[key], 0)
  return {
    id: entry.case.id,
    perSecond: spread(results.map((result) => result.perSecond)),
    latencyP50Millis: spread(results.map((result) => result.latencyP50Millis)),
    latencyP99Millis: spread(results.map((result) => result.latencyP99Millis)),
    peakRssMiB: spread(results.map((result) => result.peakRssMiB)),
    rssBeforeMiB: spread(results.map((result) => result.rssBeforeMiB)),
    firstDeliveryMillis: spread(results.map((result) => result.firstDeliveryMillis)),
    sendLoopMillis: spread(results.map((result) => result.sendLoopMillis)),
    firstDeliveryBeforeLoopEndMillis: spread(
      results.map((result) =>
        result.sendLoopMillis === undefined || result.firstDeliveryMillis === undefined
          ? undefined
          : result.sendLoopMillis - result.firstDeliveryMillis
      )
    ),
    lost: sum("lost"),
    duplicated: sum("duplicated"),
    reordered: sum("reordered"),
    failed: entry.runs.filter((run) => run.error !== undefined).length,
    ...(skipped === undefined ? {} : { skipped })
  }
}

/** Whether the case broke the one promise CI checks: every message delivered exactly once, every run finished. */
export const faulty = (summary: Summary): boolean =>
  summary.skipped === undefined && (summary.failed > 0 || summary.lost > 0 || summary.duplicated > 0)

// ---------------------------------------------------------------------------------------------------------------
// Ratios: computed per round, because both sides of a round ran minutes apart at most on the same machine, while
// absolute numbers drift between rounds.

export interface Ratio {
  readonly ours: string
  readonly anchor: string
  readonly ratio?: Spread | undefined
}

const perSecondByRound = (entry: Entry | undefined): Map<number, number> =>
  new Map(
    (entry?.runs ?? []).flatMap((run) =>
      run.result === undefined || run.result.skipped !== undefined || run.result.perSecond <= 0
        ? []
        : [[run.round, run.result.perSecond] as const]
    )
  )

/** `a` ÷ `b` in msg/s, per round where both have a result; undefined when no round has. */
export const ratioOf = (entries: ReadonlyArray<Entry>, a: string, b: string): Spread | undefined => {
  const left = perSecondByRound(entries.find((entry) => entry.case.id === a))
  const right = perSecondByRound(entries.find((entry) => entry.case.id === b))
  return spread([...left].map(([round, value]) => {
    const other = right.get(round)
    return other === undefined ? undefined : value / other
  }))
}

/**
 * Ours' 128-byte streams against every anchor's of the same kind (many in flight, or one awaited at a time), and
 * each payload size against raw TCP acked at that size.
 */
export const ratios = (entries: ReadonlyArray<Entry>): Array<Ratio> => {
  const compared = entries.filter((entry) => entry.case.compared !== undefined)
  const ours = compared.filter((entry) => entry.case.stack === "ours")
  const anchors = compared.filter((entry) => entry.case.stack === "anchor")
  const pairs = ours.flatMap((o) =>
    anchors.filter((a) => a.case.compared === o.case.compared).map((a) => [o.case.id, a.case.id] as const)
  )
  for (const entry of entries) {
    const size = /^ours\.s9\.payload-(.+)$/.exec(entry.case.id)?.[1]
    if (size !== undefined) pairs.push([entry.case.id, `anchor.rawTcp.acked-${size}`])
  }
  return pairs
    .filter(([, anchor]) => entries.some((entry) => entry.case.id === anchor))
    .map(([o, a]) => ({ ours: o, anchor: a, ratio: ratioOf(entries, o, a) }))
}

// ---------------------------------------------------------------------------------------------------------------
// Targets: printed as met or missed, never asserted.

export interface Target {
  readonly target: string
  /** Undefined when a case it needs did not produce a result. */
  readonly met?: boolean | undefined
  readonly measured: string
}

const fixed = (value: number, digits = 2) => value.toFixed(digits)
const rate = (value: number) => `${Math.round(value).toLocaleString("en")} msg/s`

export const targets = (entries: ReadonlyArray<Entry>): Array<Target> => {
  const summary = (id: string) => {
    const entry = entries.find((candidate) => candidate.case.id === id)
    return entry === undefined ? undefined : summarize(entry)
  }
  const ratioTarget = (target: string, a: string, b: string, atLeast: number): Target => {
    const ratio = ratioOf(entries, a, b)
    return ratio === undefined
      ? { target, measured: "not measured" }
      : {
        target,
        met: ratio.median >= atLeast,
        measured: `${fixed(ratio.median)}× [${fixed(ratio.min)}–${fixed(ratio.max)}]`
      }
  }
  const valueTarget = (
    target: string,
    spreadOf: Spread | undefined,
    met: (value: Spread) => boolean,
    show: (value: number) => string
  ): Target =>
    spreadOf === undefined
      ? { target, measured: "not measured" }
      : {
        target,
        met: met(spreadOf),
        measured: `${show(spreadOf.median)} [${show(spreadOf.min)}–${show(spreadOf.max)}]`
      }
  const megabytes = (mebibytes: number) => (mebibytes * 1024 * 1024) / 1e6
  const normal = "ours.s2.tcp-sqlite-normal"
  const awaitedMqtt = "anchor.mqtt.mosquitto-qos1-awaited"
  return [
    valueTarget(
      "scenario 1 (in memory) ≥ 300k msg/s",
      summary("ours.s1.memory")?.perSecond,
      (v) => v.median >= 300_000,
      rate
    ),
    ratioTarget("scenario 2 ≥ 2× MQTT.js → mosquitto QoS 1 (window 256)", normal, "anchor.mqtt.mosquitto-qos1", 2),
    ratioTarget("scenario 2 ≥ 0.4× raw TCP acked (window 64)", normal, "anchor.rawTcp.acked", 0.4),
    valueTarget(
      "scenario 3 (TCP + SQLite FULL) ≥ 50k msg/s",
      summary("ours.s3.tcp-sqlite-full")?.perSecond,
      (v) => v.median >= 50_000,
      rate
    ),
    ratioTarget("scenario 4: window 64 ≥ 20× window 1", "ours.s4.window-64", "ours.s4.window-1", 20),
    valueTarget(
      "scenario 5: p50 < 1 ms at 1,000 msg/s",
      summary("ours.s5.latency")?.latencyP50Millis,
      (v) => v.median < 1,
      (v) => `${fixed(v)} ms`
    ),
    // "At the steady-state rate" read as: within 10% of scenario 2's one-way stream.
    ratioTarget("scenario 6: backlog drains ≥ 0.9× scenario 2's rate", "ours.s6.backlog", normal, 0.9),
    // The peak over all runs, not their median: the bound has to hold every time.
    valueTarget(
      "scenario 7: 1M pending for an absent peer in < 150 MB peak RSS",
      summary("ours.s7.memory")?.peakRssMiB,
      (v) => megabytes(v.max) < 150,
      (v) => `${fixed(megabytes(v), 0)} MB`
    ),
    ratioTarget("scenario 8: fan-out to 100 peers ≥ scenario 1's rate", "ours.s8.fanout-100", "ours.s1.memory", 1),
    ratioTarget(
      "scenario 10 in memory ≥ 5× MQTT.js → mosquitto QoS 1, one awaited publish at a time",
      "ours.s10.awaited-memory",
      awaitedMqtt,
      5
    ),
    ratioTarget(
      "scenario 10 TCP + SQLite NORMAL ≥ 2× MQTT.js → mosquitto QoS 1, one awaited publish at a time",
      "ours.s10.awaited-tcp-sqlite-normal",
      awaitedMqtt,
      2
    )
  ]
}

// ---------------------------------------------------------------------------------------------------------------
// Text

const compact = (value: number): string =>
  value >= 1e6 ? `${fixed(value / 1e6)}M` : value >= 1e4 ? `${fixed(value / 1e3, 1)}k` : `${Math.round(value)}`

/** Axis ticks are powers of ten: 0.01, 1, 1k, 10k, 1M. */
const tickText = (value: number): string =>
  value >= 1e6 ? `${value / 1e6}M` : value >= 1e3 ? `${value / 1e3}k` : `${Number(value.toPrecision(1))}`

const spreadText = (value: Spread | undefined, show: (value: number) => string): string =>
  value === undefined ? "–" : `${show(value.median)} [${show(value.min)}–${show(value.max)}]`

const renderTable = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((cell, column) => cell.padEnd(widths[column]!)).join("  ").trimEnd()
  return [line(header), line(widths.map((width) => "-".repeat(width))), ...rows.map(line)].join("\n")
}

/** When the first message arrived, against when the send loop returned, both from the first send. */
const firstDeliveryText = (summary: Summary): string => {
  const millis = (v: number) => `${Math.round(v).toLocaleString("en")}`
  const lead = summary.firstDeliveryBeforeLoopEndMillis
  return `first delivery at ${spreadText(summary.firstDeliveryMillis, millis)} ms, send loop ended at ${
    spreadText(summary.sendLoopMillis, millis)
  } ms${
    lead === undefined
      ? ""
      : lead.median >= 0
      ? `: ${millis(lead.median)} ms before its end`
      : `: ${millis(-lead.median)} ms after its end`
  }`
}

export const table = (entries: ReadonlyArray<Entry>): string =>
  renderTable(
    ["stack", "scenario", "case", "msg/s median [min–max]", "lost", "dup", "reord", "also"],
    entries.map((entry) => {
      const summary = summarize(entry)
      const notes = [
        summary.latencyP50Millis === undefined
          ? ""
          : `p50 ${spreadText(summary.latencyP50Millis, (v) => fixed(v))} ms, p99 ${
            spreadText(summary.latencyP99Millis, (v) => fixed(v))
          } ms`,
        entry.case.id === "ours.s7.memory"
          ? `peak RSS ${spreadText(summary.peakRssMiB, (v) => fixed(v, 0))} MiB, ${
            spreadText(summary.rssBeforeMiB, (v) => fixed(v, 0))
          } MiB of it before the first send`
          : "",
        summary.firstDeliveryMillis === undefined ? "" : firstDeliveryText(summary),
        summary.failed > 0
          ? `${summary.failed} run(s) failed: ${entry.runs.find((run) => run.error)?.error ?? ""}`
          : "",
        summary.skipped === undefined ? "" : `skipped: ${summary.skipped}`
      ].filter((note) => note !== "")
      return [
        entry.case.stack,
        entry.case.scenario,
        entry.case.label,
        spreadText(summary.perSecond, compact),
        String(summary.lost),
        String(summary.duplicated),
        String(summary.reordered),
        notes.join("; ")
      ]
    })
  )

export const ratioTable = (list: ReadonlyArray<Ratio>, labelOf: (id: string) => string): string =>
  renderTable(
    ["ours", "÷ anchor", "ratio median [min–max]"],
    list.map((ratio) => [labelOf(ratio.ours), labelOf(ratio.anchor), spreadText(ratio.ratio, (v) => `${fixed(v)}×`)])
  )

export const targetTable = (list: ReadonlyArray<Target>): string =>
  renderTable(
    ["target", "status", "measured"],
    list.map((
      target
    ) => [target.target, target.met === undefined ? "n/a" : target.met ? "met" : "MISSED", target.measured])
  )

// ---------------------------------------------------------------------------------------------------------------
// Chart: hand-written SVG, log-scaled horizontal bars with min–max whiskers.

const escapeXml = (text: string) =>
  text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")

interface Bar {
  readonly label: string
  readonly ours: boolean
  /** Drawn as bars from the left edge, the first darkest; whiskers only for the first. */
  readonly values: ReadonlyArray<Spread>
  readonly text: string
}

const width = 900
const labelWidth = 330
const plotLeft = labelWidth + 10
const plotRight = width - 120
const rowHeight = 24
const colors = { ours: ["#1f6feb", "#9cc3f5"], anchor: ["#6e7781", "#c4c9ce"] } as const

/** One panel: a title, a log axis with decade ticks, and one row per bar. Returns its SVG and height. */
const panel = (top: number, title: string, unit: string, bars: ReadonlyArray<Bar>): { svg: string; height: number } => {
  const all = bars.flatMap((bar) => bar.values.flatMap((value) => [value.min, value.max, value.median])).filter((v) =>
    v > 0
  )
  const low = 10 ** Math.floor(Math.log10(Math.min(...all)))
  const high = 10 ** Math.ceil(Math.log10(Math.max(...all)))
  const x = (value: number) =>
    plotLeft +
    ((Math.log10(Math.max(value, low)) - Math.log10(low)) / (Math.log10(high) - Math.log10(low))) *
      (plotRight - plotLeft)
  const axisTop = top + 34
  const parts: Array<string> = [
    `<text x="10" y="${top + 18}" font-size="15" font-weight="bold">${escapeXml(title)}</text>`
  ]
  for (let tick = low; tick <= high * 1.0001; tick *= 10) {
    const at = x(tick).toFixed(1)
    parts.push(
      `<line x1="${at}" y1="${axisTop}" x2="${at}" y2="${axisTop + bars.length * rowHeight}" stroke="#d0d7de"/>`,
      `<text x="${at}" y="${axisTop - 4}" font-size="11" text-anchor="middle" fill="#57606a">${
        escapeXml(tickText(tick))
      }${escapeXml(unit)}</text>`
    )
  }
  bars.forEach((bar, row) => {
    const y = axisTop + row * rowHeight
    const palette = bar.ours ? colors.ours : colors.anchor
    parts.push(
      `<text x="${labelWidth}" y="${y + 16}" font-size="12" text-anchor="end"${
        bar.ours ? " font-weight=\"bold\"" : ""
      }>${escapeXml(bar.label)}</text>`
    )
    // Larger values first, so the smaller bar stays visible on top.
    const drawn = bar.values.map((value, index) => ({ value, index })).reverse()
    for (const { value, index } of drawn) {
      const color = palette[Math.min(index, palette.length - 1)]!
      parts.push(
        `<rect x="${plotLeft}" y="${y + 5}" width="${(x(value.median) - plotLeft).toFixed(1)}" height="${
          rowHeight - 10
        }" fill="${color}"/>`
      )
    }
    const first = bar.values[0]!
    if (first.max > first.min) {
      const [from, to, mid] = [x(first.min).toFixed(1), x(first.max).toFixed(1), y + rowHeight / 2]
      parts.push(
        `<line x1="${from}" y1="${mid}" x2="${to}" y2="${mid}" stroke="#24292f"/>`,
        `<line x1="${from}" y1="${mid - 5}" x2="${from}" y2="${mid + 5}" stroke="#24292f"/>`,
        `<line x1="${to}" y1="${mid - 5}" x2="${to}" y2="${mid + 5}" stroke="#24292f"/>`
      )
    }
    const end = Math.max(...bar.values.map((value) => x(Math.max(value.median, value.max))))
    parts.push(
      `<text x="${(end + 6).toFixed(1)}" y="${y + 16}" font-size="11" fill="#24292f">${escapeXml(bar.text)}</text>`
    )
  })
  return { svg: parts.join("\n"), height: 34 + bars.length * rowHeight + 20 }
}

export const chart = (entries: ReadonlyArray<Entry>, subtitle: string): string => {
  const summaries = entries.map((entry) => ({ entry, summary: summarize(entry) }))
  const throughput: Array<Bar> = summaries.flatMap(({ entry, summary }) =>
    entry.case.compared !== undefined && summary.perSecond !== undefined
      ? [{
        label: entry.case.short ?? entry.case.label,
        ours: entry.case.stack === "ours",
        values: [summary.perSecond],
        // A stack that loses messages looks faster than it is: the bar says so.
        text: `${compact(summary.perSecond.median)}${
          summary.lost > 0 ? ` · ${summary.lost.toLocaleString("en")} lost` : ""
        }`
      }]
      : []
  )
  const latency: Array<Bar> = summaries.flatMap(({ entry, summary }) =>
    summary.latencyP50Millis !== undefined && summary.latencyP99Millis !== undefined &&
      (entry.case.compared !== undefined || entry.case.stack === "ours")
      ? [{
        label: entry.case.short ?? entry.case.label,
        ours: entry.case.stack === "ours",
        values: [summary.latencyP50Millis, summary.latencyP99Millis],
        text: `p50 ${fixed(summary.latencyP50Millis.median)} · p99 ${fixed(summary.latencyP99Millis.median)} ms`
      }]
      : []
  )
  const panels: Array<string> = []
  let top = 40
  for (
    const [title, unit, bars] of [
      ["Messages per second, 128-byte one-way stream (median, whiskers min–max; log scale)", "", throughput],
      ["Latency (dark p50, light p99; ours at 1,000 msg/s, anchors at full load; log scale)", " ms", latency]
    ] as const
  ) {
    if (bars.length === 0) continue
    const drawn = panel(top, title, unit, bars)
    panels.push(drawn.svg)
    top += drawn.height + 10
  }
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${top}" viewBox="0 0 ${width} ${top}" font-family="Helvetica, Arial, sans-serif">`,
    `<rect width="${width}" height="${top}" fill="#ffffff"/>`,
    `<text x="10" y="22" font-size="12" fill="#57606a">${escapeXml(subtitle)}</text>`,
    ...panels,
    "</svg>",
    ""
  ].join("\n")
}
