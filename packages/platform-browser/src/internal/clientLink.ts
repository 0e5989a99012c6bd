/**
 * One connection of a client as its network sees it: a platform `Socket` (a browser's WebSocket) read as frames, in
 * the clear for the hellos and then as sealed records (`clientCipher.ts`), with writes that fail instead of waiting
 * once the socket is gone.
 *
 * WebCrypto is asynchronous, so order is kept by construction: one reader (the handshake, then the connection's read
 * loop) opens the records one after the other as they arrive, and sealed writes go through a one-permit lock, each
 * sealed and written before the next is sealed, so the records hit the wire in the order of their counters.
 *
 * @internal
 */
import * as Socket from "@effect/platform/Socket"
import { type Frame, FrameDecoder, FrameError, toFrame } from "@intersession/core/Framing"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Mailbox from "effect/Mailbox"
import type * as Scope from "effect/Scope"
import type { DisconnectReason } from "../WebSocketNetwork.js"
import * as ClientCipher from "./clientCipher.js"

/**
 * Why a connection ended or could not be made. It never leaves the network: it is logged, it becomes the
 * `Disconnected` status, and a `send` that meets it fails with a `NetworkError`.
 *
 * @internal
 */
export class ConnectionError extends Data.TaggedError("ConnectionError")<{
  readonly reason: DisconnectReason
  readonly detail: string
  readonly cause?: unknown
}> {
  override get message(): string {
    return `${this.reason}: ${this.detail}`
  }
}

/** @internal */
export interface ClientLink {
  /** The next frame; fails with `Closed` at the end of the stream. One reader at a time. */
  readonly next: Effect.Effect<Frame, ConnectionError>
  /** The next frame and the frames already opened after it, so that a reader hands them on together. */
  readonly nextBatch: Effect.Effect<ReadonlyArray<Frame>, ConnectionError>
  /** Bytes received so far: a watchdog sees from it whether anything arrived. */
  readonly received: () => number
  /**
   * Writes bytes, in call order; once protected, as one sealed record. Before the socket opens the write waits for it,
   * and fails if it never opens; after it closed the write fails at once.
   */
  readonly write: (bytes: Uint8Array) => Effect.Effect<void, ConnectionError>
  /** Closes the socket now, dropping what is not yet written. */
  readonly abort: (reason: string) => Effect.Effect<void>
  /** The largest frame body `next` accepts; it can change between frames. */
  readonly setLimit: (limit: number) => void
  /**
   * Seals every write and opens every record from now on, both ways. Called once, between the last plain frame and
   * the first record of each direction: what arrived after the last plain frame is the start of the records.
   */
  readonly protect: (session: ClientCipher.Session) => void
}

/** @internal */
export const fromFrameError = (error: FrameError): ConnectionError =>
  new ConnectionError({ reason: error.reason, detail: error.detail })

/** The message of the error under a `SocketError`, else its own. */
const describe = (error: Socket.SocketError): string =>
  error.reason !== "Close" && error.cause instanceof Error ? error.cause.message : error.message

const ioError = (detail: string) => (cause: Socket.SocketError) =>
  new ConnectionError({
    reason: Socket.SocketCloseError.is(cause) ? "Closed" : "Io",
    detail: `${detail}: ${describe(cause)}`,
    cause
  })

/**
 * A browser throws from `close` on a reason longer than 123 bytes of UTF-8; ours are short ASCII, cut to be sure.
 */
const closeReason = (reason: string) => reason.slice(0, 100)

/**
 * Runs `socket` in the current scope and reads it as frames of at most `limit` bytes; closing the scope closes the
 * socket. Once protected, a record whose length header states more than `recordLimit` bytes (ciphertext and tag)
 * fails the read with `FrameTooLarge` before it arrives.
 *
 * @internal
 */
