/**
 * What one run of one benchmark case reports, and the tally that counts lost, duplicated and reordered messages.
 */

export interface Result {
  /** Messages the case set out to move. */
  readonly messages: number
  /** Distinct messages the receiving application got. */
  readonly delivered: number
  readonly lost: number
  readonly duplicated: number
  /** Messages that arrived after one sent later than them (per sender). */
  readonly reordered: number
  /** From the first send until every message is delivered and acknowledged. */
  readonly seconds: number
  readonly perSecond: number
  readonly latencyP50Millis?: number | undefined
  readonly latencyP99Millis?: number | undefined
  readonly peakRssMiB?: number | undefined
  /** The process's RSS before its first message: the runtime and the loaded modules. */
  readonly rssBeforeMiB?: number | undefined
  /** From the first send to the first delivery, on the wall clock (the receiver may run in another process). */
  readonly firstDeliveryMillis?: number | undefined
  /** From the first send until the loop that sends returned: every message stored. */
  readonly sendLoopMillis?: number | undefined
  /** Set when the case could not run here; the reason is printed. */
  readonly skipped?: string | undefined
}

/**
 * Small payloads are cut from shared slabs, as a producer reading a file or a socket would hand them over: one
 * allocation per slab rather than per message, for every stack alike.
 */
const slabBytes = 64 * 1024
let slab = new Uint8Array(0)
let slabUsed = 0

const allocate = (size: number): Uint8Array => {
  if (size > slabBytes / 8) return new Uint8Array(size)
  if (slabUsed + size > slab.length) {
    slab = new Uint8Array(slabBytes)
    slabUsed = 0
  }
  slabUsed += size
  return slab.subarray(slabUsed - size, slabUsed)
}

/** Milliseconds of wall-clock time, which every process of the machine shares (with sub-millisecond precision). */
export const wallClockMillis = (): number => performance.timeOrigin + performance.now()

/** Microseconds of wall-clock time, on a clock that wraps every 71 minutes, far longer than a case. */
const nowMicros = (): number => Math.floor(wallClockMillis() * 1000) >>> 0

/** A payload of `size` bytes (at least 8) carrying the message's index and the sender's clock in microseconds. */
export const payload = (index: number, size: number): Uint8Array => {
  const bytes = allocate(Math.max(8, size))
  const view = new DataView(bytes.buffer, bytes.byteOffset, 8)
  view.setUint32(0, index)
  view.setUint32(4, nowMicros())
  return bytes
}

/** The index a payload made by {@link payload} carries. */
export const indexOf = (bytes: Uint8Array): number =>
  new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0)

/** Microseconds since the payload was made. */
export const ageMicros = (bytes: Uint8Array): number => {
  const sent = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(4)
  return (nowMicros() - sent) >>> 0
}

/** Counts what a receiver got, per stream of indices 0 … expected-1. */
export class Tally {
  private readonly seen: Uint8Array
  private highest = -1
  delivered = 0
  duplicated = 0
  reordered = 0
  /** When the first message arrived, on the wall clock. */
  firstDeliveryAt: number | undefined = undefined
  private readonly waiters: Array<() => void> = []

  constructor(readonly expected: number) {
    this.seen = new Uint8Array(expected)
  }

  record(index: number): void {
    if (index < 0 || index >= this.expected) return
    if (this.seen[index] === 1) {
      this.duplicated++
      return
    }
    this.seen[index] = 1
    if (this.delivered++ === 0) this.firstDeliveryAt = wallClockMillis()
    if (index < this.highest) this.reordered++
    else this.highest = index
    if (this.delivered === this.expected) { for (const wake of this.waiters.splice(0)) wake() }
  }

  get complete(): boolean {
    return this.delivered === this.expected
  }

  /** Resolves once every expected message arrived. */
  whenComplete(): Promise<void> {
    return this.complete ? Promise.resolve() : new Promise((resolve) => this.waiters.push(resolve))
  }
}

/** The value below which `p` of the samples fall (nearest rank). */
export const percentile = (samples: ReadonlyArray<number>, p: number): number => {
  if (samples.length === 0) return Number.NaN
  const sorted = [...samples].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!
}

/** What a tally counted, wherever it ran. */
export interface Counts {
  readonly delivered: number
  readonly duplicated: number
  readonly reordered: number
  /** When the first message arrived, on the wall clock. */
  readonly firstDeliveryAt?: number | undefined
}

/** Builds the result of a case from its tallies and time. */
export const resultOf = (
  messages: number,
  tallies: ReadonlyArray<Counts>,
  seconds: number,
  extra?: Partial<Result>
): Result => {
  const delivered = tallies.reduce((sum, tally) => sum + tally.delivered, 0)
  return {
    messages,
    delivered,
    lost: messages - delivered,
    duplicated: tallies.reduce((sum, tally) => sum + tally.duplicated, 0),
    reordered: tallies.reduce((sum, tally) => sum + tally.reordered, 0),
    seconds,
    perSecond: delivered / seconds,
    ...extra
  }
}

/** The peak resident set size of this process so far, in MiB. */
export const peakRssMiB = (): number => process.resourceUsage().maxRSS / 1024
