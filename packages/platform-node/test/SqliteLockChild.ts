/**
 * Run by SqliteBackend.test.ts in a child process: opens the SQLite store given as the only argument and prints one
 * JSON line saying what happened (`{"result":"opened"}` or `{"result":"StoreLockedError"}`, say). A refused open is
 * tried again each time a line arrives on standard input; an open store stays open until the process is killed.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as SqliteBackend from "../src/SqliteBackend.js"

const [filename = ""] = process.argv.slice(2)

const report = (result: string, detail?: string) =>
  Effect.sync(() => process.stdout.write(`${JSON.stringify({ result, detail })}\n`))

const nextLine = Effect.async<void>((resume) => {
  process.stdin.once("data", () => resume(Effect.void))
})

/** Tries to open the store; an open store stays open for the scope. */
const attempt = Effect.gen(function*() {
  const exit = yield* Effect.exit(Layer.build(SqliteBackend.layer({ filename })))
  if (Exit.isSuccess(exit)) {
    yield* report("opened")
    return true
  }
  const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
  yield* report(error?._tag ?? "defect", error?.message)
  return false
})

const program = Effect.scoped(Effect.gen(function*() {
  while (!(yield* attempt)) yield* nextLine
  yield* Effect.never
}))

Effect.runPromise(program).then(() => process.exit(0), (error) => {
  process.stdout.write(`${JSON.stringify({ result: "crashed", detail: String(error) })}\n`)
  process.exit(1)
})
