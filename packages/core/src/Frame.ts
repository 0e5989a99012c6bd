/**
 * The wire frames of protocol version 2 and their binary codec. Every inbound frame is decoded by
 * {@link decode}, and nothing else in the engine looks at raw bytes.
 *
 * @since 0.1.0
 */
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as internal from "./Binary.js"
import { Incarnation } from "./Incarnation.js"
import { Lane } from "./Lane.js"
import { maxLength, PeerId } from "./PeerId.js"

/**
 * The protocol version this build speaks. It is the first byte of every frame.
 *
 * @since 0.1.0
 * @category constants
 */
export const ProtocolVersion = 2

/**
 * The most runs a `Hello` lists per lane.
 *
 * @since 0.1.0
 * @category constants
 */
export const maxRuns = 16

/**
 * How long a message may still live, in milliseconds, when its frame was sent: the receiver counts it down on its
 * own clock from the frame's arrival, so neither clock's setting matters.
 *
 * @since 0.3.0
 * @category schemas
 */
export const TimeToLive = Schema.Number.pipe(
  Schema.int(),
  Schema.nonNegative(),
  Schema.lessThanOrEqualTo(Number.MAX_SAFE_INTEGER - 1),
  Schema.annotations({ identifier: "TimeToLive" })
)

/** Lowercase hex of `length` characters that are not all zeros: a W3C trace or span id. */
const hexId = (length: number, identifier: string) =>
  Schema.String.pipe(
    Schema.pattern(new RegExp(`^[0-9a-f]{${length}}$`)),
    Schema.filter((id) => !/^0+$/.test(id) || `${identifier} is all zeros`),
    Schema.annotations({ identifier })
  )

/**
 * The span a message was sent in, as a W3C `traceparent` names it: a trace id (32 lowercase hex digits), a span id
 * (16) and whether the sender samples the trace. A `Data` frame carries it when `send` ran inside a span; the
 * receiver's delivery span links to it.
 *
 * @since 0.4.0
 * @category schemas
 */
export const TraceContext = Schema.Struct({
  traceId: hexId(32, "TraceId"),
  spanId: hexId(16, "SpanId"),
  sampled: Schema.Boolean
}).pipe(Schema.annotations({ identifier: "TraceContext" }))

/**
 * @since 0.4.0
 * @category schemas
 */
export type TraceContext = typeof TraceContext.Type

/**
 * A sequence number: 1, 2, 3… per stream.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Seq = Schema.Number.pipe(
  Schema.int(),
  Schema.greaterThanOrEqualTo(1),
  Schema.lessThanOrEqualTo(Number.MAX_SAFE_INTEGER),
  Schema.annotations({ identifier: "Seq" })
)

/**
 * A count of delivered messages: a seq, or 0 for none.
 *
 * @since 0.1.0
 * @category schemas
 */
export const SeqOrZero = Schema.Number.pipe(
  Schema.int(),
  Schema.nonNegative(),
  Schema.lessThanOrEqualTo(Number.MAX_SAFE_INTEGER),
  Schema.annotations({ identifier: "SeqOrZero" })
)

/**
 * One message of a stream. `floor` is the sender's lowest unacknowledged seq in the stream: everything below it was
 * delivered by some incarnation of the receiver. `run` is the sender's engine run that allocated `seq`. `session` is
 * the `nonce` of the sender's `Hello` for the connection the frame was sent on: a receiver takes data only from the
 * session it last heard a `Hello` of, so frames left over from an earlier connection or run are never taken for
 * current ones. `ttl` is the time the message may still live, if it expires; `trace` the span it was sent in, if it
 * was sent in one.
 *
 * @since 0.1.0
 * @category frames
 */
export class Data extends Schema.TaggedClass<Data>("@intersession/core/Frame/Data")(
  "Data",
  Schema.Struct({
    from: PeerId,
    to: PeerId,
    lane: Lane,
    incarnation: Incarnation,
    session: Seq,
    run: Seq,
    seq: Seq,
    floor: Seq,
    ttl: Schema.optional(TimeToLive),
    trace: Schema.optional(TraceContext),
    payload: Schema.Uint8ArrayFromSelf
  }).pipe(Schema.filter((data) => data.floor <= data.seq || "floor is above seq"))
) {}

/**
 * Why the sender of a `Skip` removed its messages: their time to live ran out, or its application purged them.
 *
 * @since 0.3.0
 * @category models
 */
export type SkipReason = "expired" | "purged"

