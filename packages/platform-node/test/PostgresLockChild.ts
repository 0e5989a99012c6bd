/**
 * Run by PostgresBackend.test.ts in a child process: opens the PostgreSQL store `<url> <tablePrefix>`, prints one
 * JSON line saying what happened (`{"result":"opened"}` or `{"result":"StoreLockedError"}`, say) and, with `hold` as
 * the third argument, keeps the store open until it is killed.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as PostgresBackend from "../src/PostgresBackend.js"

const [url, tablePrefix, mode] = process.argv.slice(2)

const report = (result: string, detail?: string) =>
  Effect.sync(() => process.stdout.write(`${JSON.stringify({ result, detail })}\n`))

const program = Effect.scoped(Effect.gen(function*() {
  if (url === undefined || tablePrefix === undefined) {
    yield* report("usage: PostgresLockChild.ts <url> <tablePrefix> [hold]")
    return
  }
  const exit = yield* Effect.exit(Layer.build(PostgresBackend.layer({ url, tablePrefix })))
  if (Exit.isFailure(exit)) {
    const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
    yield* report(error?._tag ?? "defect", error?.message)
    return
  }
  yield* report("opened")
  if (mode === "hold") yield* Effect.never
}))

Effect.runPromise(program).then(() => process.exit(0), (error) => {
  process.stdout.write(`${JSON.stringify({ result: "crashed", detail: String(error) })}\n`)
  process.exit(1)
})
