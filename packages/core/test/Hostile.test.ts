/**
 * Promise 5, end to end: hostile frames injected into a running engine are dropped, counted and reported, the engine
 * keeps running, and no state changes.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Frame from "@intersession/core/Frame"
import type { IlmEvent } from "@intersession/core/IlmEvent"
import * as IlmMetrics from "@intersession/core/IlmMetrics"
import * as Incarnation from "@intersession/core/Incarnation"
import * as PeerId from "@intersession/core/PeerId"
import { Eventually, type InMemoryBackend, InMemoryNetwork, TestPeer } from "@intersession/testing"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Metric from "effect/Metric"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { A, awaitAcknowledged, awaitReceived, B, numbered, sendNumbered, text, texts } from "./helpers.js"
import { concat, type Prng, prng, rawData } from "./wireKit.js"

/** Every hostile frame comes from this seed: the same seed replays the same attack. */
const SEED = 0x1e55_5eed
const TOTAL = 10_000
const CHUNK = 500

const MALLORY = PeerId.make("mallory")
const C = PeerId.make("C")
const maxPayloadBytes = 1024
const config = { maxPayloadBytes }

const allReasons: ReadonlyArray<Frame.RejectReason> = [
  "malformed",
  "unsupported-version",
  "invalid",
  "oversized",
  "spoofed-source",
  "wrong-destination",
  "stale-incarnation",
  "stale-session",
  "unknown-stream",
  "ack-beyond-sent",
  "before-handshake"
]

type FrameRejected = Extract<IlmEvent, { readonly _tag: "FrameRejected" }>

type Category =
  | "garbage"
  | "mutated"
  | "wrong-version"
  | "oversized"
  | "spoofed"
  | "wrong-destination"
  | "ack-beyond-sent"
  | "stale-ack"
  | "stale-data"
  | "stale-session"
  | "unknown-stream"

/** How many frames of each category the attack holds; they add up to {@link TOTAL}. */
const plan: ReadonlyArray<readonly [Category, number]> = [
  ["garbage", 2000],
  ["mutated", 3000],
  ["wrong-version", 700],
  ["oversized", 700],
  ["spoofed", 1000],
  ["wrong-destination", 1000],
  ["ack-beyond-sent", 700],
  ["stale-ack", 300],
  ["stale-data", 300],
  ["stale-session", 100],
  ["unknown-stream", 200]
]

interface Hostile {
  readonly category: Category
  /** The transport-level source the frame is injected from. */
  readonly from: PeerId.PeerId
  readonly bytes: Uint8Array
  readonly expected: Frame.RejectReason
}

/** What B knows when the attack starts, to build frames that are valid except for one thing. */
interface Target {
  /** B's incarnation for its streams to A. */
  readonly outIncarnation: number
  /** B's outbound lanes to A and their highest allocated seq. */
  readonly outLanes: ReadonlyArray<{ readonly lane: string; readonly lastSeq: number }>
  /** A's incarnation as B knows it. */
  readonly inIncarnation: number
  /** The session of A's data that B takes: the nonce of A's last `Hello`. */
  readonly inSession: number
  /** B's inbound lanes from A and what B delivered of them. */
  readonly inLanes: ReadonlyArray<{ readonly lane: string; readonly delivered: number }>
  /** Frames A really sent to B during the normal traffic. */
  readonly captured: ReadonlyArray<Uint8Array>
}

const key = (from: string, reason: string) => `${from} ${reason}`

/**
 * What B must do with a frame that only decoding and routing look at: the decode rejection, `spoofed-source` or
 * `wrong-destination`, or `undefined` when B would accept it.
 */
const routingVerdict = (from: PeerId.PeerId, bytes: Uint8Array): Frame.RejectReason | undefined => {
  const decoded = Frame.decode(bytes, maxPayloadBytes)
  if (Either.isLeft(decoded)) return decoded.left.reason
  if (decoded.right.from !== from) return "spoofed-source"
  if (decoded.right.to !== B) return "wrong-destination"
  return undefined
}

const inc = (n: number) => Incarnation.Incarnation.make(n)

