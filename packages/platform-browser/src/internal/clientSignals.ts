/**
 * What the browser tells a dialler about the network: `online` and a tab becoming visible again are worth a dial at
 * once (the back-off was sized for a path that is now back, or a tab the browser throttled); `offline` means the
 * connection in use is dead. `navigator.onLine` can lie (it is `true` behind a dead Wi-Fi), so these only cut waits
 * short or close what is dead anyway; the back-off and the idle timeout still decide.
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Scope from "effect/Scope"

/** @internal */
export interface ClientSignals {
  /** How many wake events (`online`, visible again) so far. */
  readonly wakes: () => number
  /** Succeeds at the first wake event after `seen` of them: at once if one happened since. */
  readonly wake: (seen: number) => Effect.Effect<void>
  /** How many `offline` events so far. */
  readonly offlines: () => number
  /** Succeeds at the first `offline` event after `seen` of them: at once if one happened since. */
  readonly offline: (seen: number) => Effect.Effect<void>
}

/**
 * Where the events come from: the global scope for `online` and `offline`, the document for `visibilitychange`.
 *
 * @internal
 */
export interface Targets {
  readonly global: EventTarget | undefined
  readonly document: EventTarget | undefined
  readonly visible: () => boolean
}

/**
 * The browser's targets, where it has them (a worker has no document; Node has neither).
 *
 * @internal
 */
export const browserTargets = (): Targets => {
  const document = typeof globalThis.document === "object" && typeof globalThis.document.addEventListener === "function"
    ? globalThis.document
    : undefined
  return {
    global: typeof globalThis.addEventListener === "function" ? globalThis : undefined,
    document,
    visible: () => document?.visibilityState === "visible"
  }
}

/**
 * Listens to `targets` until the scope closes.
 *
 * @internal
 */
export const make = (targets: Targets): Effect.Effect<ClientSignals, never, Scope.Scope> =>
  Effect.gen(function*() {
    const fiberId = yield* Effect.fiberId
    /** Counts an event; waiters compare counts, so an event between two waits is not missed. */
    const beacon = () => {
      let count = 0
      // Each event completes the current deferred and puts a fresh one in its place for the next waiters.
      let next = Deferred.unsafeMake<void>(fiberId)
      return {
        count: () => count,
        fire: () => {
          count++
          const done = next
          next = Deferred.unsafeMake<void>(fiberId)
          Deferred.unsafeDone(done, Exit.void)
        },
        after: (seen: number) => Effect.suspend(() => count !== seen ? Effect.void : Deferred.await(next))
      }
    }
    const wake = beacon()
    const offline = beacon()
    const onVisibility = () => {
      if (targets.visible()) wake.fire()
    }
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        targets.global?.addEventListener("online", wake.fire)
        targets.global?.addEventListener("offline", offline.fire)
        targets.document?.addEventListener("visibilitychange", onVisibility)
      }),
      () =>
        Effect.sync(() => {
          targets.global?.removeEventListener("online", wake.fire)
          targets.global?.removeEventListener("offline", offline.fire)
          targets.document?.removeEventListener("visibilitychange", onVisibility)
        })
    )
    return {
      wakes: wake.count,
      wake: wake.after,
      offlines: offline.count,
      offline: offline.after
    } satisfies ClientSignals
  })
