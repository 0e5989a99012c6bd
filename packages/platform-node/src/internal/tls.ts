/**
 * TLS with mutual authentication for the TCP network: a dialler (`tls.connect` under the platform's
 * `NodeSocket.fromDuplex`) and the smallest listener that yields platform `Socket`s (`tls.createServer`, one
 * `NodeSocket.fromDuplex` per connection). The platform's `NodeSocketServer` builds a plain `net.Server`, so it
 * cannot serve TLS.
 *
 * Both sides present a certificate and require the other's to chain to the deployment's CA. The server name is not
 * checked (peers are addressed by IP as often as by name): a certificate proves membership of the deployment, and
 * the pre-shared-key handshake that runs inside the TLS stream establishes which peer is at the other end.
 *
 * The listener guards every TCP connection from the moment it is accepted, before its TLS handshake (see
 * `admission.ts`): over a cap it is destroyed at once, before the TLS server sees it, and its TLS handshake is bounded
 * by `handshakeTimeout`.
 *
 * @internal
 */
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as Socket from "@effect/platform/Socket"
import * as SocketServer from "@effect/platform/SocketServer"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as NodeNet from "node:net"
import * as Tls from "node:tls"
import type * as Admission from "./admission.js"
import type { Incoming } from "./net.js"

/**
 * PEM material of one peer: what it presents, and the CA the other peers' certificates must chain to.
 *
 * @internal
 */
export interface TlsOptions {
  /** The peer's private key (PEM), a string or its bytes; `Redacted` keeps it out of logs. */
  readonly key: string | Uint8Array | Redacted.Redacted<string> | Redacted.Redacted<Uint8Array>
  /** The peer's certificate (PEM), followed by any intermediate certificates; presented to every other peer. */
  readonly cert: string | Uint8Array
  /** The CA certificate(s) (PEM) of the deployment: another peer's certificate must chain to one of them. */
  readonly ca: string | Uint8Array
}

/**
 * The PEM material as `node:tls` takes it, checked to load.
 *
 * @internal
 */
export interface Credentials {
  readonly key: string | Buffer
  readonly cert: string | Buffer
  readonly ca: string | Buffer
}

const pem = (value: string | Uint8Array): string | Buffer =>
  typeof value === "string" ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength)

const describe = (cause: unknown): string => cause instanceof Error ? cause.message : String(cause)

/**
 * Loads the PEM material once, so that a bad key, certificate or CA, or a key that does not match the certificate,
 * is reported when the network starts.
 *
 * @internal
 */
export const credentials = (options: TlsOptions): Either.Either<Credentials, string> => {
  const key = Redacted.isRedacted(options.key) ? Redacted.value<string | Uint8Array>(options.key) : options.key
  const loaded: Credentials = { key: pem(key), cert: pem(options.cert), ca: pem(options.ca) }
  return Either.map(
    Either.try({
      try: () => Tls.createSecureContext(loaded),
      catch: (cause) => `the TLS key, certificate or CA cannot be loaded: ${describe(cause)}`
    }),
    () => loaded
  )
}

/** Accepts any server name: the CA proves membership, the pre-shared-key handshake proves the peer id. */
const anyServerName = (): Error | undefined => undefined

/**
 * A TLS socket to `host:port` that connects when run, presenting `credentials` and requiring the server's
 * certificate to chain to their CA. Opening (TCP and TLS handshake) is bounded by `openTimeout`.
 *
 * @internal
 */
export const dial = (
  address: { readonly host: string; readonly port: number },
  credentials: Credentials,
  openTimeout: Duration.DurationInput
): Effect.Effect<Socket.Socket, Socket.SocketError> =>
  NodeSocket.fromDuplex(
    Effect.scopeWith((scope) => {
      let conn: Tls.TLSSocket | undefined
      return Effect.flatMap(
        Scope.addFinalizer(
          scope,
          Effect.sync(() => {
            if (conn !== undefined && !conn.destroyed) conn.destroy()
          })
        ),
        () =>
          Effect.async<Tls.TLSSocket, Socket.SocketError>((resume) => {
            const socket = Tls.connect({
              host: address.host,
              port: address.port,
              ...credentials,
              rejectUnauthorized: true,
              checkServerIdentity: anyServerName
            })
            conn = socket
            socket.setNoDelay(true)
            // Kept for the socket's life: an error with no listener would end the process.
            socket.on("error", (cause) => resume(Effect.fail(new Socket.SocketGenericError({ reason: "Open", cause }))))
            socket.once("secureConnect", () => resume(Effect.succeed(socket)))
          })
      )
    }),
    { openTimeout }
  )

/**
 * A TLS listener: the address it listens on, and `serve`, which hands each connection whose TLS handshake
 * succeeded (the client presented a certificate that chains to the CA) to a handler as a platform `Socket`, with the
 * guard it took when it was accepted.
 *
 * @internal
 */
export interface Listener {
  readonly address: { readonly host: string; readonly port: number }
  readonly serve: <R>(
    handler: (socket: Socket.Socket, incoming: Incoming) => Effect.Effect<void, never, R>
  ) => Effect.Effect<never, SocketServer.SocketServerError, R>
}

/** The key a TCP connection and the TLS socket over it share, to find one's guard from the other. */
const remoteKey = (socket: NodeNet.Socket) => `${socket.remoteAddress}|${socket.remotePort}`

/**
 * Listens with TLS in the current scope; closing the scope closes the listener and every connection it accepted.
 * A client whose TLS handshake fails (no certificate, one from another CA, not TLS at all, or too slow: past
 * `handshakeTimeout`) is dropped with a log line while serving, and counted as `TlsHandshake`. A TCP connection that
 * `admission` has no room for is destroyed as soon as it is accepted.
 *
 * @internal
 */