/**
 * Seqs `seq … last` of a stream (all allocated by `run`) that the sender removed without their delivery: the
 * receiver moves past them as if delivered, hands nothing to its application, and acknowledges them. So a removed
 * message is never taken for a lost one, and the stream goes on. Fields as in {@link Data}.
 *
 * @since 0.3.0
 * @category frames
 */
export class Skip extends Schema.TaggedClass<Skip>("@intersession/core/Frame/Skip")(
  "Skip",
  Schema.Struct({
    from: PeerId,
    to: PeerId,
    lane: Lane,
    incarnation: Incarnation,
    session: Seq,
    run: Seq,
    seq: Seq,
    last: Seq,
    floor: Seq,
    reason: Schema.Literal("expired", "purged")
  }).pipe(
    Schema.filter((skip) => skip.floor <= skip.seq || "floor is above seq"),
    Schema.filter((skip) => skip.seq <= skip.last || "last is below seq")
  )
) {}

/**
 * A cumulative acknowledgement: every seq up to `upTo` of the stream (`from`'s peer `to`, `lane`, source
 * `incarnation`) has been delivered to the application.
 *
 * @since 0.1.0
 * @category frames
 */
export class Ack extends Schema.TaggedClass<Ack>("@intersession/core/Frame/Ack")("Ack", {
  from: PeerId,
  to: PeerId,
  lane: Lane,
  incarnation: Incarnation,
  upTo: Seq
}) {}

/**
 * The first seq, in a `Hello`'s lane, that the receiver delivered from one run of the sender.
 *
 * @since 0.1.0
 * @category frames
 */
export class RunStart extends Schema.Class<RunStart>("@intersession/core/Frame/RunStart")({
  run: Seq,
  from: Seq
}) {}

/**
 * What a `Hello` says about one stream the sender of the `Hello` receives: its incarnation, the highest seq
 * delivered, and which runs of the stream's sender the last delivered seqs came from, so the sender can check that
 * they are its own messages and not those of a history its store no longer has.
 *
 * @since 0.1.0
 * @category frames
 */
export class LaneState extends Schema.Class<LaneState>("@intersession/core/Frame/LaneState")({
  lane: Lane,
  incarnation: Incarnation,
  delivered: SeqOrZero,
  runs: Schema.Array(RunStart).pipe(
    Schema.maxItems(maxRuns),
    Schema.filter((runs) => runs.every((run, i) => i === 0 || run.from > runs[i - 1]!.from) || "runs out of seq order")
  )
}) {}

/**
 * Sent on every connect and answered (with `reply: true`) by the other side. `nonce` is fresh per connection;
 * `echo` is the last nonce of the receiver that the sender has seen (0 for none), so a peer can tell a `Hello`
 * that reflects its current connection from a stale one. `lanes` lists, per lane, what the sender has delivered of
 * the receiver's messages: a cumulative ack and a resend trigger.
 *
 * @since 0.1.0
 * @category frames
 */
export class Hello extends Schema.TaggedClass<Hello>("@intersession/core/Frame/Hello")("Hello", {
  from: PeerId,
  to: PeerId,
  incarnation: Incarnation,
  nonce: Seq,
  echo: SeqOrZero,
  reply: Schema.Boolean,
  lanes: Schema.Array(LaneState)
}) {}

/**
 * Any frame of the protocol.
 *
 * @since 0.1.0
 * @category frames
 */
export const Frame = Schema.Union(Data, Ack, Hello, Skip)

/**
 * @since 0.1.0
 * @category frames
 */
export type Frame = typeof Frame.Type

/**
 * Why a frame was refused. The first four come from decoding; the rest from checking a decoded frame against the
 * transport-level peer and the engine's state.
 *
 * @since 0.1.0
 * @category models
 */
export type RejectReason =
  | "malformed"
  | "unsupported-version"
  | "invalid"
  | "oversized"
  | "spoofed-source"
  | "wrong-destination"
  | "stale-incarnation"
  | "stale-session"
  | "unknown-stream"
  | "ack-beyond-sent"
  | "before-handshake"

/**
 * A refused frame, with the reason and a human-readable detail.
 *
 * @since 0.1.0
 * @category models
 */
export interface Rejection {
  readonly reason: RejectReason
  readonly detail: string
}

const tags = { Data: 1, Ack: 2, Hello: 3, Skip: 4 } as const

const skipReasons = { expired: 1, purged: 2 } as const

/** The bits of a `Data` frame's flags byte: which optional fields follow it, in this order. */
const dataFlags = { ttl: 1, trace: 2 } as const

