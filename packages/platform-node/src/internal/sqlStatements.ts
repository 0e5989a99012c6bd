/**
 * The SQL store's statements: the texts of its operations, per dialect, and how a batch runs as statements of a few
 * row counts.
 *
 * @internal
 */
import type * as SqlConnection from "@effect/sql/SqlConnection"
import type { SqlError } from "@effect/sql/SqlError"
import type { DropReason } from "@intersession/core/Backend"
import * as Effect from "effect/Effect"
import { sqliteNowMillis, type Tables } from "./sqlSchema.js"

/** A row as a driver returns it, before the store checks it. @internal */
export type Row = { readonly [column: string]: unknown }

/**
 * An integer column of a row the store wrote, checked by hand on the hot paths: a number (SQLite), a decimal string
 * (PostgreSQL's `bigint`) or a `bigint` (SQLite with `SqlClient.SafeIntegers`), without a schema decode per row.
 *
 * @internal
 */
export const integerColumn = (value: unknown): number | undefined => {
  const number = typeof value === "number"
    ? value
    : typeof value === "bigint" || (typeof value === "string" && /^-?\d+$/.test(value))
    ? Number(value)
    : undefined
  return number !== undefined && Number.isSafeInteger(number) ? number : undefined
}

/** A row that is not what the store wrote: the operation fails with it, as with any other storage failure. @internal */
export const unexpectedRow = (table: string, row: Row) =>
  new Error(
    `unexpected row in ${table}: ${JSON.stringify(row, (_, value) => (typeof value === "bigint" ? `${value}` : value))}`
  )

/** Binds a payload as bytes without copying it; both drivers take a `Buffer` as a BLOB / `bytea`. @internal */
export const bytes = (payload: Uint8Array): Buffer =>
  Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)

/**
 * A driver's `Buffer` seen as a plain `Uint8Array` over the same memory, so `slice` copies as callers expect.
 *
 * @internal
 */
export const plainBytes = (payload: Uint8Array): Uint8Array =>
  payload.constructor === Uint8Array ? payload : new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength)

/** @internal */
export type Dialect = "sqlite" | "pg"

/**
 * Most rows one statement carries: 1,024 rows of at most 8 columns stay far below both drivers' parameter limits
 * (SQLite's 32,766 and PostgreSQL's 65,535).
 */
const maxRows = 1024

/**
 * The row counts of the statements that carry `total` rows, in order. A statement's text depends on its row count
 * and both drivers prepare (SQLite) or parse (PostgreSQL) each text anew, so the counts come from a small set: powers
 * of two up to `maxRows`, at most 11 texts per statement. Statements that accept a row twice (`padded`) carry the
 * rest in one statement of the next power of two, the last row repeated; the others split it, largest first.
 *
 * @internal
 */
export const rowCounts = (total: number, padded: boolean): Array<number> => {
  const counts: Array<number> = []
  let rest = total
  for (; rest >= maxRows; rest -= maxRows) counts.push(maxRows)
  if (padded && rest > 0) counts.push(rest === 1 ? 1 : 2 ** (32 - Math.clz32(rest - 1)))
  else {
    for (; rest > 0; rest -= counts[counts.length - 1]!) counts.push(2 ** (31 - Math.clz32(rest)))
  }
  return counts
}

/** How `executeChunks` makes statements of items. @internal */
export interface ChunkOptions<A> {
  /** Whether a statement may carry an item twice, so the last chunk is padded (see `rowCounts`). */
  readonly padded: boolean
  /** The statement of so many rows, or the few statements run in turn with the same parameters. */
  readonly text: (rows: number) => ReadonlyArray<string>
  /** Appends the parameters of one item (and its index). */
  readonly bind: (item: A, index: number, params: Array<unknown>) => void
}

/**
 * Runs the statements of each chunk of `items` (see `rowCounts`), in order, on `connection`, and gives back every
 * statement's rows, in order.
 *
 * @internal
 */
