/**
 * The SQL drivers are optional peer dependencies: a PostgreSQL user need not install (nor build) the SQLite one.
 * Each backend imports its driver when its layer is built, never at module load, so importing this package never
 * needs a driver that is not used.
 */
import * as Effect from "effect/Effect"
import { DriverMissingError } from "../SqlBackend.js"

/** Imports a backend's driver; a driver that is not installed, or does not load, fails with `DriverMissingError`. */
export const load = <A>(
  backend: string,
  driver: string,
  importDriver: () => Promise<A>
): Effect.Effect<A, DriverMissingError> =>
  Effect.tryPromise({ try: importDriver, catch: (cause) => new DriverMissingError({ backend, driver, cause }) })