/** The bytes of a trace context: a 16-byte trace id, an 8-byte span id and a trace-flags byte. */
const traceBytes = 16 + 8 + 1

/** The W3C trace flag that says the sender samples the trace; the only one a frame may set. */
const sampledFlag = 1

const hexDigits = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, "0"))

/** The value of a lowercase hex digit; ids are checked when captured, so any other character is not expected. */
const nibble = (code: number) => code <= 57 ? code - 48 : code - 87

const writeHex = (writer: internal.Writer, hex: string) => {
  for (let i = 0; i < hex.length; i += 2) writer.byte(nibble(hex.charCodeAt(i)) * 16 + nibble(hex.charCodeAt(i + 1)))
}

const readHex = (bytes: Uint8Array): string => {
  let hex = ""
  for (let i = 0; i < bytes.length; i++) hex += hexDigits[bytes[i]!]
  return hex
}

const readTrace = (reader: internal.Reader): TraceContext | internal.ReadError => {
  const bytes = reader.raw(traceBytes)
  if (bytes instanceof internal.ReadError) return bytes
  const flags = bytes[24]!
  if ((flags & ~sampledFlag) !== 0) return new internal.ReadError(`unknown trace flags ${flags}`)
  return { traceId: readHex(bytes.subarray(0, 16)), spanId: readHex(bytes.subarray(16, 24)), sampled: flags === 1 }
}

/** 255 UTF-16 code units take at most 765 bytes of UTF-8 (a surrogate pair: 2 units, 4 bytes). */
const maxStringBytes = 3 * maxLength

/**
 * Encodes a frame. Frames built by the engine are valid by construction, so encoding cannot fail.
 *
 * @since 0.1.0
 * @category codec
 */
export const encode = (frame: Frame): Uint8Array => {
  if (frame._tag === "Data") return encodeData(frame, [frame])[0]!
  if (frame._tag === "Skip") return encodeSkip(frame, frame)
  const writer = new internal.Writer(sizeOf(frame))
  writer.byte(ProtocolVersion)
  writer.byte(tags[frame._tag])
  writer.string(frame.from)
  writer.string(frame.to)
  switch (frame._tag) {
    case "Ack": {
      writer.string(frame.lane)
      writer.uint(frame.incarnation)
      writer.uint(frame.upTo)
      break
    }
    case "Hello": {
      writer.uint(frame.incarnation)
      writer.uint(frame.nonce)
      writer.uint(frame.echo)
      writer.byte(frame.reply ? 1 : 0)
      writer.uint(frame.lanes.length)
      for (const lane of frame.lanes) {
        writer.string(lane.lane)
        writer.uint(lane.incarnation)
        writer.uint(lane.delivered)
        writer.uint(lane.runs.length)
        for (const run of lane.runs) {
          writer.uint(run.run)
          writer.uint(run.from)
        }
      }
      break
    }
  }
  return writer.finish()
}

/**
 * The fields every `Data` frame of one transmission shares: one stream, one session, one floor.
 *
 * @internal
 */
export interface DataHeader {
  readonly from: string
  readonly to: string
  readonly lane: string
  readonly incarnation: number
  readonly session: number
  readonly floor: number
}

/** Writes what `Data` and `Skip` frames begin with: the version, the tag, and the stream and session of `header`. */
const writeStreamHead = (writer: internal.Writer, tag: number, header: DataHeader): void => {
  writer.byte(ProtocolVersion)
  writer.byte(tag)
  writer.string(header.from)
  writer.string(header.to)
  writer.string(header.lane)
  writer.uint(header.incarnation)
  writer.uint(header.session)
}

/**
 * Encodes a `Skip` of the stream and session `header` names.
 *
 * @internal
 */
export const encodeSkip = (
  header: DataHeader,
  skip: { readonly run: number; readonly seq: number; readonly last: number; readonly reason: SkipReason }
): Uint8Array => {
  const writer = new internal.Writer(
    2 + internal.stringSize(header.from) + internal.stringSize(header.to) + internal.stringSize(header.lane) + 48
  )
  writeStreamHead(writer, tags.Skip, header)
  writer.uint(skip.run)
  writer.uint(skip.seq)
  writer.uint(skip.last)
  writer.uint(header.floor)
  writer.byte(skipReasons[skip.reason])
  return writer.finish()
}

/**
 * Encodes the `Data` frames of one transmission into one buffer and returns a view per frame, each exactly what
 * {@link encode} gives for it: the shared fields are encoded once, and the frames cost one allocation together.
 *
 * @internal
 */
