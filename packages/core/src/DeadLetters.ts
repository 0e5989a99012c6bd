/**
 * Dead letters: the messages a receiver gave up delivering (see `Delivery.DeliveryPolicy`), kept in its store
 * until the application replays or purges them. `ILM.deadLetters` works on them while the engine runs; the
 * functions here work on a `Backend` directly, for tools that open a stopped store (`intersession dead-letters`).
 *
 * @since 0.3.0
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import type { Backend, BackendError, DeadLetter, DeadLetterQuery } from "./Backend.js"
import { isLane } from "./Lane.js"
import type { PeerId } from "./PeerId.js"

/**
 * Which dead letters to work on: those from `peer`, of `lane`, with one of `ids`; every field given must match, and
 * none selects them all.
 *
 * @since 0.3.0
 * @category models
 */
export interface Filter {
  readonly peer?: PeerId | undefined
  readonly lane?: string | undefined
  readonly ids?: ReadonlyArray<number> | undefined
}

/**
 * What a replay did: `replayed` dead letters were delivered and left the store; each of `failed` was not (its
 * `Delivery` failed again) and stays, with the new error.
 *
 * @since 0.3.0
 * @category models
 */
export interface ReplayResult {
  readonly replayed: number
  readonly failed: ReadonlyArray<{ readonly id: number; readonly error: string }>
}

/**
 * A dead-letter filter is not valid: `lane` is not a lane name, or an id is not a positive integer.
 *
 * @since 0.3.0
 * @category errors
 */
export class InvalidFilterError extends Data.TaggedError("InvalidFilterError")<{
  readonly detail: string
}> {
  override get message(): string {
    return `Invalid dead-letter filter: ${this.detail}`
  }
}

/** How many dead letters one store call reads while paging. */
const page = 256

/**
 * Checks a filter and turns it into the store's query (without its paging fields).
 *
 * @since 0.3.0
 * @category constructors
 */
export const query = (
  filter: Filter = {}
): Effect.Effect<Omit<DeadLetterQuery, "limit" | "afterId">, InvalidFilterError> => {
  const { ids, lane, peer } = filter
  if (lane !== undefined && !isLane(lane)) {
    return Effect.fail(new InvalidFilterError({ detail: `${JSON.stringify(String(lane).slice(0, 40))} is not a lane` }))
  }
  const badId = ids?.find((id) => !Number.isSafeInteger(id) || id < 1)
  if (badId !== undefined) {
    return Effect.fail(new InvalidFilterError({ detail: `${badId} is not a dead-letter id (a positive integer)` }))
  }
  return Effect.succeed({ peer, lane, ids })
}

/**
 * Runs `f` on each page of the dead letters a store query selects, lowest id first, and adds up what it returns.
 *
 * @since 0.3.0
 * @category combinators
 */
export const forEachPage = <E, R>(
  backend: Backend["Type"],
  selection: Omit<DeadLetterQuery, "limit" | "afterId">,
  f: (letters: ReadonlyArray<DeadLetter>) => Effect.Effect<number, E, R>
): Effect.Effect<number, BackendError | E, R> =>
  Effect.iterate({ afterId: 0, total: 0, done: false }, {
    while: (state) => !state.done,
    body: (state) =>
      Effect.flatMap(backend.deadLetters({ ...selection, afterId: state.afterId, limit: page }), (letters) =>
        letters.length === 0
          ? Effect.succeed({ ...state, done: true })
          : Effect.map(f(letters), (count) => ({
            afterId: letters[letters.length - 1]!.id,
            total: state.total + count,
            done: letters.length < page
          })))
  }).pipe(Effect.map((state) =>
    state.total
  ))

/**
 * The dead letters a filter selects, lowest id first, at most `limit` (1,000 by default).
 *
 * @since 0.3.0
 * @category getters
 */
export const list = (
  backend: Backend["Type"],
  filter: Filter & { readonly limit?: number | undefined } = {}
): Effect.Effect<ReadonlyArray<DeadLetter>, InvalidFilterError | BackendError> => {
  const limit = filter.limit ?? 1000
  if (!Number.isSafeInteger(limit) || limit < 1) {
    return Effect.fail(new InvalidFilterError({ detail: `limit must be a positive integer, got ${limit}` }))
  }
  return Effect.flatMap(query(filter), (selection) => backend.deadLetters({ ...selection, limit }))
}

/** Runs a store operation on the ids of the dead letters a filter selects, a page at a time, and adds up its counts. */
const byIds = (
  backend: Backend["Type"],
  filter: Filter,
  operation: (ids: ReadonlyArray<number>) => Effect.Effect<number, BackendError>
) =>
  Effect.flatMap(
    query(filter),
    (selection) => forEachPage(backend, selection, (letters) => operation(letters.map((letter) => letter.id)))
  )

/**
 * Deletes the dead letters a filter selects and returns how many it deleted.
 *
 * @since 0.3.0
 * @category combinators
 */
export const purge = (
  backend: Backend["Type"],
  filter: Filter = {}
): Effect.Effect<number, InvalidFilterError | BackendError> => byIds(backend, filter, backend.removeDeadLetters)

/**
 * Marks the dead letters a filter selects to be delivered again when an engine next starts on the store, and
 * returns how many it marked. This is how a stopped store's dead letters are replayed; a running engine replays at
 * once with `ILM.deadLetters.replay`.
 *
 * @since 0.3.0
 * @category combinators
 */
export const requestReplay = (
  backend: Backend["Type"],
  filter: Filter = {}
): Effect.Effect<number, InvalidFilterError | BackendError> =>
  byIds(backend, filter, (ids) => backend.requestReplay(ids, true))
