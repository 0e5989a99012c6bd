// In an install without the SQLite driver, SqliteBackend's layer fails with DriverMissingError, saying what to
// install, and the package's root module still loads.
import { SqliteBackend } from "@intersession/platform-node"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

const error = await Effect.runPromise(Effect.flip(Effect.scoped(Layer.build(SqliteBackend.layer({ filename: "x.db" })))))
console.log(`${error._tag}: ${error.message}`)
if (error._tag !== "DriverMissingError" || !error.message.includes("npm install @effect/sql-sqlite-node")) process.exit(1)
