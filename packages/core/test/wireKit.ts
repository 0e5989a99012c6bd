/**
 * Test helpers for the wire format: a seeded generator, an encoder written from the layout in `internal/wire.ts`
 * independently of `Frame.encode` (so tests can build frames the codec must refuse), and comparisons of frames.
 */
import * as Frame from "@intersession/core/Frame"
import * as Either from "effect/Either"

// ---------------------------------------------------------------------------------------------------------------
// Seeded generator
// ---------------------------------------------------------------------------------------------------------------

/** A small seeded generator (mulberry32): the same seed gives the same sequence on every run. */
export interface Prng {
  readonly seed: number
  /** A float in [0, 1). */
  readonly next: () => number
  /** An integer in [min, max], both included. */
  readonly int: (min: number, max: number) => number
  readonly chance: (p: number) => boolean
  readonly bytes: (length: number) => Uint8Array
  readonly pick: <A>(values: ReadonlyArray<A>) => A
  readonly shuffle: <A>(values: Array<A>) => Array<A>
}

export const prng = (seed: number): Prng => {
  let state = seed >>> 0
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const int = (min: number, max: number) => min + Math.floor(next() * (max - min + 1))
  return {
    seed,
    next,
    int,
    chance: (p) => next() < p,
    bytes: (length) => {
      const out = new Uint8Array(length)
      for (let i = 0; i < length; i++) out[i] = int(0, 255)
      return out
    },
    pick: (values) => values[int(0, values.length - 1)]!,
    shuffle: (values) => {
      for (let i = values.length - 1; i > 0; i--) {
        const j = int(0, i)
        const tmp = values[i]!
        values[i] = values[j]!
        values[j] = tmp
      }
      return values
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// An independent encoder of protocol version 2
// ---------------------------------------------------------------------------------------------------------------

const utf8 = new TextEncoder()

/** Unsigned LEB128, as the protocol writes integers. Exact up to 2^53; use raw bytes for anything beyond. */
export const varint = (value: number): Uint8Array => {
  const out: Array<number> = []
  let rest = value
  while (rest >= 0x80) {
    out.push((rest % 0x80) | 0x80)
    rest = Math.floor(rest / 0x80)
  }
  out.push(rest)
  return Uint8Array.from(out)
}

export const concat = (...parts: ReadonlyArray<Uint8Array | number>): Uint8Array => {
  const length = parts.reduce<number>((sum, part) => sum + (typeof part === "number" ? 1 : part.length), 0)
  const out = new Uint8Array(length)
  let offset = 0
  for (const part of parts) {
    if (typeof part === "number") {
      out[offset++] = part
    } else {
      out.set(part, offset)
      offset += part.length
    }
  }
  return out
}

/** A string field: a number or string is encoded normally; raw bytes are the field's body (any bytes at all). */
export type RawString = string | Uint8Array
/** An integer field: a number is encoded as a varint; raw bytes are written as they are (any varint at all). */
export type RawUint = number | Uint8Array

export const rawString = (value: RawString): Uint8Array => {
  const body = typeof value === "string" ? utf8.encode(value) : value
  return concat(varint(body.length), body)
}

export const rawUint = (value: RawUint): Uint8Array => (typeof value === "number" ? varint(value) : value)

export interface RawHeader {
  readonly version?: number | undefined
  readonly tag?: number | undefined
  readonly from: RawString
  readonly to: RawString
}

export interface RawData extends RawHeader {
  readonly lane: RawString
  readonly incarnation: RawUint
  readonly session: RawUint
  readonly run: RawUint
  readonly seq: RawUint
  readonly floor: RawUint
  /**
   * The flags byte written after `floor`: bit 0 when `ttl` is given, bit 1 when `trace` is, when absent. Given, it
   * is written as it is, and `ttl` and `trace` still follow it exactly when they are given.
   */
  readonly flags?: number | undefined
  /** The time to live written after the flags byte; none when absent. */
  readonly ttl?: RawUint | undefined
  /** The trace context written after the time to live; raw bytes are written as they are. None when absent. */
  readonly trace?: Frame.TraceContext | Uint8Array | undefined
  readonly payload: Uint8Array
}

const hexBytes = (hex: string): Array<number> =>
  Array.from({ length: hex.length / 2 }, (_, i) => Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16))

/** A trace context as the protocol writes it: 16 bytes of trace id, 8 of span id, a trace-flags byte. */
export const rawTrace = (trace: Frame.TraceContext | Uint8Array): Uint8Array =>
  trace instanceof Uint8Array
    ? trace
    : Uint8Array.from([...hexBytes(trace.traceId), ...hexBytes(trace.spanId), trace.sampled ? 1 : 0])

/** The reason byte of a `Skip`: 1 expired, 2 purged. */
export const skipReasonCodes = { expired: 1, purged: 2 } as const

export interface RawSkip extends RawHeader {
  readonly lane: RawString
  readonly incarnation: RawUint
  readonly session: RawUint
  readonly run: RawUint
  readonly seq: RawUint
  readonly last: RawUint
  readonly floor: RawUint
  /** The reason byte, or a reason written as its byte. */
  readonly reason: number | Frame.SkipReason
}

export interface RawAck extends RawHeader {
  readonly lane: RawString
  readonly incarnation: RawUint
  readonly upTo: RawUint
}

export interface RawLaneState {
  readonly lane: RawString
  readonly incarnation: RawUint
  readonly delivered: RawUint
  /** The runs written on the wire; none when absent. */
  readonly runs?: ReadonlyArray<{ readonly run: RawUint; readonly from: RawUint }> | undefined
}

export interface RawHello extends RawHeader {
  readonly incarnation: RawUint
  readonly nonce: RawUint
  readonly echo: RawUint
  readonly reply: number
  /** The lane count written on the wire; the number of `lanes` when absent. */
  readonly count?: RawUint | undefined
  readonly lanes: ReadonlyArray<RawLaneState>
}

const header = (frame: RawHeader, tag: number) =>
  concat(frame.version ?? Frame.ProtocolVersion, frame.tag ?? tag, rawString(frame.from), rawString(frame.to))

export const rawData = (frame: RawData): Uint8Array =>
  concat(
    header(frame, 1),
    rawString(frame.lane),
    rawUint(frame.incarnation),
    rawUint(frame.session),
    rawUint(frame.run),
    rawUint(frame.seq),
    rawUint(frame.floor),
    frame.flags ?? ((frame.ttl === undefined ? 0 : 1) | (frame.trace === undefined ? 0 : 2)),
    frame.ttl === undefined ? new Uint8Array(0) : rawUint(frame.ttl),
    frame.trace === undefined ? new Uint8Array(0) : rawTrace(frame.trace),
    varint(frame.payload.length),
    frame.payload
  )

export const rawSkip = (frame: RawSkip): Uint8Array =>
  concat(
    header(frame, 4),
    rawString(frame.lane),
    rawUint(frame.incarnation),
    rawUint(frame.session),
    rawUint(frame.run),
    rawUint(frame.seq),
    rawUint(frame.last),
    rawUint(frame.floor),
    typeof frame.reason === "number" ? frame.reason : skipReasonCodes[frame.reason]
  )

export const rawAck = (frame: RawAck): Uint8Array =>
  concat(header(frame, 2), rawString(frame.lane), rawUint(frame.incarnation), rawUint(frame.upTo))

export const rawHello = (frame: RawHello): Uint8Array =>
  concat(
    header(frame, 3),
    rawUint(frame.incarnation),
    rawUint(frame.nonce),
    rawUint(frame.echo),
    frame.reply,
    rawUint(frame.count ?? frame.lanes.length),
    ...frame.lanes.flatMap((lane) => [
      rawString(lane.lane),
      rawUint(lane.incarnation),
      rawUint(lane.delivered),
      varint(lane.runs?.length ?? 0),
      ...(lane.runs ?? []).flatMap((entry) => [rawUint(entry.run), rawUint(entry.from)])
    ])
  )

// ---------------------------------------------------------------------------------------------------------------
// Decoding without trusting the codec not to throw, and comparing frames
// ---------------------------------------------------------------------------------------------------------------

export type Decoded =
  | { readonly _tag: "Frame"; readonly frame: Frame.Frame }
  | { readonly _tag: "Rejected"; readonly rejection: Frame.Rejection }
  | { readonly _tag: "Threw"; readonly error: string }

/** `Frame.decode`, with a throw turned into a value so a test can assert on it instead of crashing. */
export const decodeSafely = (bytes: Uint8Array, maxPayloadBytes: number): Decoded => {
  try {
    const result = Frame.decode(bytes, maxPayloadBytes)
    return Either.isRight(result)
      ? { _tag: "Frame", frame: result.right }
      : { _tag: "Rejected", rejection: result.left }
  } catch (error) {
    return { _tag: "Threw", error: String(error) }
  }
}

export const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/**
 * A frame's fields as a plain value; the payload is left out (compare it with {@link sameBytes}). A `Data` without
 * a time to live has no `ttl` key at all, nor one without a trace context a `trace` key, so one that appears or
 * vanishes shows.
 */
export const plainFields = (frame: Frame.Frame): Record<string, unknown> => {
  switch (frame._tag) {
    case "Data":
      return {
        _tag: frame._tag,
        from: frame.from,
        to: frame.to,
        lane: frame.lane,
        incarnation: frame.incarnation,
        session: frame.session,
        run: frame.run,
        seq: frame.seq,
        floor: frame.floor,
        ...(frame.ttl === undefined ? {} : { ttl: frame.ttl }),
        ...(frame.trace === undefined ? {} : { trace: { ...frame.trace } }),
        payloadLength: frame.payload.length
      }
    case "Skip":
      return {
        _tag: frame._tag,
        from: frame.from,
        to: frame.to,
        lane: frame.lane,
        incarnation: frame.incarnation,
        session: frame.session,
        run: frame.run,
        seq: frame.seq,
        last: frame.last,
        floor: frame.floor,
        reason: frame.reason
      }
    case "Ack":
      return {
        _tag: frame._tag,
        from: frame.from,
        to: frame.to,
        lane: frame.lane,
        incarnation: frame.incarnation,
        upTo: frame.upTo
      }
    case "Hello":
      return {
        _tag: frame._tag,
        from: frame.from,
        to: frame.to,
        incarnation: frame.incarnation,
        nonce: frame.nonce,
        echo: frame.echo,
        reply: frame.reply,
        lanes: frame.lanes.map((lane) => ({
          lane: lane.lane,
          incarnation: lane.incarnation,
          delivered: lane.delivered
        }))
      }
  }
}