/** A random integer in [min, max] biased towards both ends, for numbers up to 2^53. */
const edgy = (random: Prng, min: number, max: number): number => {
  const roll = random.next()
  if (roll < 0.2 || max <= min) return min
  if (roll < 0.3) return max
  if (roll < 0.7) return Math.min(max, min + random.int(0, 1000))
  return min + Math.floor(random.next() * (max - min))
}

/** A frame that is valid in every respect, from `from` to `to`: a Data, an Ack or a Hello. */
const validFrame = (random: Prng, target: Target, from: PeerId.PeerId, to: PeerId.PeerId): Uint8Array => {
  const kind = random.int(0, 2)
  if (kind === 0) {
    const stream = random.pick(target.inLanes)
    const seq = edgy(random, stream.delivered + 1, Number.MAX_SAFE_INTEGER)
    return Frame.encode(
      new Frame.Data({
        from,
        to,
        lane: random.chance(0.8) ? stream.lane : `lane-${random.int(0, 99)}`,
        incarnation: inc(random.chance(0.8) ? target.inIncarnation : edgy(random, 0, Number.MAX_SAFE_INTEGER)),
        session: random.chance(0.8) ? target.inSession : edgy(random, 1, Number.MAX_SAFE_INTEGER),
        run: 1,
        seq,
        floor: edgy(random, 1, seq),
        payload: random.bytes(random.int(0, maxPayloadBytes))
      })
    )
  }
  if (kind === 1) {
    const stream = random.pick(target.outLanes)
    return Frame.encode(
      new Frame.Ack({
        from,
        to,
        lane: stream.lane,
        incarnation: inc(target.outIncarnation),
        upTo: random.int(1, stream.lastSeq)
      })
    )
  }
  return Frame.encode(
    new Frame.Hello({
      from,
      to,
      incarnation: inc(target.inIncarnation),
      nonce: edgy(random, 1, Number.MAX_SAFE_INTEGER),
      echo: edgy(random, 0, Number.MAX_SAFE_INTEGER),
      reply: random.chance(0.5),
      lanes: target.outLanes.map((stream) =>
        new Frame.LaneState({
          lane: stream.lane,
          incarnation: inc(target.outIncarnation),
          delivered: random.int(0, stream.lastSeq + 5),
          runs: []
        })
      )
    })
  )
}

const mutate = (random: Prng, original: Uint8Array): Uint8Array => {
  let bytes: Uint8Array = original.slice()
  const edits = random.int(1, 4)
  for (let i = 0; i < edits; i++) {
    const at = random.int(0, bytes.length)
    switch (random.int(0, 4)) {
      case 0: // flip one bit
        if (at < bytes.length) bytes[at] = bytes[at]! ^ (1 << random.int(0, 7))
        break
      case 1: // overwrite one byte
        if (at < bytes.length) bytes[at] = random.int(0, 255)
        break
      case 2: // insert a few bytes
        bytes = concat(bytes.subarray(0, at), random.bytes(random.int(1, 8)), bytes.subarray(at))
        break
      case 3: // delete a few bytes
        bytes = concat(bytes.subarray(0, at), bytes.subarray(at + random.int(1, 8)))
        break
      default: // truncate
        bytes = bytes.slice(0, at)
    }
  }
  return bytes
}

