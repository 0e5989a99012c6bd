/**
 * The browser's network: one dial loop that keeps one connection to the server up, and the `Network` service over it.
 *
 * A dial goes: the credential (run afresh) → the socket → the client handshake (`clientHandshake.ts`, bounded with
 * the socket's opening by `handshakeTimeout`) → in use: `Data` frames go to `inbound`, a `Ping` goes out every
 * `pingInterval`, and the connection is closed once nothing at all arrived for `idleTimeout`. When it ends, the loop
 * waits on the back-off (at least `reconnectMax` after a refusal) and dials again; the browser's `online` and
 * visible-again events cut the wait short, and `offline` closes the connection at once.
 *
 * @internal
 */
import type * as Socket from "@effect/platform/Socket"
import { instanceSize, maxCredentialBytes } from "@intersession/core/ClientHandshake"
import * as Framing from "@intersession/core/Framing"
import { type Inbound, NetworkError } from "@intersession/core/Network"
import * as PeerId from "@intersession/core/PeerId"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as HashSet from "effect/HashSet"
import * as Queue from "effect/Queue"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import type { Options, Settings, Status, WebSocketNetwork } from "../WebSocketNetwork.js"
import * as ClientCipher from "./clientCipher.js"
import * as ClientHandshake from "./clientHandshake.js"
import * as ClientLink from "./clientLink.js"
import { ConnectionError } from "./clientLink.js"
import * as ClientSignals from "./clientSignals.js"

const StatusOf = Data.taggedEnum<Status>()

/** @internal */
export const defaults: Settings = {
  handshakeTimeout: Duration.seconds(10),
  pingInterval: Duration.seconds(5),
  idleTimeout: Duration.seconds(15),
  reconnectBase: Duration.millis(100),
  reconnectMax: Duration.seconds(10),
  // The Node networks' default: 1 MiB (the engine's default largest payload) and 64 KiB for the engine's fields.
  maxFrameSize: 1024 * 1024 + 64 * 1024
}

/**
 * Fills in defaults and lists every problem with the options.
 *
 * @internal
 */
export const settings = (options: Options<unknown, unknown>): Either.Either<Settings, ReadonlyArray<string>> => {
  const problems: Array<string> = []
  const duration = (key: Exclude<keyof Settings, "maxFrameSize">) => {
    const input = options[key]
    if (input === undefined) return defaults[key]
    const decoded = Duration.decodeUnknown(input)
    if (decoded._tag === "None" || !Duration.greaterThan(decoded.value, Duration.zero)) {
      problems.push(`${key} must be a positive duration`)
      return defaults[key]
    }
    return decoded.value
  }
  const result: Settings = {
    handshakeTimeout: duration("handshakeTimeout"),
    pingInterval: duration("pingInterval"),
    idleTimeout: duration("idleTimeout"),
    reconnectBase: duration("reconnectBase"),
    reconnectMax: duration("reconnectMax"),
    maxFrameSize: options.maxFrameSize ?? defaults.maxFrameSize
  }
  for (const key of ["peer", "server"] as const) {
    if (!PeerId.isPeerId(options[key])) problems.push(`${key} must be a valid peer id`)
  }
  if (options.peer === options.server) problems.push("peer and server must be different ids")
  const url = Either.try(() => new URL(options.url))
  if (Either.isLeft(url)) {
    problems.push(`url must be a ws:// or wss:// URL, got ${JSON.stringify(options.url)}`)
  } else if (url.right.protocol !== "ws:" && url.right.protocol !== "wss:") {
    problems.push(`url must be a ws:// or wss:// URL, got the scheme ${url.right.protocol}`)
  } else if (url.right.hash !== "") {
    // A browser's WebSocket constructor refuses a URL with a fragment.
    problems.push("url must not have a fragment")
  }
  if (
    !Number.isSafeInteger(result.maxFrameSize) || result.maxFrameSize < 1 ||
    result.maxFrameSize > Framing.maxBodyLimit
  ) {
    problems.push(`maxFrameSize must be an integer from 1 to ${Framing.maxBodyLimit}, got ${result.maxFrameSize}`)
  }
  if (!Duration.lessThan(result.pingInterval, result.idleTimeout)) {
    problems.push("pingInterval must be shorter than idleTimeout")
  }
  if (Duration.lessThan(result.reconnectMax, result.reconnectBase)) {
    problems.push("reconnectMax must not be shorter than reconnectBase")
  }
  return problems.length === 0 ? Either.right(result) : Either.left(problems)
}

