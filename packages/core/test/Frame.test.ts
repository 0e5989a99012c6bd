/**
 * The binary codec of protocol version 2: every frame round-trips, and every way to break one is refused with the
 * right reason, without a throw.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Frame from "@intersession/core/Frame"
import * as Incarnation from "@intersession/core/Incarnation"
import * as PeerId from "@intersession/core/PeerId"
import * as Either from "effect/Either"
import * as FastCheck from "effect/FastCheck"
import * as Schema from "effect/Schema"
import {
  concat,
  type Decoded,
  decodeSafely,
  plainFields,
  prng,
  type RawAck,
  rawAck,
  type RawData,
  rawData,
  type RawHello,
  rawHello,
  type RawSkip,
  rawSkip,
  rawString,
  rawTrace,
  sameBytes,
  skipReasonCodes,
  varint
} from "./wireKit.js"

/** Every property below runs from this seed; fast-check prints it with any counterexample. */
const SEED = 20_250_611
const runs = (numRuns: number) => ({ seed: SEED, numRuns })

const MiB = 1024 * 1024
/** Large enough for every frame built here: the payload limit is tested on its own. */
const limit = 2 * MiB
const MAX = Number.MAX_SAFE_INTEGER

const inc = (n: number) => Incarnation.Incarnation.make(n)
const peer = (id: string) => PeerId.make(id)

// ---------------------------------------------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------------------------------------------

const nonAscii = ["é", "peer-ü", "节点-1", "🚀", "ä😀b", "Ωmega lane", "é".repeat(255), "😀".repeat(127)]

/** Ids and lane names: ASCII, any code point, graphemes, and a few fixed non-ASCII and maximum-length ones. */
const idString = FastCheck.oneof(
  FastCheck.string({ unit: "grapheme-ascii", minLength: 1, maxLength: 16 }),
  FastCheck.string({ unit: "binary", minLength: 1, maxLength: 32 }),
  FastCheck.string({ unit: "grapheme", minLength: 1, maxLength: 8 }),
  FastCheck.constantFrom("x".repeat(255), ...nonAscii)
).filter((id) => id.length >= 1 && id.length <= PeerId.maxLength)

const peerId = idString.map(peer)

/** Integers from `min` up to 2^53 − 1, biased towards the edges and towards every varint length. */
const safeInt = (min: number) =>
  FastCheck.oneof(
    FastCheck.constantFrom(min, min + 1, 127, 128, 16_383, 16_384, 2 ** 32, 2 ** 49, MAX - 1, MAX),
    FastCheck.integer({ min, max: 1000 }),
    FastCheck.integer({ min, max: 2 ** 31 - 1 }),
    FastCheck.maxSafeNat()
  ).filter((n) => n >= min)

const incarnation = safeInt(0).map(inc)

const payload = FastCheck.oneof(
  FastCheck.constant(new Uint8Array(0)),
  FastCheck.uint8Array({ minLength: 0, maxLength: 64 }),
  FastCheck.uint8Array({ minLength: 0, maxLength: 4096 })
)

/** A time to live: any integer up to 2^53 − 2 (2^53 − 1 is refused), or none. */
const ttl = FastCheck.option(safeInt(0).filter((n) => n < MAX), { nil: undefined })

/** Lowercase hex ids of `bytes` bytes, biased towards all-but-zero edges (all zeros is not an id). */
const hexId = (bytes: number) =>
  FastCheck.oneof(
    FastCheck.uint8Array({ minLength: bytes, maxLength: bytes }),
    FastCheck.constantFrom(
      new Uint8Array(bytes).fill(0xff),
      Uint8Array.from({ length: bytes }, (_, i) => (i === bytes - 1 ? 1 : 0))
    )
  ).filter((id) => id.some((byte) => byte !== 0)).map((id) =>
    Array.from(id, (byte) => byte.toString(16).padStart(2, "0")).join("")
  )

/** A trace context, or none. */
const trace = FastCheck.option(
  FastCheck.record({ traceId: hexId(16), spanId: hexId(8), sampled: FastCheck.boolean() }),
  { nil: undefined }
)

/** A `Data` of these fields, with a `ttl` or `trace` key only when there is a time to live or a trace context. */
const makeData = (fields: Omit<typeof Frame.Data.Type, "_tag">): Frame.Data => {
  const { trace, ttl, ...rest } = fields
  return new Frame.Data({
    ...rest,
    ...(ttl === undefined ? {} : { ttl }),
    ...(trace === undefined ? {} : { trace })
  })
}

const dataFrame = FastCheck.record({
  from: peerId,
  to: peerId,
  lane: idString,
  incarnation,
  session: safeInt(1),
  run: safeInt(1),
  seqs: FastCheck.tuple(safeInt(1), safeInt(1)),
  ttl,
  trace,
  payload
}).map(({ seqs: [a, b], ...fields }) => makeData({ ...fields, seq: Math.max(a, b), floor: Math.min(a, b) }))

const skipReason = FastCheck.constantFrom<Frame.SkipReason>("expired", "purged")

/** A `Skip` with `floor <= seq <= last`. */
const skipFrame = FastCheck.record({
  from: peerId,
  to: peerId,
  lane: idString,
  incarnation,
  session: safeInt(1),
  run: safeInt(1),
  seqs: FastCheck.tuple(safeInt(1), safeInt(1), safeInt(1)),
  reason: skipReason
}).map(({ seqs, ...fields }) => {
  const [floor, seq, last] = [...seqs].sort((x, y) => x - y) as [number, number, number]
  return new Frame.Skip({ ...fields, floor, seq, last })
})

const ackFrame = FastCheck.record({ from: peerId, to: peerId, lane: idString, incarnation, upTo: safeInt(1) }).map(
  (fields) => new Frame.Ack(fields)
)

const runStarts = FastCheck.uniqueArray(safeInt(1), { maxLength: Frame.maxRuns }).chain((froms) =>
  FastCheck.tuple(
    ...froms.sort((x, y) => x - y).map((from) => safeInt(1).map((run) => new Frame.RunStart({ run, from })))
  )
)

const laneState = FastCheck.record({ lane: idString, incarnation, delivered: safeInt(0), runs: runStarts }).map(
  (fields) => new Frame.LaneState(fields)
)