/** Builds one frame of a category, with the rejection B owes it. */
const build = (random: Prng, target: Target, category: Category): Omit<Hostile, "category"> | undefined => {
  switch (category) {
    case "garbage": {
      const from = random.chance(0.5) ? A : MALLORY
      const bytes = random.chance(0.5)
        ? random.bytes(random.int(0, 3000))
        : concat(Frame.ProtocolVersion, random.int(0, 4), random.bytes(random.int(0, 200)))
      const expected = routingVerdict(from, bytes)
      return expected === undefined ? undefined : { from, bytes, expected }
    }
    case "mutated": {
      // Injected from mallory: a mutation may well be a valid frame of A's, which A itself could send.
      const bytes = mutate(random, random.pick(target.captured))
      const expected = routingVerdict(MALLORY, bytes)
      return expected === undefined ? undefined : { from: MALLORY, bytes, expected }
    }
    case "wrong-version": {
      const bytes = random.chance(0.5) ? random.pick(target.captured).slice() : validFrame(random, target, A, B)
      let version = random.int(0, 254)
      if (version >= Frame.ProtocolVersion) version++
      bytes[0] = version
      return { from: A, bytes, expected: "unsupported-version" }
    }
    case "oversized": {
      // The next message of a known stream, or of a newer incarnation: B would take it if it were not too large.
      const stream = random.pick(target.inLanes)
      const seq = stream.delivered + random.int(1, 3)
      const bytes = Frame.encode(
        new Frame.Data({
          from: A,
          to: B,
          lane: stream.lane,
          incarnation: inc(random.chance(0.8) ? target.inIncarnation : target.inIncarnation + random.int(1, 1000)),
          session: target.inSession,
          run: 1,
          seq,
          floor: random.int(1, seq),
          payload: random.bytes(random.int(maxPayloadBytes + 1, 4 * maxPayloadBytes))
        })
      )
      return { from: A, bytes, expected: "oversized" }
    }
    case "spoofed": {
      // Mostly frames claiming A (or B itself, or C) injected by mallory; some from A claiming another id.
      if (random.chance(0.8)) {
        const claimed = random.pick([A, A, A, B, C])
        return { from: MALLORY, bytes: validFrame(random, target, claimed, B), expected: "spoofed-source" }
      }
      const claimed = random.pick([MALLORY, C, PeerId.make("a"), PeerId.make("A ")])
      return { from: A, bytes: validFrame(random, target, claimed, B), expected: "spoofed-source" }
    }
    case "wrong-destination": {
      const to = random.pick([C, A, MALLORY, PeerId.make("b"), PeerId.make("B "), PeerId.make("B".repeat(255))])
      return { from: A, bytes: validFrame(random, target, A, to), expected: "wrong-destination" }
    }
    case "ack-beyond-sent": {
      const stream = random.pick(target.outLanes)
      const bytes = Frame.encode(
        new Frame.Ack({
          from: A,
          to: B,
          lane: stream.lane,
          incarnation: inc(target.outIncarnation),
          upTo: edgy(random, stream.lastSeq + 1, Number.MAX_SAFE_INTEGER)
        })
      )
      return { from: A, bytes, expected: "ack-beyond-sent" }
    }
    case "stale-ack": {
      // An acknowledgement, in range, of another incarnation of B's streams: mostly older, sometimes newer.
      const stream = random.pick(target.outLanes)
      const incarnation = random.chance(0.8)
        ? edgy(random, 0, target.outIncarnation - 1)
        : edgy(random, target.outIncarnation + 1, Number.MAX_SAFE_INTEGER)
      const bytes = Frame.encode(
        new Frame.Ack({
          from: A,
          to: B,
          lane: stream.lane,
          incarnation: inc(incarnation),
          upTo: random.int(1, stream.lastSeq)
        })
      )
      return { from: A, bytes, expected: "stale-incarnation" }
    }
    case "stale-data": {
      // A's next message, or any other, under an incarnation older than the one B has for the stream.
      const stream = random.pick(target.inLanes)
      const seq = random.chance(0.5) ? stream.delivered + 1 : edgy(random, 1, Number.MAX_SAFE_INTEGER)
      const bytes = Frame.encode(
        new Frame.Data({
          from: A,
          to: B,
          lane: stream.lane,
          incarnation: inc(edgy(random, 0, target.inIncarnation - 1)),
          session: target.inSession,
          run: 1,
          seq,
          floor: edgy(random, 1, seq),
          payload: random.bytes(random.int(0, maxPayloadBytes))
        })
      )
      return { from: A, bytes, expected: "stale-incarnation" }
    }
    case "stale-session": {
      // A's next message, as A would send it, but on a connection of A that B has not heard a Hello of.
      const stream = random.pick(target.inLanes)
      const seq = stream.delivered + random.int(1, 3)
      let session = edgy(random, 1, Number.MAX_SAFE_INTEGER)
      if (session === target.inSession) session++
      const bytes = Frame.encode(
        new Frame.Data({
          from: A,
          to: B,
          lane: stream.lane,
          incarnation: inc(target.inIncarnation),
          session,
          run: 1,
          seq,
          floor: stream.delivered + 1,
          payload: random.bytes(random.int(0, maxPayloadBytes))
        })
      )
      return { from: A, bytes, expected: "stale-session" }
    }
    case "unknown-stream": {
      const bytes = Frame.encode(
        new Frame.Ack({
          from: A,
          to: B,
          lane: `never-used-${random.int(0, 9999)}`,
          incarnation: inc(target.outIncarnation),
          upTo: random.int(1, 10)
        })
      )
      return { from: A, bytes, expected: "unknown-stream" }
    }
  }
}