export const make = (
  socket: Socket.Socket,
  options: { readonly limit: number; readonly recordLimit: number }
): Effect.Effect<ClientLink, never, Scope.Scope> =>
  Effect.gen(function*() {
    const chunks = yield* Mailbox.make<Uint8Array, Socket.SocketError>()
    let ended = false
    /** How the socket ended, once it has. */
    let ending = new ConnectionError({ reason: "Closed", detail: "the socket closed" })
    const closed = yield* Effect.makeLatch(false)
    let received = 0
    yield* socket.run((chunk) => {
      received += chunk.length
      chunks.unsafeOffer(chunk)
    }).pipe(
      // A browser's WebSocket constructor throws for a URL the page may not open (`ws://` from an `https://` page):
      // a failure to open, not a defect of the network.
      Effect.catchAllDefect((cause) => Effect.fail(new Socket.SocketGenericError({ reason: "Open", cause }))),
      Effect.tapError((cause) => Effect.sync(() => ending = ioError("the socket failed")(cause))),
      Mailbox.into(chunks),
      Effect.ensuring(Effect.zipRight(Effect.sync(() => ended = true), closed.open)),
      Effect.forkScoped
    )
    const rawWrite = yield* socket.writer
    /** The frames: read from the socket's bytes, or, once protected, from the plaintext of the records. */
    const decoder = new FrameDecoder(options.limit)
    /** Once protected: the records, read from the socket's bytes. */
    let records: FrameDecoder | undefined = undefined
    let cipher: ClientCipher.Session | undefined = undefined
    const writeLock = yield* Effect.makeSemaphore(1)
    /** Set once a record failed to open: every later read fails with it. */
    let failed: ConnectionError | undefined = undefined

    const closedError = (detail: string) => new ConnectionError({ reason: "Closed", detail })
    const socketClosed = Effect.zipRight(closed.await, Effect.suspend(() => Effect.fail(ending)))

    /**
     * The platform's write waits while the socket is not open: before it opens (it may never), and after it closed.
     * Race it with the end of the socket, so that a write fails instead of waiting for ever.
     */
    const guarded = <A>(effect: Effect.Effect<A, ConnectionError>): Effect.Effect<A, ConnectionError> =>
      Effect.suspend(() => (ended ? socketClosed : Effect.raceFirst(effect, socketClosed)))

    /** The next frame of what is already at hand, without waiting. */
    const ready = (): Frame | ConnectionError | undefined => {
      if (failed !== undefined) return failed
      const content = decoder.nextContent()
      if (content instanceof FrameError) return fromFrameError(content)
      return content === undefined ? undefined : toFrame(content)
    }

    const next: Effect.Effect<Frame, ConnectionError> = Effect.suspend(() => {
      const frame = ready()
      if (frame instanceof ConnectionError) return Effect.fail(frame)
      if (frame !== undefined) return Effect.succeed(frame)
      if (records !== undefined && cipher !== undefined) {
        const record = records.nextContent()
        if (record instanceof FrameError) return Effect.fail(fromFrameError(record))
        if (record !== undefined) {
          return Effect.flatMap(ClientCipher.open(cipher.receive, record), (opened) => {
            if (opened === undefined) {
              failed = new ConnectionError({
                reason: "Tampered",
                detail: "a record failed authentication (altered, replayed, reordered, dropped or forged)"
              })
              return Effect.fail(failed)
            }
            decoder.push(opened)
            return next
          })
        }
      }
      return Effect.flatMap(
        Effect.mapError(chunks.takeAll, ioError("the socket failed")),
        ([taken, done]) => {
          for (const chunk of taken) (records ?? decoder).push(chunk)
          if (done && taken.length === 0) {
            const pending = decoder.pending + (records?.pending ?? 0)
            return Effect.fail(
              closedError(pending > 0 ? "the socket closed in the middle of a frame" : "the socket closed")
            )
          }
          return next
        }
      )
    })

    const nextBatch = Effect.map(next, (first) => {
      const batch = [first]
      while (true) {
        const frame = ready()
        // An error stays (in the decoder, or in `failed`): the next call meets it at once.
        if (frame === undefined || frame instanceof ConnectionError) return batch
        batch.push(frame)
      }
    })

    const plainWrite = (bytes: Uint8Array) => guarded(Effect.mapError(rawWrite(bytes), ioError("the write failed")))
    const abort = (reason: string) =>
      Effect.ignore(
        guarded(
          Effect.mapError(rawWrite(new Socket.CloseEvent(1000, closeReason(reason))), ioError("the close failed"))
        )
      )
    /**
     * Seals the write as one record and writes it under the lock. A sealed write that does not complete (failed,
     * interrupted while WebCrypto sealed it) may or may not have taken a counter or reached the socket: the counters
     * can no longer be trusted, and the link is closed. An empty write sends nothing.
     */
    const sealedWrite = (session: ClientCipher.Session, bytes: Uint8Array) =>
      writeLock.withPermits(1)(Effect.suspend(() => {
        if (bytes.length === 0) return ended ? socketClosed : Effect.void
        return ClientCipher.sealRecord(session.send, bytes).pipe(
          Effect.mapError((cause) => new ConnectionError({ reason: "Io", detail: cause.detail, cause })),
          Effect.flatMap(plainWrite),
          Effect.onExit((exit) => Exit.isSuccess(exit) ? Effect.void : abort("a write failed"))
        )
      }))

    return {
      next,
      nextBatch,
      received: () => received,
      write: (bytes) => cipher === undefined ? plainWrite(bytes) : sealedWrite(cipher, bytes),
      abort,
      setLimit: (value) => {
        decoder.limit = value
      },
      protect: (session) => {
        if (cipher !== undefined) return
        cipher = session
        const reader = new FrameDecoder(options.recordLimit, "record")
        for (const bytes of decoder.drain()) reader.push(bytes)
        records = reader
      }
    } satisfies ClientLink
  })
