/**
 * The two SQL dialects for tests that look inside a store: a place for a new store (a file, or a table prefix), the
 * store opened on it with its client, and a plain client with nothing of the store's, to make a store as an earlier
 * version did. A test file adds what it needs per dialect.
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as FileSystem from "@effect/platform/FileSystem"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { Backend } from "@intersession/core/Backend"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Path from "node:path"
import * as SqliteBackend from "../src/SqliteBackend.js"
import { adminLayer, freshPrefix, openScoped as openPg, probe } from "./PgTestKit.js"
import { buildScoped } from "./SqlTestKit.js"

/** A store of one dialect, opened for the scope, with its client for the test's own statements. */
export interface Store {
  readonly backend: Backend["Type"]
  readonly sql: SqlClient.SqlClient
  readonly prefix: string
  readonly close: Effect.Effect<void>
}

export interface Dialect {
  readonly name: string
  /** A place for a store: a file, or a table prefix. */
  readonly place: Effect.Effect<string, never, Scope.Scope>
  readonly open: (place: string) => Effect.Effect<Store, unknown, Scope.Scope>
  /** The store's client with nothing of the store's: to make a store as an earlier version did. */
  readonly plain: <A, E>(
    place: string,
    f: (sql: SqlClient.SqlClient, prefix: string) => Effect.Effect<A, E>
  ) => Effect.Effect<A, unknown, Scope.Scope>
  readonly skip?: boolean
}

export const sqlite: Dialect = {
  name: "SQLite",
  place: Effect.flatMap(FileSystem.FileSystem, (fs) => fs.makeTempDirectoryScoped({ prefix: "intersession-sql-" }))
    .pipe(
      Effect.map((directory) => Path.join(directory, "store.db")),
      Effect.provide(NodeFileSystem.layer),
      Effect.orDie
    ),
  open: (filename) =>
    Effect.map(buildScoped(SqliteBackend.layer({ filename })), ({ close, context }) => ({
      backend: Context.get(context, Backend),
      sql: Context.get(context, SqlClient.SqlClient),
      prefix: "intersession_",
      close
    })),
  plain: (filename, f) =>
    Effect.scoped(Effect.flatMap(SqliteClient.make({ filename }), (sql) => f(sql, "intersession_"))).pipe(
      Effect.provide(Reactivity.layer)
    )
}

export const postgres: Dialect = {
  name: "PostgreSQL",
  skip: probe.url === undefined,
  // The test's own client, for the test's scope: it drops the store's tables when the scope closes.
  place: Effect.flatMap(Layer.build(adminLayer), (admin) => Effect.provide(freshPrefix, admin)).pipe(Effect.orDie),
  open: (tablePrefix) =>
    Effect.map(openPg({ tablePrefix }), ({ backend, close, context }) => ({
      backend,
      sql: Context.get(context, SqlClient.SqlClient),
      prefix: tablePrefix,
      close
    })),
  plain: (tablePrefix, f) =>
    Effect.flatMap(Layer.build(adminLayer), (admin) => f(Context.get(admin, SqlClient.SqlClient), tablePrefix))
}
