/**
 * The connections of one network, at most one per peer, and the rule that keeps exactly one connection per pair of
 * peers when both dial at once.
 *
 * The peer with the lower id decides for the pair, on every connection whichever side dialled it, and the other
 * side only uses a connection once told to keep it (see `handshake.ts`). The lower peer keeps a connection unless:
 *
 * - the other side dialled it while the lower peer is dialling the other side itself: its own dial wins, so two
 *   simultaneous dials end with the one the lower peer made; or
 * - the lower peer already uses a connection with the same instance of the other peer, and the other side did not
 *   name that connection as its last one: it dialled before it learned of it, and will learn of it now.
 *
 * Otherwise the new connection replaces the old one: the other side dialled because it lost the old one (it says so by
 * naming it, or it restarted and has a new instance), so the old one is dead or about to be.
 *
 * Every check and update runs in one synchronous step, so no other fiber sees the registry half-updated.
 *
 * @internal
 */
import type { PeerId } from "@intersession/core/PeerId"
import * as Effect from "effect/Effect"
import * as HashSet from "effect/HashSet"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import { ConnectionError } from "./netLink.js"

/** @internal */
export interface Connection {
  readonly peer: PeerId
  /** The same on both ends of the connection. */
  readonly id: Uint8Array
  /** This side dialled it. */
  readonly dialled: boolean
  readonly remoteInstance: Uint8Array
  /** The other end's address as this side sees it, for logs. */
  readonly remote: string
  /** Writes the buffers in order, once the connection is in use. */
  readonly write: (buffers: ReadonlyArray<Uint8Array>) => Effect.Effect<void, ConnectionError>
  /** Ends the connection with `reason`. */
  readonly close: (reason: ConnectionError) => Effect.Effect<void>
}

/** @internal */
export interface Registry {
  readonly connected: SubscriptionRef.SubscriptionRef<HashSet.HashSet<PeerId>>
  readonly get: (peer: PeerId) => Connection | undefined
  readonly all: () => ReadonlyArray<Connection>
  /** The id of the last connection in use with `peer` during this run. */
  readonly lastConnection: (peer: PeerId) => Uint8Array | undefined
  /** Marks a dial to `peer` as under way; `false` (and nothing marked) when a connection or dial exists already. */
  readonly startDialling: (peer: PeerId) => Effect.Effect<boolean>
  readonly stopDialling: (peer: PeerId) => Effect.Effect<void>
  /** The lower peer's decision on an authenticated connection; a kept connection is in use from this step on. */
  readonly decide: (connection: Connection, remoteLast: Uint8Array | undefined) => Effect.Effect<boolean>
  /** Puts a connection the lower peer decided to keep in use, in place of any other one with that peer. */
  readonly install: (connection: Connection) => Effect.Effect<void>
  /** Forgets a connection that ended; a connection that was already replaced changes nothing. */
  readonly remove: (connection: Connection) => Effect.Effect<void>
  /** Waits until no connection with `peer` is in use. */
  readonly awaitDisconnected: (peer: PeerId) => Effect.Effect<void>
}

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

const replaced = new ConnectionError({ reason: "Replaced", detail: "a newer connection to the same peer is in use" })

/** @internal */
export const make: Effect.Effect<Registry> = Effect.gen(function*() {
  const connected = yield* SubscriptionRef.make(HashSet.empty<PeerId>())
  const active = new Map<PeerId, Connection>()
  const last = new Map<PeerId, Uint8Array>()
  const dialling = new Set<PeerId>()

  /** Sets `connected` from `active` as it is when the update runs, so the last update always wins. */
  const publish = SubscriptionRef.update(connected, (old) => {
    const now = HashSet.fromIterable(active.keys())
    return HashSet.size(old) === HashSet.size(now) && HashSet.isSubset(old, now) ? old : now
  })

  /** Puts `connection` in use and returns what to do next; synchronous, so it is one step with its checks. */
  const installNow = (connection: Connection): Effect.Effect<void> => {
    const old = active.get(connection.peer)
    active.set(connection.peer, connection)
    last.set(connection.peer, connection.id)
    if (connection.dialled) dialling.delete(connection.peer)
    if (old === undefined) return publish
    // The peer leaves `connected` for a moment, so the engine greets it again on the new connection.
    return Effect.zipRight(
      old.close(replaced),
      Effect.zipRight(SubscriptionRef.update(connected, HashSet.remove(connection.peer)), publish)
    )
  }

  return {
    connected,
    get: (peer) => active.get(peer),
    all: () => Array.from(active.values()),
    lastConnection: (peer) => last.get(peer),
    startDialling: (peer) =>
      Effect.sync(() => {
        if (active.has(peer) || dialling.has(peer)) return false
        dialling.add(peer)
        return true
      }),
    stopDialling: (peer) => Effect.sync(() => dialling.delete(peer)),
    decide: (connection, remoteLast) =>
      Effect.suspend(() => {
        if (!connection.dialled) {
          if (dialling.has(connection.peer)) return Effect.succeed(false)
          const current = active.get(connection.peer)
          if (
            current !== undefined && sameBytes(current.remoteInstance, connection.remoteInstance) &&
            (remoteLast === undefined || !sameBytes(remoteLast, current.id))
          ) {
            return Effect.succeed(false)
          }
        }
        return Effect.as(installNow(connection), true)
      }),
    install: (connection) => Effect.suspend(() => installNow(connection)),
    remove: (connection) =>
      Effect.suspend(() => {
        if (active.get(connection.peer) !== connection) return Effect.void
        active.delete(connection.peer)
        return publish
      }),
    awaitDisconnected: (peer) =>
      Effect.asVoid(Stream.runHead(Stream.filter(connected.changes, (peers) => !HashSet.has(peers, peer))))
  } satisfies Registry
})
