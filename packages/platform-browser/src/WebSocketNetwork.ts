/**
 * A `Network` for a browser tab (or a worker) that dials one Node peer over WebSocket. A browser cannot listen, so it
 * only dials; it holds no pre-shared key either, so it speaks the client handshake (`ClientHandshake` in the core):
 * an ECDH key agreement, then a credential (a token the server's application checks, asked for afresh on every dial),
 * then every frame sealed both ways with AES-256-GCM, as between Node peers. Reach the server over `wss://`: its TLS
 * is what tells the tab it talks to the right server.
 *
 * The network dials again whenever the connection ends, with exponential back-off and jitter; the browser's `online`
 * event and a tab becoming visible again cut a wait short, and `offline` closes the connection in use at once. Its
 * {@link Status} tells a page what is going on: connecting, connected, disconnected (why, and when it retries), or
 * refused by the server.
 *
 * A browser throttles the timers of a hidden tab: its pings may go out late, and a server whose idle timeout is short
 * may close the connection. The tab then dials again, at once when it becomes visible.
 *
 * @since 0.3.0
 */
import * as BrowserSocket from "@effect/platform-browser/BrowserSocket"
import * as Socket from "@effect/platform/Socket"
import type { RefusalReason } from "@intersession/core/ClientHandshake"
import { Network } from "@intersession/core/Network"
import type { PeerId } from "@intersession/core/PeerId"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type * as Subscribable from "effect/Subscribable"
import * as ClientCipher from "./internal/clientCipher.js"
import * as ClientNetwork from "./internal/clientNetwork.js"
import * as ClientSignals from "./internal/clientSignals.js"

/**
 * Settings of a browser's WebSocket network. Every setting but `peer`, `url`, `server` and `credential` has a default
 * (see {@link defaults}).
 *
 * @since 0.3.0
 * @category models
 */
export interface Options<E = never, R = never> {
  /** The local peer's id: the id the credential is for. */
  readonly peer: PeerId
  /** Where the server is: `wss://host/path` (or `ws://`, on a development machine). */
  readonly url: string
  /** The id expected at `url`; a server with another id is left at once. */
  readonly server: PeerId
  /**
   * The credential to present (a string is sent as UTF-8), at most `ClientHandshake.maxCredentialBytes`. It is run
   * afresh before every dial, since tokens expire; when it fails, the dial counts as failed and is tried again later.
   */
  readonly credential: Effect.Effect<string | Uint8Array, E, R>
  /** Time to open the WebSocket and finish the handshake. */
  readonly handshakeTimeout?: Duration.DurationInput | undefined
  /** How often a `Ping` goes out on the connection in use. */
  readonly pingInterval?: Duration.DurationInput | undefined
  /** A connection on which nothing arrives for this long is closed. Longer than `pingInterval`. */
  readonly idleTimeout?: Duration.DurationInput | undefined
  /** First wait before dialling again; it doubles, with jitter, up to `reconnectMax`. */
  readonly reconnectBase?: Duration.DurationInput | undefined
  /** Longest wait between two dials; after a refusal, the shortest. */
  readonly reconnectMax?: Duration.DurationInput | undefined
  /**
   * Largest frame body sent or accepted, in bytes: `send` refuses a larger frame, and a larger one from the server
   * closes the connection. Keep it the same as the server's.
   */
  readonly maxFrameSize?: number | undefined
}

/**
 * The settings of a network, defaults filled in.
 *
 * @since 0.3.0
 * @category models
 */
export interface Settings {
  readonly handshakeTimeout: Duration.Duration
  readonly pingInterval: Duration.Duration
  readonly idleTimeout: Duration.Duration
  readonly reconnectBase: Duration.Duration
  readonly reconnectMax: Duration.Duration
  readonly maxFrameSize: number
}

/**
 * The defaults: a 10 s handshake, a ping every 5 s, closed after 15 s of silence, dialled again after 100 ms doubling
 * up to 10 s, and frames up to 1 MiB + 64 KiB (the Node networks' default).
 *
 * @since 0.3.0
 * @category constants
 */