export const executeChunks = <A>(
  connection: SqlConnection.Connection,
  items: ReadonlyArray<A>,
  options: ChunkOptions<A>
): Effect.Effect<ReadonlyArray<Row>, SqlError> => {
  const statements: Array<readonly [text: string, params: ReadonlyArray<unknown>]> = []
  let offset = 0
  for (const count of rowCounts(items.length, options.padded)) {
    const params: Array<unknown> = []
    for (let i = 0; i < count; i++) {
      const index = Math.min(offset + i, items.length - 1)
      options.bind(items[index]!, index, params)
    }
    offset += count
    for (const text of options.text(count)) statements.push([text, params])
  }
  const rows: Array<Row> = []
  const from = (next: number): Effect.Effect<ReadonlyArray<Row>, SqlError> => {
    const statement = statements[next]
    if (statement === undefined) return Effect.succeed(rows)
    const result = connection.execute(statement[0], statement[1], undefined)
    // One statement, the usual case, gives its own rows.
    return statements.length === 1 ? result : Effect.flatMap(result, (result) => {
      for (const row of result) rows.push(row)
      return from(next + 1)
    })
  }
  return from(0)
}

/** How many statements `executeChunks` runs for `total` items. @internal */
export const statementCount = (total: number, padded: boolean, text: ChunkOptions<unknown>["text"]) =>
  rowCounts(total, padded).reduce((count, rows) => count + text(rows).length, 0)

/** Memoizes a statement's text per row count, so each count builds its text once and keeps one string for it. */
const perRowCount = (build: (rows: number) => ReadonlyArray<string>) => {
  const texts = new Map<number, ReadonlyArray<string>>()
  return (rows: number): ReadonlyArray<string> => {
    let text = texts.get(rows)
    if (text === undefined) {
      text = build(rows)
      texts.set(rows, text)
    }
    return text
  }
}

/**
 * The conditions of a dead-letter query, which make its text: its parameters are `peer`, `lane` and `afterId` where
 * it has them, in that order, then its `ids` ids (none when 0), then its limit.
 *
 * @internal
 */
export interface DeadLetterSelection {
  readonly peer: boolean
  readonly lane: boolean
  readonly afterId: boolean
  readonly replayRequested: boolean | undefined
  readonly ids: number
}

/**
 * The texts of the hot paths' statements, written with `?` placeholders (SQLite's) and numbered `$1, $2, …` for
 * PostgreSQL. Table names come from a validated prefix; they are quoted as `@effect/sql` quotes identifiers.
 *
 * @internal
 */