const helloFrame = FastCheck.record({
  from: peerId,
  to: peerId,
  incarnation,
  nonce: safeInt(1),
  echo: safeInt(0),
  reply: FastCheck.boolean(),
  lanes: FastCheck.oneof(
    FastCheck.constant([]),
    FastCheck.array(laneState, { maxLength: 4 }),
    FastCheck.array(laneState, { maxLength: 64 })
  )
}).map((fields) => new Frame.Hello(fields))

const anyFrame = FastCheck.oneof(dataFrame, ackFrame, helloFrame, skipFrame)

/** Small frames of each kind, for the tests that try every byte position. */
const smallFrame = (kind: "Data" | "Ack" | "Hello" | "Skip"): FastCheck.Arbitrary<Frame.Frame> =>
  kind === "Data"
    ? FastCheck.record({
      from: peerId,
      to: peerId,
      lane: idString,
      incarnation,
      session: safeInt(1),
      run: safeInt(1),
      seq: safeInt(1),
      ttl,
      trace,
      payload: FastCheck.uint8Array({ maxLength: 24 })
    }).map((fields) => makeData({ ...fields, floor: 1 }))
    : kind === "Skip"
    ? skipFrame
    : kind === "Ack"
    ? ackFrame
    : helloFrame.map((hello) => new Frame.Hello({ ...hello, lanes: hello.lanes.slice(0, 3) }))

// ---------------------------------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------------------------------

const describeDecoded = (decoded: Decoded): string =>
  decoded._tag === "Frame"
    ? `a ${decoded.frame._tag} frame`
    : decoded._tag === "Rejected"
    ? `${decoded.rejection.reason} (${decoded.rejection.detail})`
    : `a throw: ${decoded.error}`

const assertSameFrame = (actual: Frame.Frame, expected: Frame.Frame) => {
  assert.strictEqual(actual._tag, expected._tag)
  assert.deepStrictEqual(plainFields(actual), plainFields(expected))
  if (actual._tag === "Data" && expected._tag === "Data") {
    assert.isTrue(sameBytes(actual.payload, expected.payload), "the payload bytes differ")
  }
  assert.isTrue(
    actual instanceof Frame.Data || actual instanceof Frame.Ack || actual instanceof Frame.Hello ||
      actual instanceof Frame.Skip,
    "decode returns instances of the frame classes"
  )
}

const assertRoundTrip = (frame: Frame.Frame) => {
  const bytes = Frame.encode(frame)
  const decoded = decodeSafely(bytes, limit)
  if (decoded._tag !== "Frame") return assert.fail(`a valid ${frame._tag} decoded as ${describeDecoded(decoded)}`)
  assertSameFrame(decoded.frame, frame)
}

const assertRejected = (bytes: Uint8Array, reason: Frame.RejectReason, what: string, maxPayloadBytes = limit) => {
  const decoded = decodeSafely(bytes, maxPayloadBytes)
  assert.strictEqual(
    decoded._tag === "Rejected" ? decoded.rejection.reason : describeDecoded(decoded),
    reason,
    `${what}: expected ${reason}, got ${describeDecoded(decoded)}`
  )
  if (decoded._tag === "Rejected") assert.isNotEmpty(decoded.rejection.detail, `${what}: the rejection has no detail`)
}

/** The same frame, written by the independent encoder of `wireKit.ts`. */
const rawOf = (frame: Frame.Frame): Uint8Array => {
  switch (frame._tag) {
    case "Data":
      return rawData(frame)
    case "Ack":
      return rawAck(frame)
    case "Hello":
      return rawHello({ ...frame, reply: frame.reply ? 1 : 0 })
    case "Skip":
      return rawSkip(frame)
  }
}

// Valid raw frames whose fields the tests below break one at a time.
const goodData: RawData = {
  from: "A",
  to: "B",
  lane: "default",
  incarnation: 7,
  session: 1,
  run: 1,
  seq: 5,
  floor: 3,
  payload: new Uint8Array([1, 2])
}
const goodSkip: RawSkip = {
  from: "A",
  to: "B",
  lane: "default",
  incarnation: 7,
  session: 1,
  run: 1,
  seq: 5,
  last: 9,
  floor: 3,
  reason: "expired"
}
const goodAck: RawAck = { from: "A", to: "B", lane: "default", incarnation: 7, upTo: 5 }
const goodHello: RawHello = {
  from: "A",
  to: "B",
  incarnation: 7,
  nonce: 9,
  echo: 0,
  reply: 1,
  lanes: [{ lane: "default", incarnation: 3, delivered: 4 }, { lane: "other", incarnation: 3, delivered: 0 }]
}

const decodeReasons: ReadonlyArray<Frame.RejectReason> = ["malformed", "unsupported-version", "invalid", "oversized"]