export const encodeData = (
  header: DataHeader,
  messages: ReadonlyArray<{
    readonly run: number
    readonly seq: number
    readonly ttl?: number | undefined
    readonly trace?: TraceContext | undefined
    readonly payload: Uint8Array
  }>
): Array<Uint8Array> => {
  const prefix = new internal.Writer(2 + 3 * internal.stringSize(header.from) + 32)
  writeStreamHead(prefix, tags.Data, header)
  const shared = prefix.finish()
  const floorSize = internal.uintSize(header.floor)
  let total = 0
  for (const message of messages) {
    total += shared.length + internal.uintSize(message.run) + internal.uintSize(message.seq) + floorSize + 1 +
      (message.ttl === undefined ? 0 : internal.uintSize(message.ttl)) +
      (message.trace === undefined ? 0 : traceBytes) +
      internal.uintSize(message.payload.length) + message.payload.length
  }
  const writer = new internal.Writer(total)
  const ends: Array<number> = []
  for (const message of messages) {
    writer.raw(shared)
    writer.uint(message.run)
    writer.uint(message.seq)
    writer.uint(header.floor)
    const { trace, ttl } = message
    writer.byte((ttl === undefined ? 0 : dataFlags.ttl) | (trace === undefined ? 0 : dataFlags.trace))
    if (ttl !== undefined) writer.uint(ttl)
    if (trace !== undefined) {
      writeHex(writer, trace.traceId)
      writeHex(writer, trace.spanId)
      writer.byte(trace.sampled ? sampledFlag : 0)
    }
    writer.bytes(message.payload)
    ends.push(writer.offset)
  }
  const buffer = writer.finish()
  return ends.map((end, i) => buffer.subarray(i === 0 ? 0 : ends[i - 1]!, end))
}

/** The exact size of an `Ack` with ASCII ids (a frame with others grows its buffer); a guess for `Hello`. */
const sizeOf = (frame: Ack | Hello): number => {
  const head = 2 + internal.stringSize(frame.from) + internal.stringSize(frame.to)
  switch (frame._tag) {
    case "Ack":
      return head + internal.stringSize(frame.lane) + internal.uintSize(frame.incarnation) +
        internal.uintSize(frame.upTo)
    case "Hello":
      return head + 64
  }
}