export const listen = (options: {
  readonly host?: string | undefined
  readonly port: number
  readonly credentials: Credentials
  readonly handshakeTimeout: Duration.Duration
  readonly admission: Admission.Admission
}): Effect.Effect<Listener, SocketServer.SocketServerError, Scope.Scope> =>
  Effect.gen(function*() {
    const { admission } = options
    const failed = yield* Deferred.make<never, Error>()
    /** The TCP connections under every TLS connection, handshaking or not, to end them all on close. */
    const open = new Set<NodeNet.Socket>()
    /** The guard of each TCP connection, by its remote address and port (a TLS socket does not show its TCP one). */
    const guards = new Map<string, Admission.Guard>()
    let closed = false
    const pending: Array<Tls.TLSSocket> = []
    let onConnection = (conn: Tls.TLSSocket): void => {
      pending.push(conn)
    }
    let onClientError = (_error: Error, _remote: string): void => {}
    /**
     * The TLS server does not listen itself: a plain TCP server in front of it takes each connection, and hands on
     * only those its admission lets in. A connection the TLS server had seen would report its refusal as a failed TLS
     * handshake, one log line per refused connection in a flood.
     */
    const { front, server } = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const server = Tls.createServer({
          ...options.credentials,
          requestCert: true,
          rejectUnauthorized: true,
          handshakeTimeout: Math.max(1, Math.ceil(Duration.toMillis(options.handshakeTimeout)))
        }, (conn) => {
          // Kept for the socket's life: an error with no listener would end the process.
          conn.on("error", () => {})
          if (closed) {
            conn.destroy()
            return
          }
          conn.setNoDelay(true)
          onConnection(conn)
        })
        const front = NodeNet.createServer((raw) => {
          if (closed) {
            raw.destroy()
            return
          }
          // The TLS server's own `handshakeTimeout` bounds the time to the key handshake.
          const guard = admission.admit(raw.remoteAddress ?? "unknown", () => raw.destroy(), false)
          if (guard === undefined) {
            raw.destroy()
            return
          }
          const key = remoteKey(raw)
          guards.set(key, guard)
          open.add(raw)
          raw.once("close", () => {
            open.delete(raw)
            if (guards.get(key) === guard) guards.delete(key)
            guard.release()
          })
          server.emit("connection", raw)
        })
        return { front, server }
      }),
      ({ front }) =>
        Effect.async<void>((resume) => {
          closed = true
          front.close(() => resume(Effect.void))
          // The listener closes once every connection has ended, those still in their TLS handshake included.
          for (const conn of open) conn.destroy()
          open.clear()
          for (const conn of pending.splice(0)) conn.destroy()
        })
    )
    server.on("tlsClientError", (error, socket) => {
      admission.failed("TlsHandshake")
      onClientError(error, `${socket.remoteAddress}:${socket.remotePort}`)
    })
    yield* Effect.async<void, SocketServer.SocketServerError>((resume) => {
      const onError = (cause: Error) =>
        resume(Effect.fail(new SocketServer.SocketServerError({ reason: "Open", cause })))
      front.once("error", onError)
      front.listen({ port: options.port, ...(options.host === undefined ? {} : { host: options.host }) }, () => {
        front.off("error", onError)
        front.on("error", (cause) => Deferred.unsafeDone(failed, Exit.fail(cause)))
        resume(Effect.void)
      })
    })
    const bound = front.address()
    const address = bound !== null && typeof bound === "object"
      ? { host: bound.address, port: bound.port }
      : { host: bound ?? options.host ?? "", port: options.port }

    const serve = <R>(
      handler: (socket: Socket.Socket, incoming: Incoming) => Effect.Effect<void, never, R>
    ): Effect.Effect<never, SocketServer.SocketServerError, R> =>
      Effect.scoped(Effect.gen(function*() {
        const fibers = yield* FiberSet.make()
        const run = yield* FiberSet.runtime(fibers)<R>()
        const accept = (conn: Tls.TLSSocket) => {
          const remote = `${conn.remoteAddress}:${conn.remotePort}`
          const guard = guards.get(remoteKey(conn))
          if (guard === undefined) {
            // Its TCP connection is gone already.
            conn.destroy()
            return
          }
          run(Effect.flatMap(
            NodeSocket.fromDuplex(
              Effect.acquireRelease(
                Effect.suspend((): Effect.Effect<Tls.TLSSocket, Socket.SocketError> =>
                  conn.destroyed
                    ? Effect.fail(new Socket.SocketCloseError({ reason: "Close", code: 1000 }))
                    : Effect.succeed(conn)
                ),
                (conn) => Effect.sync(() => conn.destroy())
              )
            ),
            (socket) => handler(socket, { remote, guard, countsBytes: false })
          ))
        }
        return yield* Effect.async<never>(() => {
          onConnection = accept
          onClientError = (error, remote) =>
            run(
              Effect.logWarning("TLS handshake failed", error.message).pipe(
                Effect.annotateLogs({ reason: "TlsHandshake", remote })
              )
            )
          for (const conn of pending.splice(0)) accept(conn)
          return Effect.sync(() => {
            onConnection = (conn) => {
              pending.push(conn)
            }
            onClientError = () => {}
          })
        }).pipe(
          Effect.raceFirst(
            Effect.mapError(
              Deferred.await(failed),
              (cause) => new SocketServer.SocketServerError({ reason: "Unknown", cause })
            )
          )
        )
      }))

    return { address, serve } satisfies Listener
  })