const makeAttack = (seed: number, target: Target): Array<Hostile> => {
  const random = prng(seed)
  const frames: Array<Hostile> = []
  for (const [category, count] of plan) {
    for (let i = 0; i < count; i++) {
      let frame = build(random, target, category)
      while (frame === undefined) frame = build(random, target, category)
      frames.push({ category, ...frame })
    }
  }
  return random.shuffle(frames)
}

/** B's rejection counter of every (transport peer, reason), read from the process-wide metrics. */
const rejectionCounts = (peers: ReadonlyArray<PeerId.PeerId>) =>
  Effect.gen(function*() {
    const counts = new Map<string, number>()
    for (const peer of peers) {
      for (const reason of allReasons) {
        const state = yield* Metric.value(
          Metric.tagged(
            Metric.tagged(Metric.tagged(IlmMetrics.framesRejected, "local", B), "peer", peer),
            "reason",
            reason
          )
        )
        counts.set(key(peer, reason), state.count)
      }
    }
    return counts
  })

const tally = (entries: Iterable<string>): Record<string, number> => {
  const counts: Record<string, number> = {}
  for (const entry of entries) counts[entry] = (counts[entry] ?? 0) + 1
  return Object.fromEntries(Object.entries(counts).sort(([x], [y]) => x.localeCompare(y)))
}

const byStream = <T extends { readonly peer: string; readonly lane: string }>(list: ReadonlyArray<T>) =>
  list.slice().sort((x, y) => key(x.peer, x.lane).localeCompare(key(y.peer, y.lane)))

/** The session of the last Data among the frames A sent. */
const capturedSession = (captured: ReadonlyArray<Uint8Array>): number => {
  for (let i = captured.length - 1; i >= 0; i--) {
    const decoded = Frame.decode(captured[i]!, maxPayloadBytes)
    if (Either.isRight(decoded) && decoded.right._tag === "Data") return decoded.right.session
  }
  return 0
}

/** Everything of B that an attack must not change. Round-trip estimates move with time and are left out. */
const observe = (running: TestPeer.Running, peer: TestPeer.Peer) =>
  Effect.gen(function*() {
    const stats = yield* running.ilm.stats
    const snapshot: InMemoryBackend.Snapshot = yield* peer.store.snapshot
    const data = snapshot.data
    const messages = yield* peer.recorder.messages
    return {
      peers: stats.peers.map(({ connected, incarnation, linked, peer }) => ({ peer, connected, linked, incarnation })),
      outbound: byStream(stats.outbound),
      inbound: byStream(stats.inbound),
      store: {
        incarnation: data.incarnation,
        streams: byStream(Array.from(data.streams.values())).map((stream) => ({
          peer: stream.peer,
          lane: stream.lane,
          nextSeq: stream.messages.nextSeq,
          firstPending: stream.messages.firstStored,
          payloads: stream.messages.read(stream.messages.firstStored, Number.MAX_SAFE_INTEGER).map((
            [seq, stored]
          ) => [seq, stored.run, stored.expiresAt, Array.from(stored.payload)]),
          dropped: stream.dropped
        })),
        incarnations: Array.from(data.incarnations).sort(),
        received: byStream(Array.from(data.received.values()))
      },
      pending: yield* peer.store.pendingCount,
      delivered: messages.map((message) => ({
        source: message.source,
        lane: message.lane,
        incarnation: message.incarnation,
        seq: message.seq,
        payload: Array.from(message.payload)
      }))
    }
  })