export const statementsOf = (dialect: Dialect, tables: Tables) => {
  const numbered = (text: string) => {
    if (dialect === "sqlite") return text
    let index = 0
    return text.replace(/\?/g, () => `$${++index}`)
  }
  /** `rows` rows of `columns`, each column a `?` (with a cast, for PostgreSQL) or a constant. */
  const values = (rows: number, columns: ReadonlyArray<string>) =>
    Array.from({ length: rows }, () => `(${columns.join(", ")})`).join(", ")
  const streams = `"${tables.streams}"`
  const messages = `"${tables.messages}"`
  const dropped = `"${tables.dropped}"`
  const received = `"${tables.received}"`
  const deadLetters = `"${tables.deadLetters}"`
  /** `rows` placeholders, for `id IN (…)`. */
  const list = (rows: number) => Array.from({ length: rows }, () => "?").join(", ")
  /**
   * Whether a dead letter is marked for replay, as an SQL condition on a constant: SQLite uses its partial index of
   * marked rows only when the query's text says it (see `4_dead_letters`).
   */
  const replayCondition = (requested: boolean) =>
    dialect === "pg"
      ? requested ? "replay_requested" : "NOT replay_requested"
      : `replay_requested = ${requested ? 1 : 0}`
  /** Per row count, the texts that mark (or unmark) the dead letters of so many ids and return each one's id. */
  const markForReplay = (requested: boolean) =>
    perRowCount((rows) => [
      numbered(`UPDATE ${deadLetters} SET replay_requested = ${dialect === "pg" ? requested : requested ? 1 : 0}
        WHERE id IN (${list(rows)}) RETURNING id`)
    ])
  const markForReplayTexts = { true: markForReplay(true), false: markForReplay(false) }
  const selectTexts = new Map<string, string>()
  /** Acknowledgements as a table, `acks (peer, lane, up_to)`; PostgreSQL needs the types of its parameters. */
  const acks = (rows: number) =>
    `WITH acks (peer, lane, up_to) AS (VALUES ${
      values(rows, dialect === "pg" ? ["?::text", "?::text", "?::bigint"] : ["?", "?", "?"])
    })`
  /** A reason as an SQL constant: one of two fixed words, never a value from outside. */
  const reasonText = (reason: DropReason) => reason === "expired" ? "'expired'" : "'purged'"
  /**
   * The seqs of `source`'s rows (peer, lane, seq, run) as dropped ranges for `reason`: runs of seqs that follow each
   * other with one run (a run's seqs minus their rank among its seqs stay the same while they follow each other).
   */
  const islands = (source: string, reason: DropReason) =>
    `SELECT peer, lane, min(seq) AS from_seq, max(seq) AS to_seq, run, ${reasonText(reason)} AS reason FROM (
      SELECT peer, lane, seq, run, seq - row_number() OVER (PARTITION BY peer, lane, run ORDER BY seq) AS island
      FROM ${source}
    ) AS numbered
    GROUP BY peer, lane, run, island`
  /** Records the ranges of `source`'s rows as dropped for `reason`, and returns them. */
  const recordDropped = (source: string, reason: DropReason) =>
    `INSERT INTO ${dropped} (peer, lane, from_seq, to_seq, run, reason) ${islands(source, reason)}
    RETURNING peer, lane, from_seq, to_seq, run`
  /** The messages due at `?`, the most overdue first, up to `?` of them: a range scan of the index of due messages. */
  const due = (columns: string) =>
    `SELECT ${columns} FROM ${messages} WHERE expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at LIMIT ?`
  /**
   * Acknowledgements: deletes each stream's messages up to its `up_to` and moves its lowest pending seq past them;
   * `droppedToo` also deletes its dropped ranges up to `up_to`, and cuts the one that straddles it. One statement on
   * PostgreSQL; on SQLite two (each with a range scan of the primary key per acknowledgement), and two more for the
   * dropped ranges. A repeated row changes nothing.
   */
  const acknowledge = (droppedToo: boolean) =>
    perRowCount((rows) => {
      if (dialect === "pg") {
        const forget = droppedToo
          ? `, forgotten AS (
            DELETE FROM ${dropped} AS d USING acks
            WHERE d.peer = acks.peer AND d.lane = acks.lane AND d.to_seq <= acks.up_to
          ), cut AS (
            UPDATE ${dropped} AS d SET from_seq = acks.up_to + 1 FROM acks
            WHERE d.peer = acks.peer AND d.lane = acks.lane AND d.from_seq <= acks.up_to AND d.to_seq > acks.up_to
          )`
          : ""
        return [numbered(`${acks(rows)}, deleted AS (
            DELETE FROM ${messages} AS m USING acks
            WHERE m.peer = acks.peer AND m.lane = acks.lane AND m.seq <= acks.up_to
          )${forget}
          UPDATE ${streams} AS s SET first_pending = LEAST(s.next_seq, acks.up_to + 1) FROM acks
          WHERE s.peer = acks.peer AND s.lane = acks.lane AND s.first_pending <= acks.up_to`)]
      }
      const texts = [
        // One stream, the usual case, deletes in a range scan; several collect the rows' ids first.
        rows === 1
          ? `DELETE FROM ${messages} WHERE peer = ? AND lane = ? AND seq <= ?`
          : `${acks(rows)} DELETE FROM ${messages} WHERE rowid IN (
            SELECT m.rowid FROM acks CROSS JOIN ${messages} AS m
            WHERE m.peer = acks.peer AND m.lane = acks.lane AND m.seq <= acks.up_to
          )`,
        `${acks(rows)} UPDATE ${streams} SET first_pending = min(${streams}.next_seq, acks.up_to + 1) FROM acks
          WHERE ${streams}.peer = acks.peer AND ${streams}.lane = acks.lane AND ${streams}.first_pending <= acks.up_to`
      ]
      if (!droppedToo) return texts
      return [
        ...texts,
        rows === 1
          ? `DELETE FROM ${dropped} WHERE peer = ? AND lane = ? AND to_seq <= ?`
          : `${acks(rows)} DELETE FROM ${dropped} WHERE (peer, lane, from_seq) IN (
            SELECT d.peer, d.lane, d.from_seq FROM acks CROSS JOIN ${dropped} AS d
            WHERE d.peer = acks.peer AND d.lane = acks.lane AND d.to_seq <= acks.up_to
          )`,
        `${acks(rows)} UPDATE ${dropped} SET from_seq = acks.up_to + 1 FROM acks
          WHERE ${dropped}.peer = acks.peer AND ${dropped}.lane = acks.lane
            AND ${dropped}.from_seq <= acks.up_to AND ${dropped}.to_seq > acks.up_to`
      ]
    })
  /**
   * Removes every stored message to `?`, or of its lane `?` only, records them as dropped (purged) and returns the
   * ranges.
   */
  const purge = (oneLane: boolean) => {
    const where = `peer = ?${oneLane ? " AND lane = ?" : ""}`
    return dialect === "pg"
      ? [numbered(`WITH gone AS (DELETE FROM ${messages} WHERE ${where} RETURNING peer, lane, seq, run)
        ${recordDropped("gone", "purged")}`)]
      // The same rows twice: the store's single connection runs nothing else between the two statements.
      : [recordDropped(`${messages} WHERE ${where}`, "purged"), `DELETE FROM ${messages} WHERE ${where}`]
  }
  return {
    /** Moves each stream's next seq past its new messages, creating the stream if need be, and returns it. */
    allocate: perRowCount((rows) => [
      numbered(
        `INSERT INTO ${streams} (peer, lane, next_seq, first_pending) VALUES ${values(rows, ["?", "?", "?", "1"])}
        ON CONFLICT (peer, lane) DO UPDATE SET next_seq = ${streams}.next_seq + excluded.next_seq - 1
        RETURNING peer, lane, next_seq`
      )
    ]),
    /** PostgreSQL's `stored_at` is the column's default; SQLite's is set here (see `3_expiry`). */
    store: perRowCount((rows) => [
      numbered(
        dialect === "pg"
          ? `INSERT INTO ${messages} (peer, lane, seq, run, payload, expires_at)
            VALUES ${values(rows, ["?", "?", "?", "?", "?", "?"])}`
          : `INSERT INTO ${messages} (peer, lane, seq, run, payload, expires_at, stored_at)
            VALUES ${values(rows, ["?", "?", "?", "?", "?", "?", sqliteNowMillis])}`
      )
    ]),
    read: numbered(`SELECT seq, run, payload, expires_at FROM ${messages}
      WHERE peer = ? AND lane = ? AND seq >= ?
      ORDER BY seq
      LIMIT ?`),
    acknowledge: acknowledge(false),
    acknowledgeDropped: acknowledge(true),
    /** Whether a message is due at `?`: one probe of the index of due messages, before any write. */
    due: numbered(`SELECT 1 AS due FROM ${messages} WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT 1`),
    /**
     * Removes the messages due at `?`, up to `?` of them. PostgreSQL records their ranges as dropped (expired) in the
     * same statement and returns them; SQLite returns the messages, and the store records their ranges
     * (`recordExpired`).
     */
    expire: dialect === "pg"
      ? numbered(`WITH gone AS (
          DELETE FROM ${messages} WHERE (peer, lane, seq) IN (${due("peer, lane, seq")})
          RETURNING peer, lane, seq, run
        )
        ${recordDropped("gone", "expired")}`)
      : `DELETE FROM ${messages} WHERE rowid IN (${due("rowid")}) RETURNING peer, lane, seq, run`,
    /** Records ranges (peer, lane, from, to, run) as dropped because they expired. */
    recordExpired: perRowCount((rows) => [
      numbered(
        `INSERT INTO ${dropped} (peer, lane, from_seq, to_seq, run, reason)
        VALUES ${values(rows, ["?", "?", "?", "?", "?", reasonText("expired")])}`
      )
    ]),
    purgeStream: purge(true),
    purgePeer: purge(false),
    setIncarnation: numbered(`INSERT INTO "${tables.incarnations}" (peer, incarnation) VALUES (?, ?)
      ON CONFLICT (peer) DO UPDATE SET incarnation = excluded.incarnation`),
    /** Deletes what the store holds about peer `?` but its dead letters; `setIncarnation` follows. */
    forget: [messages, dropped, streams, received].map((table) => numbered(`DELETE FROM ${table} WHERE peer = ?`)),
    commitReceived: perRowCount((rows) => [
      numbered(`INSERT INTO ${received} (peer, lane, incarnation, delivered, runs)
        VALUES ${values(rows, ["?", "?", "?", "?", "?"])}
        ON CONFLICT (peer, lane) DO UPDATE SET
          incarnation = excluded.incarnation,
          delivered = excluded.delivered,
          runs = excluded.runs`)
    ]),
    /** Stores dead letters (peer, lane, incarnation, seq, payload, error, attempts, dead_lettered_at), in order. */
    storeDeadLetters: perRowCount((rows) => [
      numbered(`INSERT INTO ${deadLetters} (peer, lane, incarnation, seq, payload, error, attempts, dead_lettered_at)
        VALUES ${values(rows, ["?", "?", "?", "?", "?", "?", "?", "?"])}`)
    ]),
    /** The dead letters a query selects, lowest id first, up to its limit: a text per selection, kept once built. */
    selectDeadLetters: (selection: DeadLetterSelection): string => {
      const key =
        `${selection.peer}/${selection.lane}/${selection.afterId}/${selection.replayRequested}/${selection.ids}`
      let text = selectTexts.get(key)
      if (text === undefined) {
        const conditions = [
          ...(selection.peer ? ["peer = ?"] : []),
          ...(selection.lane ? ["lane = ?"] : []),
          ...(selection.afterId ? ["id > ?"] : []),
          ...(selection.ids > 0 ? [`id IN (${list(selection.ids)})`] : []),
          ...(selection.replayRequested === undefined ? [] : [replayCondition(selection.replayRequested)])
        ]
        text = numbered(`SELECT id, peer, lane, incarnation, seq, payload, error, attempts, dead_lettered_at,
          replay_requested FROM ${deadLetters}${conditions.length === 0 ? "" : ` WHERE ${conditions.join(" AND ")}`}
          ORDER BY id LIMIT ?`)
        selectTexts.set(key, text)
      }
      return text
    },
    /** Deletes the dead letters of so many ids, and returns each one's id. */
    removeDeadLetters: perRowCount((rows) => [
      numbered(`DELETE FROM ${deadLetters} WHERE id IN (${list(rows)}) RETURNING id`)
    ]),
    /** Marks (`true`) or unmarks the dead letters of so many ids for replay, and returns each one's id. */
    requestReplay: (requested: boolean) => markForReplayTexts[`${requested}`]
  }
}