describe("Frame", () => {
  describe("round trip", () => {
    it("every Data frame decodes to itself, and the layout matches the protocol", () => {
      FastCheck.assert(
        FastCheck.property(dataFrame, (frame) => {
          assertRoundTrip(frame)
          assert.isTrue(sameBytes(Frame.encode(frame), rawOf(frame)), "Frame.encode differs from the documented layout")
        }),
        runs(300)
      )
    })

    it("every Ack frame decodes to itself, and the layout matches the protocol", () => {
      FastCheck.assert(
        FastCheck.property(ackFrame, (frame) => {
          assertRoundTrip(frame)
          assert.isTrue(sameBytes(Frame.encode(frame), rawOf(frame)), "Frame.encode differs from the documented layout")
        }),
        runs(300)
      )
    })

    it("every Hello frame decodes to itself, and the layout matches the protocol", () => {
      FastCheck.assert(
        FastCheck.property(helloFrame, (frame) => {
          assertRoundTrip(frame)
          assert.isTrue(sameBytes(Frame.encode(frame), rawOf(frame)), "Frame.encode differs from the documented layout")
        }),
        runs(300)
      )
    })

    it("every Skip frame decodes to itself, and the layout matches the protocol", () => {
      FastCheck.assert(
        FastCheck.property(skipFrame, (frame) => {
          assertRoundTrip(frame)
          assert.isTrue(sameBytes(Frame.encode(frame), rawOf(frame)), "Frame.encode differs from the documented layout")
        }),
        runs(300)
      )
    })

    it("an empty payload and a 1 MiB payload", () => {
      const base = {
        from: peer("A"),
        to: peer("B"),
        lane: "default",
        incarnation: inc(1),
        session: 1,
        run: 1,
        seq: 1,
        floor: 1
      }
      assertRoundTrip(new Frame.Data({ ...base, payload: new Uint8Array(0) }))
      const big = prng(SEED).bytes(MiB)
      assertRoundTrip(new Frame.Data({ ...base, payload: big }))
      const decoded = decodeSafely(Frame.encode(new Frame.Data({ ...base, payload: big })), MiB)
      assert.strictEqual(decoded._tag, "Frame", "a payload of exactly the limit is accepted")
    })

    it("non-ASCII peer ids and lane names", () => {
      for (const id of nonAscii) {
        assertRoundTrip(
          new Frame.Data({
            from: peer(id),
            to: peer(`${id.slice(0, 200)}→`),
            lane: id,
            incarnation: inc(3),
            session: 1,
            run: 1,
            seq: 2,
            floor: 1,
            payload: new Uint8Array([0xff, 0x00])
          })
        )
        assertRoundTrip(new Frame.Ack({ from: peer(id), to: peer("B"), lane: id, incarnation: inc(3), upTo: 2 }))
        assertRoundTrip(
          new Frame.Hello({
            from: peer("A"),
            to: peer(id),
            incarnation: inc(3),
            nonce: 1,
            echo: 0,
            reply: false,
            lanes: [new Frame.LaneState({ lane: id, incarnation: inc(1), delivered: 1, runs: [] })]
          })
        )
      }
    })

    it("a Hello with no lanes and with 10,000 lanes", () => {
      const hello = (count: number) =>
        new Frame.Hello({
          from: peer("A"),
          to: peer("B"),
          incarnation: inc(12),
          nonce: 77,
          echo: 76,
          reply: true,
          lanes: Array.from(
            { length: count },
            (_, i) => new Frame.LaneState({ lane: `lane-${i}-ü`, incarnation: inc(i), delivered: i * 3, runs: [] })
          )
        })
      assertRoundTrip(hello(0))
      assertRoundTrip(hello(10_000))
    })

    it("the largest safe integer in every integer field", () => {
      const big = inc(MAX)
      assertRoundTrip(
        new Frame.Data({
          from: peer("A"),
          to: peer("B"),
          lane: "l",
          incarnation: big,
          session: MAX,
          run: 1,
          seq: MAX,
          floor: MAX,
          payload: new Uint8Array(1)
        })
      )
      assertRoundTrip(new Frame.Ack({ from: peer("A"), to: peer("B"), lane: "l", incarnation: big, upTo: MAX }))
      assertRoundTrip(
        new Frame.Hello({
          from: peer("A"),
          to: peer("B"),
          incarnation: big,
          nonce: MAX,
          echo: MAX,
          reply: false,
          lanes: [new Frame.LaneState({ lane: "l", incarnation: big, delivered: MAX, runs: [] })]
        })
      )
      assert.strictEqual(varint(MAX).length, 8, "2^53 − 1 takes 8 varint bytes")
    })

    it("payload bytes travel as bytes, after a header of a few dozen bytes", () => {
      const random = prng(SEED)
      for (const size of [0, 1, 1000, 65_536]) {
        const payload = random.bytes(size)
        const encoded = Frame.encode(
          new Frame.Data({
            from: peer("A"),
            to: peer("B"),
            lane: "default",
            incarnation: inc(2 ** 45),
            session: 1,
            run: 1,
            seq: 2 ** 40,
            floor: 1,
            payload
          })
        )
        assert.isAtMost(encoded.length, size + 48, `a Data of ${size} payload bytes takes ${encoded.length} bytes`)
        assert.isTrue(sameBytes(encoded.subarray(encoded.length - size), payload), "the payload is written verbatim")
      }
      const mib = Frame.encode(
        new Frame.Data({
          from: peer("A"),
          to: peer("B"),
          lane: "default",
          incarnation: inc(1),
          session: 1,
          run: 1,
          seq: 1,
          floor: 1,
          payload: new Uint8Array(MiB)
        })
      )
      assert.isAtMost(mib.length, MiB + 48)
    })
  })

  describe("refusals", () => {
    it("empty input is malformed", () => {
      assertRejected(new Uint8Array(0), "malformed", "empty input")
      assertRejected(new Uint8Array([Frame.ProtocolVersion]), "malformed", "a version byte alone")
    })

    for (const kind of ["Data", "Ack", "Hello", "Skip"] as const) {
      it(`a ${kind} truncated at every byte position is malformed`, () => {
        FastCheck.assert(
          FastCheck.property(smallFrame(kind), (frame) => {
            const bytes = Frame.encode(frame)
            for (let end = 0; end < bytes.length; end++) {
              assertRejected(bytes.subarray(0, end), "malformed", `${kind} of ${bytes.length} bytes cut at ${end}`)
            }
          }),
          runs(60)
        )
      })
    }

    it("trailing bytes after any frame are malformed", () => {
      FastCheck.assert(
        FastCheck.property(anyFrame, FastCheck.uint8Array({ minLength: 1, maxLength: 32 }), (frame, extra) => {
          assertRejected(
            concat(Frame.encode(frame), extra),
            "malformed",
            `a ${frame._tag} with ${extra.length} more bytes`
          )
        }),
        runs(300)
      )
    })

    it("every unknown tag is malformed", () => {
      for (let tag = 0; tag < 256; tag++) {
        if (tag >= 1 && tag <= 4) continue
        assertRejected(rawData({ ...goodData, tag }), "malformed", `tag ${tag} with a Data body`)
        assertRejected(rawAck({ ...goodAck, tag }), "malformed", `tag ${tag} with an Ack body`)
        assertRejected(rawSkip({ ...goodSkip, tag }), "malformed", `tag ${tag} with a Skip body`)
        assertRejected(concat(Frame.ProtocolVersion, tag), "malformed", `tag ${tag} alone`)
      }
    })

    it("every other version byte is unsupported-version, whatever follows", () => {
      const random = prng(SEED)
      for (let version = 0; version < 256; version++) {
        if (version === Frame.ProtocolVersion) continue
        assertRejected(rawData({ ...goodData, version }), "unsupported-version", `version ${version}, Data`)
        assertRejected(rawAck({ ...goodAck, version }), "unsupported-version", `version ${version}, Ack`)
        assertRejected(rawHello({ ...goodHello, version }), "unsupported-version", `version ${version}, Hello`)
        assertRejected(rawSkip({ ...goodSkip, version }), "unsupported-version", `version ${version}, Skip`)
        assertRejected(new Uint8Array([version]), "unsupported-version", `version ${version} alone`)
        assertRejected(
          concat(version, random.bytes(random.int(0, 64))),
          "unsupported-version",
          `version ${version}, noise`
        )
      }
    })

    it("a varint of more than 8 bytes, or beyond 2^53, is malformed in every integer field", () => {
      const nineBytes = new Uint8Array([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01])
      const endless = new Uint8Array(64).fill(0xff)
      const twoTo53 = varint(2 ** 53)
      const twoTo56Minus1 = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])
      for (
        const [name, bad] of [["9 bytes", nineBytes], ["64 bytes", endless], ["2^53", twoTo53], [
          "2^56 − 1",
          twoTo56Minus1
        ]] as const
      ) {
        assertRejected(rawData({ ...goodData, incarnation: bad }), "malformed", `Data incarnation of ${name}`)
        assertRejected(rawData({ ...goodData, seq: bad }), "malformed", `Data seq of ${name}`)
        assertRejected(rawData({ ...goodData, floor: bad }), "malformed", `Data floor of ${name}`)
        assertRejected(rawData({ ...goodData, ttl: bad }), "malformed", `Data ttl of ${name}`)
        assertRejected(rawSkip({ ...goodSkip, incarnation: bad }), "malformed", `Skip incarnation of ${name}`)
        assertRejected(rawSkip({ ...goodSkip, session: bad }), "malformed", `Skip session of ${name}`)
        assertRejected(rawSkip({ ...goodSkip, run: bad }), "malformed", `Skip run of ${name}`)
        assertRejected(rawSkip({ ...goodSkip, seq: bad }), "malformed", `Skip seq of ${name}`)
        assertRejected(rawSkip({ ...goodSkip, last: bad }), "malformed", `Skip last of ${name}`)
        assertRejected(rawSkip({ ...goodSkip, floor: bad }), "malformed", `Skip floor of ${name}`)
        assertRejected(rawAck({ ...goodAck, upTo: bad }), "malformed", `Ack upTo of ${name}`)
        assertRejected(rawHello({ ...goodHello, nonce: bad }), "malformed", `Hello nonce of ${name}`)
        assertRejected(rawHello({ ...goodHello, echo: bad }), "malformed", `Hello echo of ${name}`)
        assertRejected(rawHello({ ...goodHello, count: bad }), "malformed", `Hello lane count of ${name}`)
        assertRejected(
          rawHello({ ...goodHello, lanes: [{ lane: "l", incarnation: 1, delivered: bad }] }),
          "malformed",
          `Hello delivered of ${name}`
        )
        // A length prefix is a varint too.
        assertRejected(concat(Frame.ProtocolVersion, 2, bad, 0x41), "malformed", `a string length of ${name}`)
      }
      const decoded = decodeSafely(rawAck({ ...goodAck, upTo: varint(MAX) }), limit)
      assert.strictEqual(decoded._tag, "Frame", "2^53 − 1 in 8 bytes is still accepted")
    })

    it("a string that is not UTF-8 is malformed, in every string field", () => {
      const invalid: ReadonlyArray<[string, Uint8Array]> = [
        ["0xff", new Uint8Array([0xff])],
        ["a lone continuation byte", new Uint8Array([0x41, 0x80])],
        ["a truncated sequence", new Uint8Array([0x41, 0xc3])],
        ["an overlong encoding", new Uint8Array([0xc0, 0xaf])],
        ["an encoded surrogate", new Uint8Array([0xed, 0xa0, 0x80])],
        ["a code point above U+10FFFF", new Uint8Array([0xf4, 0x90, 0x80, 0x80])],
        ["0xfe after ASCII", new Uint8Array([0x6f, 0x6b, 0xfe])]
      ]
      for (const [name, body] of invalid) {
        assertRejected(rawData({ ...goodData, from: body }), "malformed", `Data from: ${name}`)
        assertRejected(rawData({ ...goodData, to: body }), "malformed", `Data to: ${name}`)
        assertRejected(rawData({ ...goodData, lane: body }), "malformed", `Data lane: ${name}`)
        assertRejected(rawAck({ ...goodAck, lane: body }), "malformed", `Ack lane: ${name}`)
        assertRejected(rawSkip({ ...goodSkip, from: body }), "malformed", `Skip from: ${name}`)
        assertRejected(rawSkip({ ...goodSkip, lane: body }), "malformed", `Skip lane: ${name}`)
        assertRejected(
          rawHello({ ...goodHello, lanes: [{ lane: body, incarnation: 1, delivered: 1 }] }),
          "malformed",
          `Hello lane: ${name}`
        )
      }
    })

    it("a length prefix larger than the frame is malformed", () => {
      assertRejected(concat(Frame.ProtocolVersion, 1, varint(1000), 0x41, 0x42), "malformed", "a from of 1000 bytes")
      assertRejected(concat(Frame.ProtocolVersion, 1, varint(MAX), 0x41), "malformed", "a from of 2^53 − 1 bytes")
      assertRejected(
        concat(Frame.ProtocolVersion, 1, rawString("A"), varint(2), 0x42),
        "malformed",
        "a to one byte short"
      )
      const good = rawData(goodData)
      // The payload is the last field: make its prefix claim one byte more than is there.
      const short = concat(good.subarray(0, good.length - 3), varint(3), good.subarray(good.length - 2))
      assertRejected(short, "malformed", "a payload one byte short")
      const huge = concat(good.subarray(0, good.length - 3), varint(2 ** 40), good.subarray(good.length - 2))
      assertRejected(huge, "malformed", "a payload of 2^40 bytes")
    })

    it("a Hello claiming more lanes than it holds is malformed, without allocating them", () => {
      for (const count of [2 ** 40, MAX, 3, 1_000_000]) {
        const started = performance.now()
        assertRejected(rawHello({ ...goodHello, count }), "malformed", `a Hello claiming ${count} lanes`)
        assert.isBelow(performance.now() - started, 200, `refusing a Hello claiming ${count} lanes took too long`)
      }
    })

    it("a reply flag other than 0 or 1 is malformed", () => {
      for (let reply = 2; reply < 256; reply++) {
        assertRejected(rawHello({ ...goodHello, reply }), "malformed", `reply flag ${reply}`)
      }
    })

    it("Data, Skip and Ack are accepted exactly when their schemas accept them (the hot path checks by hand)", () => {
      const text = FastCheck.constantFrom("", "a", "x".repeat(255), "x".repeat(256), "é".repeat(255), "😀".repeat(128))
      const uint = FastCheck.constantFrom(0, 1, 2, 3, MAX - 1, MAX)
      const maybeUint = FastCheck.option(uint, { nil: undefined })
      const maybeTrace = FastCheck.constantFrom(
        undefined,
        { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", sampled: true },
        { traceId: "0".repeat(32), spanId: "00f067aa0ba902b7", sampled: false },
        { traceId: "0".repeat(31) + "1", spanId: "0".repeat(16), sampled: true }
      )
      const validates = Schema.decodeUnknownEither(Frame.Frame)
      FastCheck.assert(
        FastCheck.property(
          text,
          text,
          text,
          uint,
          uint,
          uint,
          uint,
          uint,
          maybeUint,
          uint,
          maybeTrace,
          (from, to, lane, a, b, c, d, e, f, g, trace) => {
            const data = {
              from,
              to,
              lane,
              incarnation: a,
              session: b,
              run: c,
              seq: d,
              floor: e,
              ...(f === undefined ? {} : { ttl: f }),
              ...(trace === undefined ? {} : { trace }),
              payload: new Uint8Array(2)
            }
            const skip = {
              from,
              to,
              lane,
              incarnation: a,
              session: b,
              run: c,
              seq: d,
              last: g,
              floor: e,
              reason: "purged" as const
            }
            const ack = { from, to, lane, incarnation: a, upTo: b }
            for (
              const [fields, bytes] of [
                [{ _tag: "Data", ...data }, rawData(data)],
                [{ _tag: "Skip", ...skip }, rawSkip(skip)],
                [{ _tag: "Ack", ...ack }, rawAck(ack)]
              ] as const
            ) {
              const expected = validates(fields)._tag === "Right" ? "Frame" : "Rejected"
              const decoded = decodeSafely(bytes, limit)
              assert.strictEqual(decoded._tag, expected, `${JSON.stringify({ ...fields, payload: undefined })}`)
              if (decoded._tag === "Rejected") assert.strictEqual(decoded.rejection.reason, "invalid")
            }
          }
        ),
        runs(3000)
      )
    })

    it("fields out of range are invalid", () => {
      const id256 = "x".repeat(256)
      const wide256 = "é".repeat(256)
      const emoji128 = "😀".repeat(128) // 128 code points, 256 UTF-16 code units
      const cases: ReadonlyArray<[string, Uint8Array]> = [
        ["Data with floor above seq", rawData({ ...goodData, seq: 3, floor: 4 })],
        ["Data with seq 0", rawData({ ...goodData, seq: 0, floor: 0 })],
        ["Data with floor 0", rawData({ ...goodData, floor: 0 })],
        ["Data with an empty from", rawData({ ...goodData, from: "" })],
        ["Data with an empty to", rawData({ ...goodData, to: "" })],
        ["Data with an empty lane", rawData({ ...goodData, lane: "" })],
        ["Data with a from of 256 chars", rawData({ ...goodData, from: id256 })],
        ["Data with a to of 256 non-ASCII chars", rawData({ ...goodData, to: wide256 })],
        ["Data with a lane of 256 UTF-16 units", rawData({ ...goodData, lane: emoji128 })],
        ["Data with a ttl of 2^53 − 1", rawData({ ...goodData, ttl: MAX })],
        ["Skip with last below seq", rawSkip({ ...goodSkip, seq: 5, last: 4 })],
        ["Skip with floor above seq", rawSkip({ ...goodSkip, floor: 6, seq: 5, last: 9 })],
        ["Skip with floor above seq and last", rawSkip({ ...goodSkip, floor: 10, seq: 5, last: 9 })],
        ["Skip with seq 0", rawSkip({ ...goodSkip, floor: 0, seq: 0, last: 0 })],
        ["Skip with floor 0", rawSkip({ ...goodSkip, floor: 0 })],
        ["Skip with session 0", rawSkip({ ...goodSkip, session: 0 })],
        ["Skip with run 0", rawSkip({ ...goodSkip, run: 0 })],
        ["Skip with an empty from", rawSkip({ ...goodSkip, from: "" })],
        ["Skip with an empty to", rawSkip({ ...goodSkip, to: "" })],
        ["Skip with an empty lane", rawSkip({ ...goodSkip, lane: "" })],
        ["Skip with a lane of 256 chars", rawSkip({ ...goodSkip, lane: id256 })],
        ["Ack with upTo 0", rawAck({ ...goodAck, upTo: 0 })],
        ["Ack with an empty from", rawAck({ ...goodAck, from: "" })],
        ["Ack with a lane of 256 chars", rawAck({ ...goodAck, lane: id256 })],
        ["Hello with nonce 0", rawHello({ ...goodHello, nonce: 0 })],
        ["Hello with an empty to", rawHello({ ...goodHello, to: "" })],
        ["Hello with a from of 256 chars", rawHello({ ...goodHello, from: id256 })],
        ["Hello with an empty lane", rawHello({ ...goodHello, lanes: [{ lane: "", incarnation: 1, delivered: 1 }] })],
        [
          "Hello with a lane of 256 chars",
          rawHello({ ...goodHello, lanes: [{ lane: id256, incarnation: 1, delivered: 1 }] })
        ]
      ]
      for (const [name, bytes] of cases) assertRejected(bytes, "invalid", name)
      // The same fields at their limits are fine.
      for (
        const bytes of [
          rawData({
            ...goodData,
            from: "x".repeat(255),
            to: "é".repeat(255),
            lane: "😀".repeat(127),
            seq: 4,
            floor: 4
          }),
          rawAck({ ...goodAck, upTo: 1 }),
          rawData({ ...goodData, ttl: MAX - 1 }),
          rawSkip({ ...goodSkip, floor: 5, seq: 5, last: 5 }),
          rawSkip({ ...goodSkip, floor: 1, seq: MAX, last: MAX, lane: "x".repeat(255) }),
          rawHello({ ...goodHello, echo: 0, lanes: [{ lane: "x".repeat(255), incarnation: 0, delivered: 0 }] })
        ]
      ) {
        const decoded = decodeSafely(bytes, limit)
        assert.strictEqual(decoded._tag, "Frame", `a frame at the limits decoded as ${describeDecoded(decoded)}`)
      }
    })

    it("a payload above the limit given to decode is oversized", () => {
      for (const maxPayloadBytes of [0, 1, 1024, MiB]) {
        const at = rawData({ ...goodData, payload: new Uint8Array(maxPayloadBytes) })
        assert.strictEqual(decodeSafely(at, maxPayloadBytes)._tag, "Frame", `a payload of exactly ${maxPayloadBytes}`)
        assertRejected(
          rawData({ ...goodData, payload: new Uint8Array(maxPayloadBytes + 1) }),
          "oversized",
          `a payload of ${maxPayloadBytes + 1} bytes, limit ${maxPayloadBytes}`,
          maxPayloadBytes
        )
      }
      // The limit is about payloads: Acks and Hellos pass under a limit of 0.
      assert.strictEqual(decodeSafely(rawAck(goodAck), 0)._tag, "Frame")
      assert.strictEqual(decodeSafely(rawHello(goodHello), 0)._tag, "Frame")
      assert.strictEqual(decodeSafely(rawSkip(goodSkip), 0)._tag, "Frame")
    })

    it("random bytes and random mutations of valid frames never throw, and anything accepted is canonical", () => {
      const check = (bytes: Uint8Array) => {
        const decoded = decodeSafely(bytes, 1024)
        if (decoded._tag === "Threw") return assert.fail(`decode threw ${decoded.error}`)
        if (decoded._tag === "Rejected") {
          assert.include(decodeReasons, decoded.rejection.reason)
          assert.isNotEmpty(decoded.rejection.detail)
          return
        }
        assertRoundTrip(decoded.frame)
      }
      FastCheck.assert(
        FastCheck.property(
          FastCheck.oneof(
            FastCheck.uint8Array({ maxLength: 2048 }),
            FastCheck.tuple(FastCheck.integer({ min: 0, max: 4 }), FastCheck.uint8Array({ maxLength: 64 })).map(
              ([tag, rest]) => concat(Frame.ProtocolVersion, tag, rest)
            )
          ),
          check
        ),
        runs(2000)
      )
      FastCheck.assert(
        FastCheck.property(
          anyFrame,
          FastCheck.array(
            FastCheck.tuple(
              FastCheck.nat(),
              FastCheck.integer({ min: 0, max: 255 }),
              FastCheck.constantFrom("set", "insert", "delete")
            ),
            { minLength: 1, maxLength: 4 }
          ),
          (frame, edits) => {
            let bytes = Frame.encode(frame)
            for (const [position, value, edit] of edits) {
              const at = position % (bytes.length + 1)
              if (edit === "set" && at < bytes.length) bytes[at] = value
              else if (edit === "insert") bytes = concat(bytes.subarray(0, at), value, bytes.subarray(at))
              else bytes = concat(bytes.subarray(0, at), bytes.subarray(at + 1))
            }
            check(bytes)
          }
        ),
        runs(2000)
      )
    })

    // A string field of up to a mebibyte, in every string position: `decode` refuses it with a rejection and never
    // throws (building a long string from its bytes in one call would overflow the stack).
    it("a string field far longer than any id is refused, not thrown", () => {
      for (const size of [1000, 65_536, 300_000, MiB]) {
        const long = "a".repeat(size)
        const cases: ReadonlyArray<[string, Uint8Array]> = [
          ["Data from", rawData({ ...goodData, from: long })],
          ["Data to", rawData({ ...goodData, to: long })],
          ["Data lane", rawData({ ...goodData, lane: long })],
          ["Ack lane", rawAck({ ...goodAck, lane: long })],
          ["Skip lane", rawSkip({ ...goodSkip, lane: long })],
          ["Hello lane", rawHello({ ...goodHello, lanes: [{ lane: long, incarnation: 1, delivered: 1 }] })],
          ["a from and nothing else", concat(Frame.ProtocolVersion, 1, rawString(long))]
        ]
        for (const [name, bytes] of cases) {
          const decoded = decodeSafely(bytes, limit)
          assert.strictEqual(decoded._tag, "Rejected", `${name} of ${size} ASCII bytes: ${describeDecoded(decoded)}`)
        }
      }
    })

    // Ids travel as UTF-8, which cannot carry an unpaired surrogate (an encoder would replace it by U+FFFD and the
    // receiver would read another id): `PeerId` refuses such ids, and every id it accepts survives the wire.
    it("PeerId refuses every id with an unpaired surrogate, and every id it accepts round-trips", () => {
      const refuses = (id: string) => {
        assert.isFalse(PeerId.isWellFormed(id), `${JSON.stringify(id)} is well-formed`)
        assert.isFalse(Schema.is(PeerId.PeerId)(id), `PeerId accepts ${JSON.stringify(id)}`)
        assert.throws(() => PeerId.make(id))
      }
      const roundTrips = (id: string) => {
        assert.isTrue(Schema.is(PeerId.PeerId)(id), `PeerId refuses ${JSON.stringify(id)}`)
        const ack = new Frame.Ack({ from: peer(id), to: peer(id), lane: "l", incarnation: inc(1), upTo: 1 })
        const decoded = decodeSafely(Frame.encode(ack), limit)
        assert.deepStrictEqual<ReadonlyArray<string> | string>(
          decoded._tag === "Frame" ? [decoded.frame.from, decoded.frame.to] : describeDecoded(decoded),
          [id, id],
          `the id ${JSON.stringify(id)} does not survive the wire`
        )
      }
      for (const id of ["x\uD800y", "\uDC00", "a\uD83D", "\uD83D", "\uDE00\uD83D", "😀\uDE00", "\uDBFF😀"]) refuses(id)
      for (const id of ["😀", "a😀b", "\uD83D\uDE00", "😀".repeat(127), ...nonAscii]) roundTrips(id)
      // A lone surrogate anywhere between well-formed text, and well-formed text of any code points.
      const wellFormed = FastCheck.string({ unit: "grapheme", maxLength: 8 })
      FastCheck.assert(
        FastCheck.property(
          wellFormed,
          FastCheck.integer({ min: 0xd800, max: 0xdfff }),
          wellFormed,
          (before, unit, after) => refuses(`${before}${String.fromCharCode(unit)}${after}`)
        ),
        runs(1000)
      )
      FastCheck.assert(
        FastCheck.property(
          FastCheck.string({ unit: "grapheme", minLength: 1, maxLength: 64 }).filter((id) => id.length <= 255),
          roundTrips
        ),
        runs(1000)
      )
    })
  })

  describe("protocol version 2: a Data's time to live, and Skip", () => {
    const base = {
      from: peer("A"),
      to: peer("B"),
      lane: "default",
      incarnation: inc(7),
      session: 1,
      run: 1,
      seq: 5,
      floor: 3,
      payload: new Uint8Array([1, 2])
    }
    const skip = (fields: Partial<typeof Frame.Skip.Type> = {}) =>
      new Frame.Skip({ ...base, last: 9, reason: "expired", ...fields })

    const decodeFrame = (bytes: Uint8Array): Frame.Frame => {
      const decoded = decodeSafely(bytes, limit)
      if (decoded._tag !== "Frame") return assert.fail(`decoded as ${describeDecoded(decoded)}`)
      return decoded.frame
    }

    it("speaks version 2", () => {
      assert.strictEqual(Frame.ProtocolVersion, 2)
      assert.strictEqual(Frame.encode(skip())[0], 2)
      assert.strictEqual(Frame.encode(new Frame.Data(base))[0], 2)
    })

    it("a ttl round-trips at every varint length, 0 included, and is written after the flags byte", () => {
      for (const ttl of [0, 1, 127, 128, 16_383, 16_384, 2 ** 32, 2 ** 49, MAX - 1]) {
        const frame = new Frame.Data({ ...base, ttl })
        const bytes = Frame.encode(frame)
        assert.isTrue(sameBytes(bytes, rawData({ ...goodData, ttl })), `the layout of a ttl of ${ttl}`)
        const decoded = decodeFrame(bytes)
        assert.strictEqual(decoded._tag, "Data")
        if (decoded._tag !== "Data") return
        assert.strictEqual(decoded.ttl, ttl, `a ttl of ${ttl}`)
        assert.isTrue(sameBytes(decoded.payload, base.payload))
        // The flags byte says a ttl follows; the payload comes after it.
        const flagsAt = bytes.length - base.payload.length - 1 - varint(ttl).length - 1
        assert.strictEqual(bytes[flagsAt], 1, `the flags byte of a ttl of ${ttl}`)
      }
    })

    it("a Data without a ttl has flags 0 and decodes without a ttl key, however it was built", () => {
      const without = Frame.encode(new Frame.Data(base))
      assert.isTrue(sameBytes(without, rawData(goodData)))
      assert.strictEqual(without[without.length - base.payload.length - 2], 0, "the flags byte")
      // An explicit `undefined` is no ttl either.
      assert.isTrue(sameBytes(Frame.encode(new Frame.Data({ ...base, ttl: undefined })), without))
      assert.isTrue(sameBytes(Frame.encodeData(base, [{ ...base, ttl: undefined }])[0]!, without))
      const decoded = decodeFrame(without)
      assert.isFalse("ttl" in decoded, "a decoded Data without a ttl has no ttl key")
      const record = Frame.decodeRecord(without, limit)
      assert.isTrue(Either.isRight(record) && !("ttl" in record.right), "nor does its record")
      // One byte longer with a ttl of 0, which is not the same as none.
      const zero = Frame.encode(new Frame.Data({ ...base, ttl: 0 }))
      assert.strictEqual(zero.length, without.length + 1)
      const decodedZero = decodeFrame(zero)
      assert.isTrue(decodedZero._tag === "Data" && decodedZero.ttl === 0)
    })

    it("a flags byte with any bit other than bits 0 and 1 is malformed, whatever follows it", () => {
      for (let flags = 4; flags < 256; flags++) {
        assertRejected(rawData({ ...goodData, flags }), "malformed", `Data flags ${flags}`)
        assertRejected(rawData({ ...goodData, flags, ttl: 5 }), "malformed", `Data flags ${flags} and a ttl`)
        assertRejected(
          rawData({ ...goodData, flags, ttl: 5, trace: goodTrace }),
          "malformed",
          `Data flags ${flags}, a ttl and a trace context`
        )
      }
      const decoded = decodeFrame(rawData({ ...goodData, flags: 1, ttl: 5 }))
      assert.isTrue(decoded._tag === "Data" && decoded.ttl === 5)
    })

    const goodTrace = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", sampled: true }

    it("a trace context round-trips, with and without a ttl, in 25 bytes after the ttl", () => {
      const without = Frame.encode(new Frame.Data(base))
      for (const ttl of [undefined, 0, 16_384, MAX - 1]) {
        for (const context of [goodTrace, { ...goodTrace, sampled: false }]) {
          const frame = new Frame.Data({ ...base, ...(ttl === undefined ? {} : { ttl }), trace: context })
          const bytes = Frame.encode(frame)
          assert.isTrue(sameBytes(bytes, rawData({ ...goodData, ttl, trace: context })), "the documented layout")
          assert.strictEqual(bytes.length, without.length + (ttl === undefined ? 0 : varint(ttl).length) + 25)
          // Flags, the ttl if any, then the trace id, the span id and the trace flags, then the payload.
          const traceAt = bytes.length - base.payload.length - 1 - 25
          const flagsAt = traceAt - (ttl === undefined ? 0 : varint(ttl).length) - 1
          assert.strictEqual(bytes[flagsAt], ttl === undefined ? 2 : 3, "the flags byte")
          assert.deepStrictEqual(
            Array.from(bytes.subarray(traceAt, traceAt + 25)),
            [...Array.from(rawTrace(context))],
            "the trace context's bytes"
          )
          assert.strictEqual(bytes[traceAt + 24], context.sampled ? 1 : 0, "the trace flags")
          const decoded = decodeFrame(bytes)
          assertSameFrame(decoded, frame)
          assert.deepStrictEqual(decoded._tag === "Data" ? decoded.trace : undefined, context)
          assert.strictEqual(decoded._tag === "Data" ? decoded.ttl : "none", ttl)
        }
      }
      const decoded = decodeFrame(without)
      assert.isFalse("trace" in decoded, "a decoded Data without a trace context has no trace key")
      const record = Frame.decodeRecord(without, limit)
      assert.isTrue(Either.isRight(record) && !("trace" in record.right), "nor does its record")
    })

    it("a trace context cut short, or missing after flag bit 1, is malformed", () => {
      const full = rawTrace(goodTrace)
      for (let length = 0; length < 25; length++) {
        const cut = full.subarray(0, length)
        for (const ttl of [undefined, 5]) {
          // With the payload after it, the reader takes the payload's bytes for the rest of the context.
          assertRejected(rawData({ ...goodData, ttl, trace: cut }), "malformed", `a trace context of ${length} bytes`)
          const frame = rawData({ ...goodData, ttl, trace: cut, payload: new Uint8Array(0) })
          // Without a payload's length after it, the frame ends inside the context.
          assertRejected(
            frame.subarray(0, frame.length - 1),
            "malformed",
            `a frame ending after ${length} bytes of its trace context`
          )
        }
      }
      // Flag bit 1 with no context at all, and a context without flag bit 1.
      assertRejected(rawData({ ...goodData, flags: 2 }), "malformed", "flag bit 1 and no trace context")
      assertRejected(rawData({ ...goodData, flags: 0, trace: goodTrace }), "malformed", "a context but flags 0")
    })

    it("trace flags other than sampled are malformed, and all-zero ids invalid", () => {
      for (let flags = 2; flags < 256; flags++) {
        const bytes = rawTrace(goodTrace)
        bytes[24] = flags
        assertRejected(rawData({ ...goodData, trace: bytes }), "malformed", `trace flags ${flags}`)
      }
      const zeroTrace = { ...goodTrace, traceId: "0".repeat(32) }
      const zeroSpan = { ...goodTrace, spanId: "0".repeat(16) }
      assertRejected(rawData({ ...goodData, trace: zeroTrace }), "invalid", "an all-zero trace id")
      assertRejected(rawData({ ...goodData, trace: zeroSpan }), "invalid", "an all-zero span id")
      // The schema says the same when a Data is built.
      assert.throws(() => new Frame.Data({ ...base, trace: zeroTrace }))
      assert.throws(() => new Frame.Data({ ...base, trace: zeroSpan }))
      assert.throws(() =>
        new Frame.Data({ ...base, trace: { ...goodTrace, traceId: goodTrace.traceId.toUpperCase() } })
      )
      assert.throws(() => new Frame.Data({ ...base, trace: { ...goodTrace, spanId: "abc" } }))
    })

    it("a Data in the layout of version 1, with no flags byte, is refused", () => {
      // The version-1 layout under the version-2 byte: the payload's length prefix is read as the flags.
      const v1 = (payload: Uint8Array) =>
        concat(
          Frame.ProtocolVersion,
          1,
          rawString("A"),
          rawString("B"),
          rawString("default"),
          varint(7),
          varint(1),
          varint(1),
          varint(5),
          varint(3),
          varint(payload.length),
          payload
        )
      for (const payload of [new Uint8Array(0), new Uint8Array([9]), new Uint8Array([1, 2]), new Uint8Array(300)]) {
        assertRejected(v1(payload), "malformed", `a version-1 Data of ${payload.length} payload bytes`)
      }
    })

    it("a Skip round-trips with either reason, as an instance of Skip, its reason the last byte", () => {
      for (const [reason, code] of [["expired", 1], ["purged", 2]] as const) {
        const frame = skip({ reason })
        const bytes = Frame.encode(frame)
        assert.strictEqual(bytes[1], 4, "the Skip tag")
        assert.strictEqual(bytes[bytes.length - 1], code)
        assert.strictEqual(skipReasonCodes[reason], code)
        assert.isTrue(sameBytes(bytes, rawSkip({ ...goodSkip, reason })))
        const decoded = decodeFrame(bytes)
        assert.instanceOf(decoded, Frame.Skip)
        assert.deepStrictEqual(plainFields(decoded), plainFields(frame))
      }
      // One seq long, and at the largest seqs.
      assertRoundTrip(skip({ floor: 5, seq: 5, last: 5 }))
      assertRoundTrip(skip({ floor: 1, seq: MAX - 1, last: MAX }))
    })

    it("a Skip reason byte other than 1 or 2 is malformed", () => {
      for (let reason = 0; reason < 256; reason++) {
        if (reason === 1 || reason === 2) continue
        assertRejected(rawSkip({ ...goodSkip, reason }), "malformed", `Skip reason ${reason}`)
      }
    })

    it("a Skip whose last is below its seq, or whose floor is above its seq, is invalid", () => {
      for (const [seq, last] of [[5, 4], [2, 1], [MAX, MAX - 1]]) {
        assertRejected(rawSkip({ ...goodSkip, floor: 1, seq, last }), "invalid", `Skip ${seq} … ${last}`)
      }
      for (const floor of [6, 9, 10, MAX]) {
        assertRejected(rawSkip({ ...goodSkip, floor, seq: 5, last: 9 }), "invalid", `Skip of floor ${floor}`)
      }
      // The schema says the same when a Skip is built.
      assert.throws(() => skip({ seq: 5, last: 4 }))
      assert.throws(() => skip({ floor: 6, seq: 5 }))
    })

    it("a Skip cut short or followed by more bytes is malformed", () => {
      const bytes = rawSkip(goodSkip)
      for (let end = 0; end < bytes.length; end++) {
        assertRejected(bytes.subarray(0, end), "malformed", `a Skip of ${bytes.length} bytes cut at ${end}`)
      }
      assertRejected(concat(bytes, 0), "malformed", "a Skip with a byte more")
      assertRejected(concat(bytes, new Uint8Array([1, 2])), "malformed", "a Skip with a payload")
    })
  })
})