describe("hostile input", () => {
  it.scoped(`10,000 hostile frames change nothing, are all counted and reported, and B keeps working (seed ${SEED})`, () =>
    Effect.gen(function*() {
      const seedNote = `(seed ${SEED})`
      // Incarnations are made from the clock: start late enough that older incarnations exist.
      yield* TestClock.adjust("1 hour")
      const hub = yield* InMemoryNetwork.make({ seed: SEED })
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const captured: Array<Uint8Array> = []
      yield* hub.setFaults({
        dropWhen: (frame) => {
          captured.push(frame.slice())
          return false
        }
      }, { from: A, to: B })
      const ra = yield* TestPeer.start(hub, a, config)
      const rb = yield* TestPeer.start(hub, b, config)

      // Normal traffic both ways in two lanes each, drained, so B has outbound, inbound and acknowledged state.
      yield* sendNumbered(ra, B, "a", 1, 6)
      yield* sendNumbered(ra, B, "orders", 1, 3, "orders")
      yield* sendNumbered(rb, A, "b", 1, 4)
      yield* sendNumbered(rb, A, "audit", 1, 2, "audit")
      yield* awaitReceived(b, 9)
      yield* awaitReceived(a, 6)
      yield* awaitAcknowledged(a)
      yield* awaitAcknowledged(b)
      yield* TestClock.adjust("10 seconds")
      yield* hub.setFaults({})

      const stats = yield* rb.ilm.stats
      const outToA = stats.outbound.filter((stream) => stream.peer === A)
      const inFromA = stats.inbound.filter((stream) => stream.peer === A)
      assert.strictEqual(outToA.length, 2, "B has two outbound streams to A")
      assert.strictEqual(inFromA.length, 2, "B has two inbound streams from A")
      const target: Target = {
        outIncarnation: outToA[0]!.incarnation,
        outLanes: outToA.map((stream) => ({ lane: stream.lane, lastSeq: stream.lastSeq })),
        inIncarnation: inFromA[0]!.incarnation,
        inSession: capturedSession(captured),
        inLanes: inFromA.map((stream) => ({ lane: stream.lane, delivered: stream.delivered })),
        captured
      }
      assert.isAbove(target.outIncarnation, 0)
      assert.isAbove(target.inIncarnation, 0)
      const kinds = new Set(
        captured.map((frame) => Frame.decode(frame, maxPayloadBytes)).map((decoded) =>
          Either.isRight(decoded) ? decoded.right._tag : "?"
        )
      )
      assert.deepStrictEqual(Array.from(kinds).sort(), ["Ack", "Data", "Hello"], "A sent B every kind of frame")

      const attack = makeAttack(SEED, target)
      assert.strictEqual(attack.length, TOTAL)
      const expected = tally(attack.map((frame) => key(frame.from, frame.expected)))

      // Subscribe to B's events. The subscription starts when the forked fiber runs: inject probe frames until one
      // is reported; FIFO processing means every earlier probe was handled by then.
      const rejected: Array<FrameRejected> = []
      const others: Array<IlmEvent> = []
      yield* Effect.forkScoped(Stream.runForEach(rb.ilm.events, (event) =>
        Effect.sync(() => {
          if (event._tag === "FrameRejected") rejected.push(event)
          else others.push(event)
        })))
      yield* Eventually.eventually(
        "a probe frame is reported",
        Effect.gen(function*() {
          if (rejected.length > 0) return true
          yield* hub.inject(MALLORY, B, new Uint8Array([0xde, 0xad]))
          return false
        })
      )
      rejected.length = 0
      others.length = 0

      const before = yield* observe(rb, b)
      const countsBefore = yield* rejectionCounts([A, MALLORY])

      for (let start = 0; start < attack.length; start += CHUNK) {
        const chunk = attack.slice(start, start + CHUNK)
        yield* Effect.forEach(chunk, (frame) => hub.inject(frame.from, B, frame.bytes), { discard: true })
        const injected = start + chunk.length
        // Let B work through the chunk; if a frame is never reported the checks below say which kinds are missing.
        yield* Eventually.eventually(
          `B reported ${injected} refused frames ${seedNote}`,
          Effect.sync(() => rejected.length >= injected),
          { limit: "20 seconds" }
        ).pipe(Effect.ignore)
      }
      yield* TestClock.adjust("10 seconds")

      const after = yield* observe(rb, b)
      const countsAfter = yield* rejectionCounts([A, MALLORY])
      const observed: Record<string, number> = {}
      for (const [name, count] of countsAfter) {
        const delta = count - (countsBefore.get(name) ?? 0)
        if (delta !== 0) observed[name] = delta
      }

      // Every frame was counted, with the reason it deserved.
      const total = Object.values(observed).reduce((sum, n) => sum + n, 0)
      assert.strictEqual(total, TOTAL, `the rejection counter grew by ${total}, not ${TOTAL} ${seedNote}`)
      assert.deepStrictEqual(observed, expected, `rejections counted per peer and reason ${seedNote}`)
      // ...and reported, each with a detail, and nothing else happened.
      assert.strictEqual(rejected.length, TOTAL, `${rejected.length} FrameRejected events, not ${TOTAL} ${seedNote}`)
      assert.deepStrictEqual(tally(rejected.map((event) => key(event.from, event.reason))), expected, seedNote)
      const withoutDetail = rejected.filter((event) => event.detail.length === 0)
      assert.strictEqual(
        withoutDetail.length,
        0,
        `events without a detail: ${JSON.stringify(withoutDetail.slice(0, 3))}`
      )
      assert.deepStrictEqual(others.map((event) => event._tag), [], `other events during the attack ${seedNote}`)

      // No state changed: engine state, the store and what the application received.
      assert.deepStrictEqual(after, before, `B's state changed under attack ${seedNote}`)

      // The engines still run: a new message each way is delivered in order and acknowledged.
      yield* ra.ilm.send(B, text("a 7"))
      yield* rb.ilm.send(A, text("b 5"))
      yield* awaitReceived(b, 10, "1 minute")
      yield* awaitReceived(a, 7, "1 minute")
      yield* awaitAcknowledged(a, "1 minute")
      yield* awaitAcknowledged(b, "1 minute")
      const received = yield* b.recorder.messages
      assert.deepStrictEqual(
        texts(received.filter((message) => message.lane === "default")),
        numbered("a", 1, 7),
        seedNote
      )
      assert.strictEqual(received.at(-1)!.seq, 7)
      assert.deepStrictEqual(
        texts((yield* a.recorder.messages).filter((m) => m.lane === "default")),
        numbered("b", 1, 5)
      )
    }))

  // A frame whose source id is 300,000 bytes long is refused and counted under one reason (malformed or invalid),
  // and B's frame reader goes on: B still sends, and still receives A's next message.
  it.scoped("a frame with a 300,000-byte peer id is refused, and B keeps working", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a, config)
      const rb = yield* TestPeer.start(hub, b, config)
      yield* ra.ilm.send(B, text("a 1"))
      yield* awaitReceived(b, 1)
      const countsBefore = yield* rejectionCounts([MALLORY])

      const frame = rawData({
        from: "a".repeat(300_000),
        to: B,
        lane: "default",
        incarnation: 1,
        session: 1,
        run: 1,
        seq: 1,
        floor: 1,
        payload: new Uint8Array(1)
      })
      yield* hub.inject(MALLORY, B, frame)
      yield* TestClock.adjust("1 second")

      const alive = yield* Effect.either(Effect.timeout(rb.ilm.send(A, text("b 1")), "1 second"))
      if (Either.isLeft(alive)) {
        const error = alive.left
        const cause = error._tag === "EngineClosedError" && Cause.isCause(error.cause) ? Cause.pretty(error.cause) : ""
        assert.fail(`B's engine stopped after a frame with a 300,000-byte id: ${error.message}\n${cause}`)
      }
      yield* ra.ilm.send(B, text("a 2"))
      yield* awaitReceived(b, 2, "1 minute")
      assert.deepStrictEqual(texts(yield* b.recorder.messages), ["a 1", "a 2"])
      const countsAfter = yield* rejectionCounts([MALLORY])
      const grown = allReasons.filter((reason) =>
        countsAfter.get(key(MALLORY, reason))! > countsBefore.get(key(MALLORY, reason))!
      )
      assert.isTrue(grown.length === 1 && (grown[0] === "invalid" || grown[0] === "malformed"), `grew: ${grown}`)
    }))
})