export const defaults: Settings = ClientNetwork.defaults

/**
 * Why a connection ended or could not be made: the server closed it (`Closed`); the WebSocket failed to open, read
 * or write (`Io`); nothing arrived for `idleTimeout` (`Idle`); a frame or record was larger than allowed
 * (`FrameTooLarge`); the server sent what the protocol does not allow (`Malformed`); the handshake took longer than
 * `handshakeTimeout` (`HandshakeTimeout`); the server is not the one expected, or it bound the credential to another
 * id (`WrongPeer`); a record failed authentication (`Tampered`); the credential could not be obtained or is too long
 * (`Credential`); the browser went offline (`Offline`).
 *
 * @since 0.3.0
 * @category models
 */
export type DisconnectReason =
  | "Closed"
  | "Io"
  | "Idle"
  | "FrameTooLarge"
  | "Malformed"
  | "HandshakeTimeout"
  | "WrongPeer"
  | "Tampered"
  | "Credential"
  | "Offline"

/**
 * Where the network stands:
 *
 * - `Connecting`: dialling; `attempt` counts the dials since the last connection in use, from 1.
 * - `Connected`: a connection to `server` is in use.
 * - `Disconnected`: the last dial or connection ended for `reason`; the next dial is in `retryIn` (sooner if the
 *   browser comes back online or the tab becomes visible).
 * - `Refused`: the server refused the credential or the client. The network keeps dialling, since a fresh credential
 *   may be accepted, but waits at least `reconnectMax` (with up to 50 % jitter) after a refusal.
 *
 * @since 0.3.0
 * @category models
 */
export type Status = Data.TaggedEnum<{
  Connecting: { readonly attempt: number }
  Connected: { readonly server: PeerId }
  Disconnected: { readonly reason: DisconnectReason; readonly detail: string; readonly retryIn: Duration.Duration }
  Refused: { readonly reason: RefusalReason; readonly detail: string; readonly retryIn: Duration.Duration }
}>

/**
 * Constructors and matchers of {@link Status} (`Status.$match`, `Status.$is("Connected")`).
 *
 * @since 0.3.0
 * @category models
 */
export const Status = Data.taggedEnum<Status>()

/**
 * The status of the network a layer built, for a page to show.
 *
 * @since 0.3.0
 * @category tags
 */
export class ConnectionStatus extends Context.Tag("@intersession/platform-browser/WebSocketNetwork/ConnectionStatus")<
  ConnectionStatus,
  Subscribable.Subscribable<Status>
>() {}

/**
 * The `Network` service of a browser, and its status.
 *
 * @since 0.3.0
 * @category models
 */
export type WebSocketNetwork = Network["Type"] & {
  readonly status: Subscribable.Subscribable<Status>
}

/**
 * The network cannot start: its options are invalid, or the browser lacks WebCrypto (a page that is not a secure
 * context: served over `http://` from a host other than `localhost`).
 *
 * @since 0.3.0
 * @category errors
 */
export class WebSocketNetworkError extends Data.TaggedError("WebSocketNetworkError")<{
  readonly reason: "InvalidOptions" | "Unsupported"
  readonly detail: string
}> {
  /**
   * @since 0.3.0
   */
  override get message(): string {
    return `The browser WebSocket network cannot start (${this.reason}): ${this.detail}`
  }
}

/**
 * Starts the network in the current scope: it dials `url` with the `WebSocketConstructor` in context, and keeps a
 * connection up until the scope closes. The credential's requirements come from the context of `make`.
 *
 * @since 0.3.0
 * @category constructors
 */
