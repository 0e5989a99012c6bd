/**
 * `intersession dead-letters list|replay|purge`: the dead letters of a stopped store, through its backend.
 *
 * The store is opened with its normal layer (`SqliteBackend`, `PostgresBackend`), which takes ownership of it: while
 * an engine runs on it, that fails with `StoreLockedError`, reported as `StoreAccessError` (`InUse`). Before that, a
 * read-only look (see `Inspect.checkStore`) makes sure the store exists and is one: a missing SQLite file is never
 * created, nor a database that is not a store given the store's tables.
 *
 * @internal
 */
import type { Backend } from "@intersession/core/Backend"
import * as BackendTag from "@intersession/core/Backend"
import type { DeadLetter } from "@intersession/core/Backend"
import * as DeadLetters from "@intersession/core/DeadLetters"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as PostgresBackend from "../PostgresBackend.js"
import * as SqliteBackend from "../SqliteBackend.js"
import * as Inspect from "./inspect.js"

/** The backend layer of a store, for its own scope. */
const layerOf = (store: Inspect.Target) =>
  store._tag === "Sqlite"
    ? Layer.map(
      SqliteBackend.layer({ filename: store.filename, tablePrefix: store.tablePrefix }),
      Context.pick(BackendTag.Backend)
    )
    : Layer.map(
      PostgresBackend.layer({
        url: store.url,
        tablePrefix: store.tablePrefix,
        maxConnections: 2,
        applicationName: "intersession dead-letters"
      }),
      Context.pick(BackendTag.Backend)
    )

/**
 * Runs `f` on the backend of a stopped store, which it owns meanwhile.
 *
 * @internal
 */
export const withStore = <A, E, R>(
  store: Inspect.Target,
  f: (backend: Backend["Type"]) => Effect.Effect<A, E, R>
) =>
  Effect.scoped(Effect.gen(function*() {
    const name = Inspect.storeName(store)
    yield* Inspect.checkStore(store)
    const context = yield* Layer.build(layerOf(store)).pipe(
      Effect.catchTag("StoreLockedError", () =>
        Effect.fail(
          new Inspect.StoreAccessError({
            store: name,
            reason: "InUse",
            detail: "dead-letters works on a stopped store; stop the engine first (a running engine lists, replays " +
              "and purges its dead letters with ILM.deadLetters)"
          })
        ))
    )
    return yield* f(Context.get(context, BackendTag.Backend))
  }))

/**
 * The dead letters a filter selects, lowest id first, at most `limit`.
 *
 * @internal
 */
export const list = (store: Inspect.Target, filter: DeadLetters.Filter & { readonly limit?: number | undefined }) =>
  withStore(store, (backend) => DeadLetters.list(backend, filter))

/**
 * Marks the dead letters a filter selects for replay at the next start of an engine on the store; how many.
 *
 * @internal
 */
export const requestReplay = (store: Inspect.Target, filter: DeadLetters.Filter) =>
  withStore(store, (backend) => DeadLetters.requestReplay(backend, filter))

/**
 * Deletes the dead letters a filter selects; how many.
 *
 * @internal
 */
export const purge = (store: Inspect.Target, filter: DeadLetters.Filter) =>
  withStore(store, (backend) => DeadLetters.purge(backend, filter))

/** An error message on one line, cut to `width` characters. */
const oneLine = (text: string, width: number) => {
  const line = text.replace(/\s+/g, " ").trim()
  return line.length <= width ? line : `${line.slice(0, width - 1)}…`
}

/**
 * Dead letters as a table: id, sender, lane, seq, attempts, when, payload size, whether marked for replay, and the
 * last error (on one line, cut to 80 characters).
 *
 * @internal
 */
export const formatList = (letters: ReadonlyArray<DeadLetter>): string =>
  letters.length === 0 ? "No dead letters" : Inspect.table(
    ["id", "peer", "lane", "seq", "attempts", "dead-lettered at", "payload", "replay", "error"],
    letters.map((letter) => [
      letter.id,
      letter.peer,
      letter.lane,
      letter.seq,
      letter.attempts,
      new Date(letter.deadLetteredAt).toISOString(),
      Inspect.formatBytes(letter.payload.byteLength),
      letter.replayRequested ? "marked" : "",
      oneLine(letter.error, 80)
    ]),
    new Set([0, 3, 4, 6])
  ).join("\n")

/**
 * Dead letters as JSON, for machines: their fields, the payload's size (`payloadBytes`) and the payload in base64.
 *
 * @internal
 */
export const formatListJson = (letters: ReadonlyArray<DeadLetter>): string =>
  JSON.stringify(
    letters.map((letter) => ({
      id: letter.id,
      peer: letter.peer,
      lane: letter.lane,
      incarnation: letter.incarnation,
      seq: letter.seq,
      attempts: letter.attempts,
      deadLetteredAt: letter.deadLetteredAt,
      replayRequested: letter.replayRequested,
      error: letter.error,
      payloadBytes: letter.payload.byteLength,
      payload: Buffer.from(letter.payload.buffer, letter.payload.byteOffset, letter.payload.byteLength).toString(
        "base64"
      )
    })),
    null,
    2
  )
