/**
 * One connection as the networks see it: a platform `Socket` read as frames, with writes that fail instead of
 * waiting once the socket is gone.
 *
 * @internal
 */
import * as Socket from "@effect/platform/Socket"
import { type Frame, FrameDecoder, FrameError, toFrame } from "@intersession/core/Framing"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Mailbox from "effect/Mailbox"
import type * as Scope from "effect/Scope"
import * as LinkCipher from "./linkCipher.js"

/**
 * Why a connection ended or was refused. It never leaves the network: it is logged with the connection's peer and
 * address, and a `send` that meets it fails with a `NetworkError`.
 *
 * @internal
 */
export class ConnectionError extends Data.TaggedError("ConnectionError")<{
  readonly reason:
    /** The other side closed the connection. */
    | "Closed"
    /** The socket failed to open, read or write. */
    | "Io"
    /** Nothing arrived for longer than the idle timeout. */
    | "Idle"
    /** A frame was larger than the limit. */
    | "FrameTooLarge"
    /** The other side sent more before authenticating than the handshake needs. */
    | "TooManyBytes"
    /** Bytes that are not a frame, or a frame that does not fit the protocol. */
    | "Malformed"
    /** The handshake did not finish in time. */
    | "HandshakeTimeout"
    /** The other side does not know the pre-shared key. */
    | "Unauthenticated"
    /** The other side claims a peer id that is not in the address book. */
    | "UnknownPeer"
    /** The other side is not the peer it was dialled as, or it was dialled for someone else. */
    | "WrongPeer"
    /** The other side speaks another protocol version. */
    | "Version"
    /** A record after the handshake failed authentication: altered, replayed, reordered, dropped or forged. */
    | "Tampered"
    /** The lower peer id kept another connection between the pair. */
    | "Rejected"
    /** A newer connection to the same peer took this one's place. */
    | "Replaced"
    /** The peer left the address book. */
    | "Removed"
    /** A client was refused after its key exchange, and told why (`clientHandshake.ts`). */
    | "ClientRefused"
    /** A client sent more than the engine took, past its `maxPendingBytes`. */
    | "Overloaded"
  readonly detail: string
  readonly cause?: unknown
}> {
  override get message(): string {
    return `${this.reason}: ${this.detail}`
  }
}

/** @internal */
export interface Link {
  /** The next frame; fails with `Closed` at the end of the stream. */
  readonly next: Effect.Effect<Frame, ConnectionError>
  /**
   * The next frame and every other frame already received whole, so a reader hands them on together. A malformed
   * frame fails the call, as `next` would, once the frames before it have been taken.
   */
  readonly nextBatch: Effect.Effect<ReadonlyArray<Frame>, ConnectionError>
  /** Bytes received so far: a watchdog sees from it whether anything arrived. */
  readonly received: () => number
  /**
   * Writes bytes, in call order. Before the socket is open the write waits for it, and fails if it never opens;
   * after it closed the write fails at once.
   */
  readonly write: (bytes: Uint8Array) => Effect.Effect<void, ConnectionError>
  /** Closes the socket now, dropping what is not yet written. */
  readonly abort: (reason: string) => Effect.Effect<void>
  /** Succeeds when the socket has closed. */
  readonly closed: Effect.Effect<void>
  /** The largest frame body `next` accepts; it can change between frames. */
  readonly setLimit: (limit: number) => void
  /**
   * Protects everything from now on, both ways (see `linkCipher.ts`): what one `write` is given is sealed as one
   * record, and `next` reads records, opens each whole and returns the frames inside; a record that fails to open
   * fails the read with `Tampered`, and nothing of it is returned. Called once, right after the handshake, between
   * the last plain frame and the first record of each direction.
   */
  readonly protect: (session: LinkCipher.Session) => void
}

/** @internal */
export const fromFrameError = (error: FrameError): ConnectionError =>
  new ConnectionError({ reason: error.reason, detail: error.detail })

const ioError = (detail: string) => (cause: Socket.SocketError) =>
  new ConnectionError({
    reason: Socket.SocketCloseError.is(cause) ? "Closed" : "Io",
    detail: `${detail}: ${describe(cause)}`,
    cause
  })

/** The message of the error under a `SocketError` (`connect ECONNREFUSED …`, say), else its own. */
const describe = (error: Socket.SocketError): string =>
  error.reason !== "Close" && error.cause instanceof Error ? error.cause.message : error.message

/**
 * Runs `socket` in the current scope and reads it as frames of at most `limit` bytes. Closing the scope closes the
 * socket. `onArrival` is told the size of every chunk as it arrives, before it is queued (a guard counts the bytes an
 * unauthenticated client sends). Once protected, the link reads records whose length header states at most
 * `recordLimit` bytes (ciphertext and tag); a longer one fails the read with `FrameTooLarge` before it arrives.
 *
 * @internal
 */