export const make = <E = never, R = never>(
  options: Options<E, R>
): Effect.Effect<WebSocketNetwork, WebSocketNetworkError, Scope.Scope | Socket.WebSocketConstructor | R> =>
  Effect.gen(function*() {
    const settings = yield* Either.mapLeft(
      ClientNetwork.settings(options),
      (problems) => new WebSocketNetworkError({ reason: "InvalidOptions", detail: problems.join("; ") })
    )
    if (!ClientCipher.isAvailable()) {
      return yield* new WebSocketNetworkError({
        reason: "Unsupported",
        detail: "WebCrypto is missing: serve the page over https (a secure context)"
      })
    }
    const construct = yield* Socket.WebSocketConstructor
    // Binary messages as `ArrayBuffer`s: a `Blob` is read asynchronously, and messages could overtake each other.
    const constructor = Socket.WebSocketConstructor.of((url, protocols) => {
      const socket = construct(url, protocols)
      socket.binaryType = "arraybuffer"
      return socket
    })
    const context = yield* Effect.context<R>()
    return yield* ClientNetwork.make({
      settings,
      local: options.peer,
      server: options.server,
      url: options.url,
      credential: Effect.provide(options.credential, context),
      dial: Effect.provideService(
        Socket.makeWebSocket(options.url, { openTimeout: settings.handshakeTimeout }),
        Socket.WebSocketConstructor,
        constructor
      ),
      signals: ClientSignals.browserTargets()
    })
  })

/**
 * The network as a layer: the `Network` for the engine, and its {@link ConnectionStatus} for the page. The
 * `WebSocketConstructor` comes from context (see {@link layerBrowser}).
 *
 * @example
 * ```ts
 * import * as Delivery from "@intersession/core/Delivery"
 * import * as ILM from "@intersession/core/ILM"
 * import * as PeerId from "@intersession/core/PeerId"
 * import * as WebSocketNetwork from "@intersession/platform-browser/WebSocketNetwork"
 * import * as BrowserSocket from "@effect/platform-browser/BrowserSocket"
 * import * as Duration from "effect/Duration"
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 * import * as Stream from "effect/Stream"
 *
 * const network = WebSocketNetwork.layer({
 *   peer: PeerId.make("tab-7f3a"),
 *   url: "wss://example.com/intersession",
 *   server: PeerId.make("server"),
 *   // A token from the page's own backend, asked for again on every dial (tokens expire).
 *   credential: Effect.tryPromise(() => fetch("/intersession/token").then((response) => response.text()))
 * }).pipe(Layer.provide(BrowserSocket.layerWebSocketConstructor))
 *
 * // The engine of the tab; give it a `Backend` too (IndexedDB, in a browser).
 * export const engine = ILM.layer().pipe(Layer.provideMerge(Delivery.layerInbox()), Layer.provideMerge(network))
 *
 * // What the page shows while the engine runs.
 * export const showStatus = Effect.flatMap(WebSocketNetwork.ConnectionStatus, (status) =>
 *   Stream.runForEach(status.changes, (current) =>
 *     Effect.log(
 *       WebSocketNetwork.Status.$match(current, {
 *         Connecting: ({ attempt }) => `connecting (attempt ${attempt})`,
 *         Connected: ({ server }) => `connected to ${server}`,
 *         Disconnected: ({ reason, retryIn }) => `${reason}, retrying in ${Duration.format(retryIn)}`,
 *         Refused: ({ detail, reason }) => `refused (${reason}: ${detail})`
 *       })
 *     )))
 * ```
 *
 * @since 0.3.0
 * @category layers
 */
export const layer = <E = never, R = never>(
  options: Options<E, R>
): Layer.Layer<Network | ConnectionStatus, WebSocketNetworkError, Socket.WebSocketConstructor | R> =>
  Layer.scopedContext(
    Effect.map(
      make(options),
      (network) => Context.make(Network, network).pipe(Context.add(ConnectionStatus, network.status))
    )
  )

/**
 * {@link layer} with the browser's own `WebSocket` (`@effect/platform-browser`'s
 * `BrowserSocket.layerWebSocketConstructor`).
 *
 * @since 0.3.0
 * @category layers
 */
export const layerBrowser = <E = never, R = never>(
  options: Options<E, R>
): Layer.Layer<Network | ConnectionStatus, WebSocketNetworkError, R> =>
  Layer.provide(layer(options), BrowserSocket.layerWebSocketConstructor)
