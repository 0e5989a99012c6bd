/**
 * The outbox's room per destination peer: how many messages are stored and unacknowledged or being stored, the
 * count `maxPendingPerPeer` bounds. It is plain state, checked and updated on the sender's own fiber, so that a
 * `send` costs no transaction to reserve its room; only a sender that has to wait for room waits in STM, on a
 * version the outbox bumps whenever room is freed while someone waits.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as STM from "effect/STM"
import * as TRef from "effect/TRef"
import type { PeerId } from "../../PeerId.js"

export type Refusal = "full" | "closed"

export interface Outbox {
  /** Reserves room for `count` messages to `peer` if there is some now; `"wait"` when the caller may wait for it. */
  readonly tryReserve: (peer: PeerId, count: number) => Refusal | "reserved" | "wait"
  /** Reserves room for `count` messages to `peer`: waits for it (`wait`) or refuses at once (`fail`). */
  readonly reserve: (peer: PeerId, count: number) => Effect.Effect<void, Refusal>
  /** Counts messages the store held at the engine's start, whatever the bound. */
  readonly restore: (peer: PeerId, count: number) => void
  /** Frees room: messages acknowledged, or a reservation that stored nothing. */
  readonly release: (peer: PeerId, count: number) => Effect.Effect<void>
  /** Refuses every reservation from now on, and wakes those waiting. */
  readonly close: Effect.Effect<void>
  /** Messages reserved over all peers: stored and unacknowledged, or being stored. */
  readonly total: () => number
}

export const make = (options: { readonly max: number; readonly wait: boolean }) =>
  Effect.map(TRef.make(0), (version): Outbox => {
    const reserved = new Map<PeerId, number>()
    let total = 0
    let waiting = 0
    let closed = false

    const tryReserve = (peer: PeerId, count: number): Refusal | "reserved" | "wait" => {
      if (closed) return "closed"
      const current = reserved.get(peer) ?? 0
      if (current + count <= options.max) {
        reserved.set(peer, current + count)
        total += count
        return "reserved"
      }
      // A call larger than the whole outbox could never fit, however long it waited.
      return options.wait && count <= options.max ? "wait" : "full"
    }

    const changed = (seen: number) => STM.flatMap(TRef.get(version), (now) => STM.check(() => now !== seen))

    const reserve = (peer: PeerId, count: number): Effect.Effect<void, Refusal> =>
      Effect.suspend(() => {
        const outcome = tryReserve(peer, count)
        if (outcome === "reserved") return Effect.void
        if (outcome !== "wait") return Effect.fail(outcome)
        return Effect.flatMap(TRef.get(version), (seen) => {
          // Room may have been freed since the check: look again before waiting for the next change.
          const again = tryReserve(peer, count)
          if (again === "reserved") return Effect.void
          if (again !== "wait") return Effect.fail(again)
          waiting++
          return Effect.zipRight(
            Effect.ensuring(changed(seen), Effect.sync(() => waiting--)),
            reserve(peer, count)
          )
        })
      })

    const wake = Effect.suspend(() => waiting > 0 ? TRef.update(version, (n) => n + 1) : Effect.void)

    const release = (peer: PeerId, count: number) =>
      Effect.suspend(() => {
        const current = reserved.get(peer) ?? 0
        const next = Math.max(0, current - count)
        if (next === 0) reserved.delete(peer)
        else reserved.set(peer, next)
        total -= current - next
        return wake
      })

    const close = Effect.suspend(() => {
      closed = true
      return wake
    })

    const restore = (peer: PeerId, count: number) => {
      reserved.set(peer, (reserved.get(peer) ?? 0) + count)
      total += count
    }

    return { tryReserve, reserve, release, restore, close, total: () => total }
  })