const readFields = (reader: internal.Reader): typeof Frame.Encoded | internal.ReadError => {
  const version = reader.byte()
  if (version instanceof internal.ReadError) return version
  if (version !== ProtocolVersion) return new UnsupportedVersion(version)
  const tag = reader.byte()
  if (tag instanceof internal.ReadError) return tag
  const from = reader.string(maxStringBytes)
  if (from instanceof internal.ReadError) return from
  const to = reader.string(maxStringBytes)
  if (to instanceof internal.ReadError) return to
  switch (tag) {
    case tags.Data: {
      const lane = reader.string(maxStringBytes)
      if (lane instanceof internal.ReadError) return lane
      const incarnation = reader.uint()
      if (incarnation instanceof internal.ReadError) return incarnation
      const session = reader.uint()
      if (session instanceof internal.ReadError) return session
      const run = reader.uint()
      if (run instanceof internal.ReadError) return run
      const seq = reader.uint()
      if (seq instanceof internal.ReadError) return seq
      const floor = reader.uint()
      if (floor instanceof internal.ReadError) return floor
      const flags = reader.byte()
      if (flags instanceof internal.ReadError) return flags
      if ((flags & ~(dataFlags.ttl | dataFlags.trace)) !== 0) {
        return new internal.ReadError(`unknown Data flags ${flags}`)
      }
      let ttl: number | undefined
      if ((flags & dataFlags.ttl) !== 0) {
        const read = reader.uint()
        if (read instanceof internal.ReadError) return read
        ttl = read
      }
      let trace: TraceContext | undefined
      if ((flags & dataFlags.trace) !== 0) {
        const read = readTrace(reader)
        if (read instanceof internal.ReadError) return read
        trace = read
      }
      const payload = reader.bytes()
      if (payload instanceof internal.ReadError) return payload
      // Optional fields are absent keys, not `undefined` ones: the common frame keeps the common shape.
      if (trace === undefined) {
        return ttl === undefined
          ? { _tag: "Data", from, to, lane, incarnation, session, run, seq, floor, payload }
          : { _tag: "Data", from, to, lane, incarnation, session, run, seq, floor, ttl, payload }
      }
      return ttl === undefined
        ? { _tag: "Data", from, to, lane, incarnation, session, run, seq, floor, trace, payload }
        : { _tag: "Data", from, to, lane, incarnation, session, run, seq, floor, ttl, trace, payload }
    }
    case tags.Skip: {
      const lane = reader.string(maxStringBytes)
      if (lane instanceof internal.ReadError) return lane
      const incarnation = reader.uint()
      if (incarnation instanceof internal.ReadError) return incarnation
      const session = reader.uint()
      if (session instanceof internal.ReadError) return session
      const run = reader.uint()
      if (run instanceof internal.ReadError) return run
      const seq = reader.uint()
      if (seq instanceof internal.ReadError) return seq
      const last = reader.uint()
      if (last instanceof internal.ReadError) return last
      const floor = reader.uint()
      if (floor instanceof internal.ReadError) return floor
      const code = reader.byte()
      if (code instanceof internal.ReadError) return code
      const reason = code === skipReasons.expired ? "expired" : code === skipReasons.purged ? "purged" : undefined
      if (reason === undefined) return new internal.ReadError(`unknown Skip reason ${code}`)
      return { _tag: "Skip", from, to, lane, incarnation, session, run, seq, last, floor, reason }
    }
    case tags.Ack: {
      const lane = reader.string(maxStringBytes)
      if (lane instanceof internal.ReadError) return lane
      const incarnation = reader.uint()
      if (incarnation instanceof internal.ReadError) return incarnation
      const upTo = reader.uint()
      if (upTo instanceof internal.ReadError) return upTo
      return { _tag: "Ack", from, to, lane, incarnation, upTo }
    }
    case tags.Hello: {
      const incarnation = reader.uint()
      if (incarnation instanceof internal.ReadError) return incarnation
      const nonce = reader.uint()
      if (nonce instanceof internal.ReadError) return nonce
      const echo = reader.uint()
      if (echo instanceof internal.ReadError) return echo
      const reply = reader.byte()
      if (reply instanceof internal.ReadError) return reply
      if (reply > 1) return new internal.ReadError("the reply flag is neither 0 nor 1")
      const count = reader.uint()
      if (count instanceof internal.ReadError) return count
      // Each lane takes at least 4 bytes, so a count beyond that is a lie told to make us allocate.
      if (count * 4 > reader.remaining) return new internal.ReadError(`${count} lanes cannot fit in the frame`)
      const lanes: Array<typeof LaneState.Encoded> = []
      for (let i = 0; i < count; i++) {
        const lane = reader.string(maxStringBytes)
        if (lane instanceof internal.ReadError) return lane
        const laneIncarnation = reader.uint()
        if (laneIncarnation instanceof internal.ReadError) return laneIncarnation
        const delivered = reader.uint()
        if (delivered instanceof internal.ReadError) return delivered
        const runCount = reader.uint()
        if (runCount instanceof internal.ReadError) return runCount
        if (runCount > maxRuns) return new internal.ReadError(`${runCount} runs in a lane, at most ${maxRuns}`)
        const runs: Array<typeof RunStart.Encoded> = []
        for (let j = 0; j < runCount; j++) {
          const run = reader.uint()
          if (run instanceof internal.ReadError) return run
          const runFrom = reader.uint()
          if (runFrom instanceof internal.ReadError) return runFrom
          runs.push({ run, from: runFrom })
        }
        lanes.push({ lane, incarnation: laneIncarnation, delivered, runs })
      }
      return { _tag: "Hello", from, to, incarnation, nonce, echo, reply: reply === 1, lanes }
    }
    default:
      return new internal.ReadError(`unknown frame tag ${tag}`)
  }
}

class UnsupportedVersion extends internal.ReadError {
  constructor(readonly version: number) {
    super(`protocol version ${version}, this build speaks ${ProtocolVersion}`)
  }
}

/**
 * The lane of a `Data` or `Skip` frame, read from its head without decoding the rest: `undefined` for any other frame,
 * and for bytes that are not a frame of this protocol version. A network that bounds the lanes a client opens reads
 * it.
 *
 * @since 0.3.0
 * @category codec
 */
export const laneOf = (bytes: Uint8Array): string | undefined => {
  const reader = new internal.Reader(bytes)
  if (reader.byte() !== ProtocolVersion) return undefined
  const tag = reader.byte()
  if (tag !== tags.Data && tag !== tags.Skip) return undefined
  if (reader.string(maxStringBytes) instanceof internal.ReadError) return undefined
  if (reader.string(maxStringBytes) instanceof internal.ReadError) return undefined
  const lane = reader.string(maxStringBytes)
  return lane instanceof internal.ReadError ? undefined : lane
}

