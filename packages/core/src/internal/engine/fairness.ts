/**
 * Fairness with the event loop. Effect's default scheduler runs fibers on microtasks, so fibers that keep each
 * other busy with synchronous work (encoding, better-sqlite3, an application's send loop) never let the event
 * loop turn: sockets, timers and the handshake would wait until the work ends. Every engine fiber calls
 * {@link yieldToEventLoop} at its batch boundaries; when the event loop has not turned for a few milliseconds, the
 * fiber waits for one turn (a macrotask) before it goes on.
 *
 * Under any other scheduler — a test's controlled scheduler that replays a run step by step — it does nothing, so
 * such runs stay deterministic.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Scheduler from "effect/Scheduler"

/** The longest the engine keeps the event loop from turning, in milliseconds. */
export const budgetMillis = 4

/** Runs `callback` on the next turn of the event loop (`setImmediate` where there is one); returns its canceller. */
const nextTurn = (callback: () => void): () => void => {
  if (typeof setImmediate === "function") {
    const handle = setImmediate(callback)
    return () => clearImmediate(handle)
  }
  const handle = setTimeout(callback, 0)
  return () => clearTimeout(handle)
}

/** When the event loop last turned, as far as a watch scheduled on it has seen. */
let lastTurn = performance.now()
let watching = false
const watch = () => {
  watching = false
  lastTurn = performance.now()
}

const waitForTurn = Effect.async<void>((resume) => {
  const cancel = nextTurn(() => resume(Effect.void))
  return Effect.sync(cancel)
})

/** Waits for one turn of the event loop if it has not turned for {@link budgetMillis}; else goes on at once. */
export const yieldToEventLoop: Effect.Effect<void> = Effect.withFiberRuntime((fiber) => {
  if (fiber.currentScheduler !== Scheduler.defaultScheduler) return Effect.void
  if (!watching) {
    watching = true
    nextTurn(watch)
  }
  return performance.now() - lastTurn < budgetMillis ? Effect.void : waitForTurn
})