export const make = (
  socket: Socket.Socket,
  options: {
    readonly limit: number
    readonly recordLimit: number
    readonly onArrival?: ((bytes: number) => void) | undefined
  }
): Effect.Effect<Link, never, Scope.Scope> =>
  Effect.gen(function*() {
    const chunks = yield* Mailbox.make<Uint8Array, Socket.SocketError>()
    const closed = yield* Deferred.make<void>()
    let ended = false
    /** How the socket ended, once it has. */
    let ending = new ConnectionError({ reason: "Closed", detail: "the socket closed" })
    let received = 0
    yield* socket.run((chunk) => {
      received += chunk.length
      options.onArrival?.(chunk.length)
      chunks.unsafeOffer(chunk)
    }).pipe(
      Effect.tapError((cause) => Effect.sync(() => ending = ioError("the socket failed")(cause))),
      Mailbox.into(chunks),
      Effect.ensuring(Effect.zipRight(Effect.sync(() => ended = true), Deferred.done(closed, Exit.void))),
      Effect.forkScoped
    )
    const rawWrite = yield* socket.writer
    /** The frames: read from the socket's bytes, or, once protected, from the plaintext of the records. */
    const decoder = new FrameDecoder(options.limit)
    /** Once protected: the records, read from the socket's bytes. */
    let records: FrameDecoder | undefined = undefined
    let cipher: LinkCipher.Session | undefined = undefined
    /** Sealed writes go out in the order they were sealed: the receiver counts records in the order they arrive. */
    const writeLock = yield* Effect.makeSemaphore(1)
    const tampered = new ConnectionError({
      reason: "Tampered",
      detail: "a record failed authentication (altered, replayed, reordered, dropped or forged)"
    })

    /** Set once a record failed to open: every later read fails with it. */
    let failed: ConnectionError | undefined = undefined

    /** The next frame: of the decoder, which a protected link fills with the records it opens one by one. */
    const decode = (): Frame | FrameError | ConnectionError | undefined => {
      while (true) {
        if (failed !== undefined) return failed
        const content = decoder.nextContent()
        if (content instanceof Uint8Array) return toFrame(content)
        if (content !== undefined || records === undefined || cipher === undefined) return content
        const record = records.nextContent()
        if (!(record instanceof Uint8Array)) return record
        const opened = LinkCipher.open(cipher.receive, record)
        if (opened === undefined) failed = tampered
        else decoder.push(opened)
      }
    }

    const closedError = (detail: string) => new ConnectionError({ reason: "Closed", detail })
    const socketClosed = Effect.zipRight(Deferred.await(closed), Effect.suspend(() => Effect.fail(ending)))

    /**
     * The platform's write waits while the socket is not open: before it opens (it may never), and after it closed.
     * Race it with the end of the socket, so that a write fails instead of waiting for ever.
     */
    const guarded = <A>(effect: Effect.Effect<A, ConnectionError>): Effect.Effect<A, ConnectionError> =>
      Effect.suspend(() => (ended ? socketClosed : Effect.raceFirst(effect, socketClosed)))

    const next: Effect.Effect<Frame, ConnectionError> = Effect.suspend(() => {
      const decoded = decode()
      if (decoded instanceof FrameError) return Effect.fail(fromFrameError(decoded))
      if (decoded instanceof ConnectionError) return Effect.fail(decoded)
      if (decoded !== undefined) return Effect.succeed(decoded)
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
        const decoded = decode()
        // The error stays (in the decoder, or in `failed`): the next call meets it at once.
        if (decoded === undefined || decoded instanceof FrameError || decoded instanceof ConnectionError) return batch
        batch.push(decoded)
      }
    })

    const plainWrite = (bytes: Uint8Array) => guarded(Effect.mapError(rawWrite(bytes), ioError("the write failed")))
    const abort = (reason: string) =>
      Effect.ignore(
        guarded(Effect.mapError(rawWrite(new Socket.CloseEvent(1000, reason)), ioError("the close failed")))
      )
    /**
     * Seals the write as one record and writes it under the lock, so records go out in the order of their counters.
     * A sealed write that does not complete (failed, interrupted) may or may not have reached the socket: the
     * counters can no longer be trusted, and the link is closed. An empty write sends nothing.
     */
    const sealedWrite = (session: LinkCipher.Session, bytes: Uint8Array) =>
      writeLock.withPermits(1)(Effect.suspend(() => {
        if (bytes.length === 0) return ended ? socketClosed : Effect.void
        const sealed = LinkCipher.sealRecord(session.send, bytes)
        if (sealed === undefined) {
          const detail = "a write too large for one record, or the record counter is used up"
          return Effect.zipRight(abort(detail), Effect.fail(new ConnectionError({ reason: "Io", detail })))
        }
        return Effect.onExit(plainWrite(sealed), (exit) => Exit.isSuccess(exit) ? Effect.void : abort("a write failed"))
      }))

    return {
      next,
      nextBatch,
      received: () => received,
      write: (bytes) => cipher === undefined ? plainWrite(bytes) : sealedWrite(cipher, bytes),
      abort,
      closed: Deferred.await(closed),
      setLimit: (value) => {
        decoder.limit = value
      },
      protect: (session) => {
        if (cipher !== undefined) return
        cipher = session
        // What arrived after the last plain frame is the start of the records.
        const reader = new FrameDecoder(options.recordLimit, "record")
        for (const bytes of decoder.drain()) reader.push(bytes)
        records = reader
      }
    } satisfies Link
  })
