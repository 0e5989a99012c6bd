/**
 * What every anchor shares: a sender that keeps a window of unacknowledged messages, and a watch that decides
 * when a run is over — complete, or given up on because it stalled — so that an anchor which loses messages
 * reports the loss instead of hanging.
 */
import { ageMicros, peakRssMiB, percentile, type Result, resultOf, type Tally } from "../Result.js"

export interface WatchOptions {
  /** Give up when nothing was delivered or acknowledged for this long. */
  readonly stallMillis?: number
  /** Once the sender has every ack, wait this long without progress for deliveries still on their way. */
  readonly graceMillis?: number
  /** Give up after this long whatever happens. */
  readonly deadlineMillis?: number
}

/** Watches one run from its first send. */
export class Watch {
  readonly start = performance.now()
  acked = 0
  /** Sends the anchor reported as failed (e.g. an ack timeout): never acked. */
  failed = 0
  private last = this.start
  private readonly latencies: Array<number> = []
  private readonly timer: NodeJS.Timeout
  private wake: () => void = () => {}
  private ended = false
  /** Resolves when the run is complete or given up on. */
  readonly finished: Promise<void>

  constructor(
    readonly tally: Tally,
    /** Acks the sender waits for: 0 when the mode has none. */
    readonly expectedAcks: number,
    options: WatchOptions = {}
  ) {
    const { stallMillis = 5_000, graceMillis = 1_000, deadlineMillis = 300_000 } = options
    this.finished = new Promise((resolve) => (this.wake = resolve))
    this.timer = setInterval(() => {
      const now = performance.now()
      const quiet = now - this.last
      if (quiet > stallMillis || (this.allAcked && quiet > graceMillis) || now - this.start > deadlineMillis) {
        this.finish()
      }
    }, 100)
  }

  /** Whether the run is complete or given up on. */
  get over(): boolean {
    return this.ended
  }

  private get allAcked(): boolean {
    return this.acked + this.failed >= this.expectedAcks
  }

  /** The receiving application got `bytes` (a {@link payload}). */
  delivered(index: number, bytes: Uint8Array): void {
    this.latencies.push(ageMicros(bytes))
    this.tally.record(index)
    this.progress()
  }

  ack(ok = true): void {
    if (ok) this.acked++
    else this.failed++
    this.progress()
  }

  private progress(): void {
    this.last = performance.now()
    if (this.tally.complete && this.acked >= this.expectedAcks) this.finish()
  }

  private finish(): void {
    this.ended = true
    clearInterval(this.timer)
    this.wake()
  }

  /** The result, timed to the last delivery or ack so that a stall does not count as time spent working. */
  result(extra?: Partial<Result>): Result {
    const seconds = (this.last - this.start) / 1000
    return resultOf(this.tally.expected, [this.tally], seconds, {
      latencyP50Millis: percentile(this.latencies, 0.5) / 1000,
      latencyP99Millis: percentile(this.latencies, 0.99) / 1000,
      peakRssMiB: peakRssMiB(),
      ...extra
    })
  }
}

/**
 * Sends 0 … messages-1 through `send`, keeping at most `window` unacknowledged. `send` calls `done(ok)` once
 * per message when its ack arrives (or fails); each `done` lets the next message go and is told to `watch` (only
 * its `ack`: a browser page, which has no watch, counts its acks itself).
 */
export const windowed = (
  messages: number,
  window: number,
  send: (index: number, done: (ok: boolean) => void) => void,
  watch: Pick<Watch, "ack">
): void => {
  let next = 0
  let inFlight = 0
  let pumping = false
  const pump = (): void => {
    // A `send` that acks synchronously must not recurse once per message.
    if (pumping) return
    pumping = true
    while (inFlight < window && next < messages) {
      inFlight++
      send(next++, done)
    }
    pumping = false
  }
  const done = (ok: boolean): void => {
    inFlight--
    watch.ack(ok)
    pump()
  }
  pump()
}

/**
 * Sends 0 … messages-1 one at a time: each `send` is awaited (its ack) before the next starts. Stops early once the
 * watch gave up, so a stalled run does not keep sending into a closed client.
 */
export const awaitEach = async (
  messages: number,
  watch: Watch,
  send: (index: number) => Promise<unknown>
): Promise<void> => {
  for (let index = 0; index < messages && !watch.over; index++) {
    watch.ack(await send(index).then(() => true, () => false))
  }
}

/** The result of a case that could not run here. */
export const skipped = (messages: number, reason: string): Result => ({
  messages,
  delivered: 0,
  lost: 0,
  duplicated: 0,
  reordered: 0,
  seconds: 0,
  perSecond: 0,
  skipped: reason
})
