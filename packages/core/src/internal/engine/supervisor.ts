/**
 * Supervision: the engine's fibers live and die together. If any of them ends, fails, dies or is interrupted
 * while the engine runs, the engine closes at once with that fiber's name and cause: every API call and every
 * subscriber fails with `EngineClosedError`, and nothing is left half-alive. Closing the scope closes the engine
 * the ordinary way: subscribers see their streams end, callers get `EngineClosedError` without a reason.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import * as TRef from "effect/TRef"
import { EngineClosedError } from "../../IlmError.js"
import type { Env } from "./env.js"

/** `: <message>` of a typed failure (a lost store, say), so the engine's error says why; nothing for a defect. */
const failureMessage = (cause: Cause.Cause<unknown>): string => {
  const failure = Cause.failureOption(cause)
  return failure._tag === "Some" && failure.value instanceof Error ? `: ${failure.value.message}` : ""
}

export interface Supervisor {
  /** Runs an effect as one of the engine's fibers; its failure, like its end, stops the engine. */
  readonly fork: (name: string, effect: Effect.Effect<unknown, unknown>) => Effect.Effect<void>
  /** Completes when the engine stops: succeeds when its scope closed, fails with why it stopped otherwise. */
  readonly closed: Deferred.Deferred<void, EngineClosedError>
  /** The error callers get once the engine has stopped. */
  readonly closedError: Effect.Effect<EngineClosedError>
}

/**
 * `stop` is what closing does besides failing the `closed` signal: refusing new work and failing what waits. It
 * runs once, whichever way the engine closes.
 */
export const make = (env: Env, stop: (error: EngineClosedError) => Effect.Effect<void>) =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const closed = yield* Deferred.make<void, EngineClosedError>()
    const fibers = yield* FiberSet.make<unknown, unknown>()
    let error: EngineClosedError | undefined
    let closing = false

    const shutDown = (next: EngineClosedError, signal: Effect.Effect<boolean>) =>
      Effect.suspend(() => {
        if (error !== undefined) return Effect.void
        error = next
        return Effect.zipRight(Effect.zipRight(TRef.set(env.state.closed, true), stop(next)), signal)
      })

    // Registered after the fiber sets of the engine were made, so it runs before they interrupt their fibers.
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closing = true
        return shutDown(new EngineClosedError({ peer: env.self }), Deferred.succeed(closed, undefined))
      })
    )

    const failed = (name: string, exit: Exit.Exit<unknown, unknown>) =>
      Effect.suspend(() => {
        if (closing || error !== undefined) return Effect.void
        const reason = Exit.isSuccess(exit)
          ? `its ${name} ended`
          : Cause.isInterruptedOnly(exit.cause)
          ? `its ${name} was interrupted`
          : `its ${name} failed${failureMessage(exit.cause)}`
        const next = new EngineClosedError({
          peer: env.self,
          reason,
          ...(Exit.isFailure(exit) ? { cause: exit.cause } : {})
        })
        return Effect.zipRight(
          Exit.isFailure(exit)
            ? Effect.logError(`The engine stopped: ${reason}`, exit.cause)
            : Effect.logError(`The engine stopped: ${reason}`),
          // The other fibers are interrupted from outside the one that ended, in the engine's scope.
          Effect.forkIn(Effect.zipRight(shutDown(next, Deferred.fail(closed, next)), FiberSet.clear(fibers)), scope)
        )
      })

    const fork = (name: string, effect: Effect.Effect<unknown, unknown>) =>
      FiberSet.run(
        fibers,
        effect.pipe(
          Effect.onExit((exit) => failed(name, exit)),
          Effect.annotateLogs({ peer: env.self, fiber: name })
        )
      ).pipe(Effect.asVoid)

    return {
      fork,
      closed,
      closedError: Effect.sync(() => error ?? new EngineClosedError({ peer: env.self }))
    } satisfies Supervisor
  })