const validate = Schema.decodeUnknownEither(Frame)

/**
 * Decodes and validates one frame. Never throws: bytes that are not a valid frame of this protocol version give a
 * {@link Rejection}. A `Data` whose payload exceeds `maxPayloadBytes` is refused as `oversized`.
 *
 * @since 0.1.0
 * @category codec
 */
export const decode = (bytes: Uint8Array, maxPayloadBytes: number): Either.Either<Frame, Rejection> =>
  Either.map(decodeRecord(bytes, maxPayloadBytes), (frame) =>
    frame._tag === "Data"
      ? new Data(frame, noValidation)
      : frame._tag === "Ack"
      ? new Ack(frame, noValidation)
      : frame._tag === "Skip"
      ? new Skip(frame, noValidation)
      : frame)

/**
 * {@link decode} with the same checks, giving `Data` and `Ack` as plain records rather than class instances: they
 * carry every message and acknowledgement, and building a class instance costs more than decoding the frame.
 *
 * @internal
 */
export const decodeRecord = (bytes: Uint8Array, maxPayloadBytes: number): Either.Either<Frame, Rejection> => {
  const reader = new internal.Reader(bytes)
  const fields = readFields(reader)
  if (fields instanceof UnsupportedVersion) {
    return Either.left({ reason: "unsupported-version", detail: fields.detail })
  }
  if (fields instanceof internal.ReadError) return Either.left({ reason: "malformed", detail: fields.detail })
  if (reader.remaining > 0) {
    return Either.left({ reason: "malformed", detail: `${reader.remaining} bytes after the end of the frame` })
  }
  if (fields._tag === "Data" && fields.payload.length > maxPayloadBytes) {
    return Either.left({
      reason: "oversized",
      detail: `payload of ${fields.payload.length} bytes, limit ${maxPayloadBytes}`
    })
  }
  if (fields._tag === "Hello") {
    return Either.mapLeft(validate(fields), (error) => ({
      reason: "invalid",
      detail: ParseResult.TreeFormatter.formatErrorSync(error)
    }))
  }
  // Data and Ack carry every message and acknowledgement: they are checked here field by field, the same checks
  // their schemas make, instead of by the schema interpreter. The reader already bounds every integer to 2^53 and
  // decodes strings as strict UTF-8, which cannot hold a lone surrogate.
  const invalid = invalidHotFrame(fields)
  if (invalid !== undefined) return Either.left({ reason: "invalid", detail: invalid })
  // Checked above: the fields are what the schema's type says.
  return Either.right(fields as typeof Data.Type | typeof Ack.Type | typeof Skip.Type)
}

const noValidation = { disableValidation: true } as const

const invalidId = (name: string, value: string): string | undefined =>
  value.length === 0
    ? `${name} is empty`
    : value.length > maxLength
    ? `${name} is longer than ${maxLength} characters`
    : undefined

const invalidHotFrame = (
  fields: typeof Data.Encoded | typeof Ack.Encoded | typeof Skip.Encoded
): string | undefined => {
  const id = invalidId("from", fields.from) ?? invalidId("to", fields.to) ?? invalidId("lane", fields.lane)
  if (id !== undefined) return id
  if (fields._tag === "Ack") return fields.upTo >= 1 ? undefined : "upTo must be at least 1"
  if (fields.session < 1 || fields.run < 1 || fields.seq < 1 || fields.floor < 1) {
    return "session, run, seq and floor must be at least 1"
  }
  if (fields.floor > fields.seq) return "floor is above seq"
  if (fields._tag === "Skip") return fields.last >= fields.seq ? undefined : "last is below seq"
  if (fields.ttl !== undefined && fields.ttl >= Number.MAX_SAFE_INTEGER) return "ttl is too large"
  // The reader gives ids of the right length in lowercase hex: only all zeros, which W3C reserves, is left.
  const trace = fields.trace
  if (trace === undefined) return undefined
  return allZeros(trace.traceId)
    ? "the trace id is all zeros"
    : allZeros(trace.spanId)
    ? "the span id is all zeros"
    : undefined
}

const allZeros = (hex: string) => {
  for (let i = 0; i < hex.length; i++) if (hex.charCodeAt(i) !== 48) return false
  return true
}
