/**
 * The engine's side of dead letters: `ILM.deadLetters`, and the replay at start of the dead letters marked while the
 * engine was stopped.
 *
 * A replay hands a dead letter to the `Delivery` again and removes it from the store in the same transaction, so a
 * transactional store never keeps one that was delivered. On a store without transactions, a crash between the two
 * leaves it stored, and a later replay delivers it again.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type { BackendError, DeadLetter, DeadLetterQuery } from "../../Backend.js"
import * as DeadLetters from "../../DeadLetters.js"
import type { Env } from "./env.js"
import { message } from "./messages.js"

const describe = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  return error instanceof Error ? error.message : String(error)
}

/** Replays one dead letter; the error of a delivery that failed again. */
const replayOne = (env: Env, letter: DeadLetter): Effect.Effect<string | undefined> => {
  const { backend } = env
  const delivered = message({
    source: letter.peer,
    destination: env.self,
    lane: letter.lane,
    incarnation: letter.incarnation,
    seq: letter.seq,
    payload: letter.payload
  })
  return backend.withTransaction(
    Effect.zipRight(env.delivery.deliver(delivered), backend.removeDeadLetters([letter.id]))
  ).pipe(
    Effect.exit,
    Effect.flatMap((exit) => {
      if (Exit.isSuccess(exit)) return Effect.succeed(undefined)
      const error = describe(exit.cause)
      // A failed replay is not tried again at every start: the application replays it when it is ready.
      return letter.replayRequested
        ? Effect.as(Effect.ignore(backend.requestReplay([letter.id], false)), error)
        : Effect.succeed(error)
    })
  )
}

/** Replays every dead letter a store query selects; what was replayed, and what failed again. */
const replaySelection = (
  env: Env,
  selection: Omit<DeadLetterQuery, "limit" | "afterId">
): Effect.Effect<DeadLetters.ReplayResult, BackendError> => {
  const failed: Array<{ id: number; error: string }> = []
  return DeadLetters.forEachPage(
    env.backend,
    selection,
    (letters) =>
      Effect.reduce(letters, 0, (replayed, letter) =>
        Effect.map(replayOne(env, letter), (error) => {
          if (error === undefined) return replayed + 1
          failed.push({ id: letter.id, error })
          return replayed
        }))
  ).pipe(Effect.map((replayed) => ({ replayed, failed })))
}

/** `ILM.deadLetters.replay`. */
export const replay = (
  env: Env,
  filter: DeadLetters.Filter = {}
): Effect.Effect<DeadLetters.ReplayResult, DeadLetters.InvalidFilterError | BackendError> =>
  Effect.flatMap(DeadLetters.query(filter), (selection) => replaySelection(env, selection))

/**
 * Replays the dead letters marked for replay (by `intersession dead-letters replay` on the stopped store), once, when
 * the engine starts; then waits for the engine to stop.
 */
export const replayMarked = (env: Env): Effect.Effect<never> =>
  replaySelection(env, { replayRequested: true }).pipe(
    Effect.tap(({ failed, replayed }) =>
      Effect.all([
        replayed > 0 ? Effect.logInfo(`Replayed ${replayed} dead letters marked for replay`) : Effect.void,
        Effect.forEach(
          failed,
          ({ error, id }) => Effect.logWarning(`Replay of dead letter ${id} failed; it stays a dead letter`, error)
        )
      ], { discard: true })
    ),
    Effect.catchAll((error) => Effect.logWarning("Could not replay the dead letters marked for replay", error)),
    Effect.zipRight(Effect.never)
  )
