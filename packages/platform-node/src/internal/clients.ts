/**
 * Clients of a network: peers that dial in with a credential instead of the pre-shared key (`clientHandshake.ts`),
 * and the limits each one is held to, so that one client cannot take more than its share of the peer:
 *
 * - `maxConnections`: connections of one client at once, from its `Welcome` to their end (a reload opens a new one
 *   before the old one is seen to close; the newest replaces the older in use);
 * - `maxPendingBytes`: bytes of `Data` frames that arrived from the client and that the engine has not taken yet; a
 *   connection that goes past it is closed (`Overloaded`), and the client sends again once reconnected;
 * - `maxStreams`: lanes the client may send on, counted since the network started; a frame on a lane past the limit
 *   is dropped unseen (logged once per lane), so what the client sent on it stays pending on its side.
 *
 * @internal
 */
import type { PeerId } from "@intersession/core/PeerId"
import type * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type { ClientPolicy, ClientRequest } from "./clientHandshake.js"

/**
 * How a network takes clients, as users write it.
 *
 * @internal
 */
export interface ClientOptions {
  /**
   * Checks a client's credential and succeeds with the peer id it is for, which must be the id the client claims.
   * Any failure (or defect) refuses the client, which is told only `Unauthorized`; the failure is logged here.
   */
  readonly verify: (request: ClientRequest) => Effect.Effect<PeerId, unknown>
  /** Connections of one client at once. 2 by default. */
  readonly maxConnections?: number | undefined
  /** Bytes from one client that the engine has not taken yet. 32 MiB by default (the default window is 16 MiB). */
  readonly maxPendingBytes?: number | undefined
  /** Lanes one client may send on. 64 by default. */
  readonly maxStreams?: number | undefined
}

/** @internal */
export const defaults = { maxConnections: 2, maxPendingBytes: 32 * 1024 * 1024, maxStreams: 64 } as const

/** @internal */
export interface ClientSettings {
  readonly verify: ClientOptions["verify"]
  readonly maxConnections: number
  readonly maxPendingBytes: number
  readonly maxStreams: number
}

/**
 * The options with their defaults, or what is wrong with them.
 *
 * @internal
 */
export const settings = (options: ClientOptions): Either.Either<ClientSettings, ReadonlyArray<string>> => {
  const problems: Array<string> = []
  const positive = (name: "maxConnections" | "maxPendingBytes" | "maxStreams") => {
    const value = options[name] ?? defaults[name]
    if (!Number.isSafeInteger(value) || value < 1) {
      problems.push(`clients.${name} must be a whole number ≥ 1, not ${value}`)
    }
    return value
  }
  if (typeof options.verify !== "function") problems.push("clients.verify must be a function")
  const result = {
    verify: options.verify,
    maxConnections: positive("maxConnections"),
    maxPendingBytes: positive("maxPendingBytes"),
    maxStreams: positive("maxStreams")
  }
  return problems.length > 0 ? Either.left(problems) : Either.right(result)
}

/**
 * The clients of one network and what each holds. Every step is synchronous.
 *
 * @internal
 */
export interface Clients {
  readonly policy: ClientPolicy
  /** Whether `peer` came in as a client (and is held to the limits). */
  readonly isClient: (peer: PeerId) => boolean
  /** Counts bytes of `Data` that arrived from `peer`, unless they would take it past `maxPendingBytes` (`false`). */
  readonly arrived: (peer: PeerId, bytes: number) => boolean
  /** The engine took bytes of `Data` from `peer`. */
  readonly taken: (peer: PeerId, bytes: number) => void
  /**
   * Whether a frame of `peer` on `lane` may go on: a lane it sent on before, or a new one within `maxStreams`.
   * `"new-refused"` the first time a lane is refused, to log it once.
   */
  readonly admitLane: (peer: PeerId, lane: string) => "yes" | "refused" | "new-refused"
}

/** @internal */
export const make = (settings: ClientSettings, reserved: (peer: PeerId) => boolean): Clients => {
  const connections = new Map<PeerId, number>()
  const pending = new Map<PeerId, number>()
  const lanes = new Map<PeerId, Set<string>>()
  const refusedLanes = new Map<PeerId, Set<string>>()
  const known = new Set<PeerId>()
  return {
    policy: {
      verify: settings.verify,
      reserved,
      reserve: (peer) => {
        const count = connections.get(peer) ?? 0
        if (count >= settings.maxConnections) return undefined
        connections.set(peer, count + 1)
        known.add(peer)
        let released = false
        return () => {
          if (released) return
          released = true
          const left = (connections.get(peer) ?? 1) - 1
          if (left === 0) connections.delete(peer)
          else connections.set(peer, left)
        }
      }
    },
    isClient: (peer) => known.has(peer),
    arrived: (peer, bytes) => {
      const total = (pending.get(peer) ?? 0) + bytes
      if (total > settings.maxPendingBytes) return false
      pending.set(peer, total)
      return true
    },
    taken: (peer, bytes) => {
      const left = (pending.get(peer) ?? 0) - bytes
      if (left <= 0) pending.delete(peer)
      else pending.set(peer, left)
    },
    admitLane: (peer, lane) => {
      let open = lanes.get(peer)
      if (open === undefined) lanes.set(peer, open = new Set())
      if (open.has(lane)) return "yes"
      if (open.size < settings.maxStreams) {
        open.add(lane)
        return "yes"
      }
      let refused = refusedLanes.get(peer)
      if (refused === undefined) refusedLanes.set(peer, refused = new Set())
      if (refused.has(lane)) return "refused"
      refused.add(lane)
      return "new-refused"
    }
  }
}