/** How many bytes of frames a `send` packs into one write (one record), as the Node networks do. */
const packBytes = 4 * 1024 * 1024

/**
 * The largest length a record header may state (the frames of one write and the tag): the server packs up to 4 MiB
 * of frames in one record, more only for one frame alone, which may not be longer than `maxFrameSize`.
 *
 * @internal
 */
export const maxRecordBytes = (settings: Settings): number =>
  Math.max(packBytes, settings.maxFrameSize + Framing.headerSize + 1) + Framing.tagSize

/** Reasons that say something is wrong with the server, the path or the setup: worth a warning. */
const warnings: ReadonlySet<ConnectionError["reason"]> = new Set([
  "FrameTooLarge",
  "Malformed",
  "WrongPeer",
  "Tampered",
  "Credential"
])

/** How a dial ended, and whether its connection came into use. */
interface Ended {
  readonly error: ConnectionError | ClientHandshake.RefusedError
  readonly used: boolean
}

const encoder = new TextEncoder()

/**
 * Starts the network in the current scope. `dial` makes a socket that connects when run; `credential` is run before
 * every dial.
 *
 * @internal
 */
export const make = (options: {
  readonly settings: Settings
  readonly local: PeerId.PeerId
  readonly server: PeerId.PeerId
  /** For logs. */
  readonly url: string
  readonly credential: Effect.Effect<string | Uint8Array, unknown>
  readonly dial: Effect.Effect<Socket.Socket>
  readonly signals: ClientSignals.Targets
}): Effect.Effect<WebSocketNetwork, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { local, server, settings } = options
    const instance = yield* ClientCipher.randomBytes(instanceSize)
    const signals = yield* ClientSignals.make(options.signals)
    const inbound = yield* Effect.acquireRelease(Queue.unbounded<Inbound>(), Queue.shutdown)
    const connected = yield* SubscriptionRef.make(HashSet.empty<PeerId.PeerId>())
    const status = yield* SubscriptionRef.make<Status>(StatusOf.Connecting({ attempt: 1 }))
    const ping = Framing.encode(Framing.FrameType.Ping)
    /** The link of the connection in use. */
    let inUse: ClientLink.ClientLink | undefined = undefined
    /** The id of the last welcomed connection, which the next one names. */
    let last: Uint8Array | undefined = undefined

    const credential = options.credential.pipe(
      Effect.mapError((cause) =>
        new ConnectionError({ reason: "Credential", detail: "the credential could not be obtained", cause })
      ),
      // A token fetch that hangs would leave the network dialling nothing, for ever.
      Effect.timeoutFail({
        duration: settings.handshakeTimeout,
        onTimeout: () => new ConnectionError({ reason: "Credential", detail: "the credential did not come in time" })
      }),
      Effect.flatMap((value) => {
        const bytes = typeof value === "string" ? encoder.encode(value) : value
        return bytes.length <= maxCredentialBytes
          ? Effect.succeed(bytes)
          : Effect.fail(
            new ConnectionError({
              reason: "Credential",
              detail: `a credential of ${bytes.length} bytes exceeds ${maxCredentialBytes} bytes`
            })
          )
      })
    )

    /** Reads frames until the connection ends; never succeeds. */
    const read = (link: ClientLink.ClientLink): Effect.Effect<never, ConnectionError> =>
      Effect.forever(Effect.flatMap(link.nextBatch, (frames) => {
        // Every frame of a read goes on in one offer, so the engine takes them as one batch.
        const data: Array<Inbound> = []
        for (const frame of frames) {
          if (frame.type === Framing.FrameType.Data) data.push({ from: server, frame: frame.body })
          else if (frame.type !== Framing.FrameType.Ping) {
            return Effect.zipRight(
              Queue.offerAll(inbound, data),
              Effect.fail(
                new ConnectionError({
                  reason: "Malformed",
                  detail: `unexpected frame type ${frame.type} after the handshake`
                })
              )
            )
          }
        }
        return Queue.offerAll(inbound, data)
      }))

    /** Fails with `Idle` once nothing arrived for `idleTimeout` (`Framing.watchIdle`). */
    const watch = (link: ClientLink.ClientLink): Effect.Effect<never, ConnectionError> =>
      Framing.watchIdle(link.received, settings.idleTimeout, () =>
        new ConnectionError({
          reason: "Idle",
          detail: `nothing arrived for ${Duration.format(settings.idleTimeout)}`
        }))

    /** A connection in use: reads, pings and watches for silence until the first error. */
    const serve = (link: ClientLink.ClientLink): Effect.Effect<never, ConnectionError> =>
      Effect.gen(function*() {
        link.setLimit(settings.maxFrameSize)
        inUse = link
        yield* SubscriptionRef.set(connected, HashSet.make(server))
        yield* SubscriptionRef.set(status, StatusOf.Connected({ server }))
        yield* Effect.logDebug("connection in use")
        const pinger = Effect.forever(Effect.zipRight(Effect.sleep(settings.pingInterval), link.write(ping)))
        return yield* Effect.raceFirst(read(link), Effect.raceFirst(pinger, watch(link)))
      }).pipe(
        Effect.ensuring(Effect.suspend(() => {
          inUse = undefined
          return SubscriptionRef.set(connected, HashSet.empty())
        }))
      )

    /** One dial, to its end: the error that ended it, and whether its connection came into use. */
    const connect: Effect.Effect<Ended> = Effect.scoped(Effect.gen(function*() {
      const offlines = signals.offlines()
      const offline = Effect.zipRight(
        signals.offline(offlines),
        Effect.fail(new ConnectionError({ reason: "Offline", detail: "the browser went offline" }))
      )
      const handshake = Effect.gen(function*() {
        const token = yield* credential
        const link = yield* ClientLink.make(yield* options.dial, {
          limit: ClientHandshake.maxHandshakeFrame,
          recordLimit: maxRecordBytes(settings)
        })
        const welcomed = yield* ClientHandshake.run(link, { local, server, instance, last, credential: token }).pipe(
          Effect.timeoutFail({
            duration: settings.handshakeTimeout,
            onTimeout: () =>
              new ConnectionError({ reason: "HandshakeTimeout", detail: "the handshake did not finish in time" })
          }),
          Effect.tapError((error) => link.abort(error._tag === "RefusedError" ? "Refused" : error.reason))
        )
        return { link, welcomed }
      })
      const opened = yield* Effect.either(Effect.raceFirst(handshake, offline))
      if (Either.isLeft(opened)) return { error: opened.left, used: false }
      const { link, welcomed } = opened.right
      last = welcomed.id
      const ended = yield* Effect.flip(Effect.raceFirst(serve(link), offline))
      yield* link.abort(ended.reason)
      return { error: ended, used: true }
    }))

    const logEnd = (ended: Ended, retryIn: Duration.Duration) => {
      const { error } = ended
      const annotations = { reason: error.reason, retryIn: Duration.format(retryIn) }
      if (error._tag === "RefusedError") {
        return Effect.logWarning("the server refused the client", error.detail).pipe(Effect.annotateLogs(annotations))
      }
      const message = ended.used ? "connection closed" : "dial failed"
      return (warnings.has(error.reason)
        ? Effect.logWarning(message, error.detail)
        : Effect.logDebug(message, error.detail)).pipe(Effect.annotateLogs(annotations))
    }

    // The driver only computes the waits (`delays`, with no delay of its own): the loop sleeps, so that a wake event
    // can cut the wait short.
    const backoffSchedule = Schedule.exponential(settings.reconnectBase, 2).pipe(
      Schedule.union(Schedule.spaced(settings.reconnectMax)),
      Schedule.jitteredWith({ min: 0.5, max: 1.5 }),
      Schedule.delays,
      Schedule.modifyDelay(() => Duration.zero)
    )

    /**
     * Dials until the scope closes. The back-off starts over after a connection that stayed in use for at least
     * `reconnectMax`. A wake event since the dial began (since the connection ended, for one that was in use) cuts
     * the wait short.
     */
    const dialLoop = Effect.gen(function*() {
      const backoff = yield* Schedule.driver(backoffSchedule)
      // The status starts as the first attempt's `Connecting`.
      let attempt = 1
      while (true) {
        const wakes = signals.wakes()
        const started = yield* Clock.currentTimeMillis
        const ended = yield* connect
        if (ended.used) {
          attempt = 0
          const lived = (yield* Clock.currentTimeMillis) - started
          if (lived >= Duration.toMillis(settings.reconnectMax)) yield* backoff.reset
        }
        const delay = yield* Effect.orElseSucceed(backoff.next(undefined), () => settings.reconnectMax)
        const { error } = ended
        let retryIn = delay
        if (error._tag === "RefusedError") {
          // The same credential would be refused again: ask at most every `reconnectMax`, jittered so that the tabs
          // a server refused together do not come back together.
          retryIn = Duration.max(delay, Duration.times(settings.reconnectMax, 1 + (yield* Random.next) / 2))
          yield* SubscriptionRef.set(status, StatusOf.Refused({ reason: error.reason, detail: error.detail, retryIn }))
        } else {
          yield* SubscriptionRef.set(
            status,
            StatusOf.Disconnected({ reason: error.reason, detail: error.detail, retryIn })
          )
        }
        yield* logEnd(ended, retryIn)
        yield* Effect.raceFirst(Effect.sleep(retryIn), signals.wake(ended.used ? signals.wakes() : wakes))
        attempt++
        yield* SubscriptionRef.set(status, StatusOf.Connecting({ attempt }))
      }
    })

    yield* dialLoop.pipe(
      // The loop only ends with the scope; anything else is a defect, and the engine must see the network stop.
      Effect.onExit((exit) =>
        Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause)
          ? Effect.zipRight(
            Effect.logError("the dial loop failed; the network stops", exit.cause),
            Queue.shutdown(inbound)
          )
          : Effect.void
      ),
      Effect.annotateLogs({ network: "browser-websocket", local, server, url: options.url }),
      Effect.forkScoped
    )

    return {
      localPeer: local,
      send: (to, frames) =>
        Effect.suspend(() => {
          const link = inUse
          if (to !== server || link === undefined) {
            return Effect.fail(new NetworkError({ peer: to, reason: "Unreachable" }))
          }
          if (frames.length === 0) return Effect.void
          const oversized = frames.find((frame) => frame.length > settings.maxFrameSize)
          if (oversized !== undefined) {
            return Effect.fail(
              new NetworkError({
                peer: to,
                reason: "Io",
                cause: new ConnectionError({
                  reason: "FrameTooLarge",
                  detail: `a frame of ${oversized.length} bytes exceeds maxFrameSize ${settings.maxFrameSize}`
                })
              })
            )
          }
          return Effect.forEach(
            Framing.encodeAll(Framing.FrameType.Data, frames, packBytes),
            link.write,
            { discard: true }
          ).pipe(
            Effect.mapError((cause) =>
              new NetworkError({ peer: to, reason: cause.reason === "Io" ? "Io" : "Closed", cause })
            )
          )
        }),
      inbound: Stream.fromQueue(inbound),
      connected,
      status
    } satisfies WebSocketNetwork
  })
