/**
 * A dedicated worker, another context of the test page's origin, that tries to own a store: it opens the store with
 * the options the page sends, reports how that went, and keeps the store until the page sends `"close"`.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as IndexedDbBackend from "../src/IndexedDbBackend.js"

/** What the page sends: the options to open the store with, then `"close"`. */
export type Command = IndexedDbBackend.Options | "close"

/** What the worker answers: the incarnation of the store it opened, the tag of the error it failed with, or closed. */
export type Report =
  | { readonly result: "opened"; readonly incarnation: number }
  | { readonly result: "failed"; readonly tag: string }
  | { readonly result: "closed" }

const scope = Effect.runSync(Scope.make())

const report = (value: Report) => self.postMessage(value)

self.onmessage = (event: MessageEvent<Command>) => {
  const command = event.data
  if (command === "close") {
    Effect.runPromise(Scope.close(scope, Exit.void)).then(() => report({ result: "closed" }))
    return
  }
  Effect.runPromise(Effect.exit(Scope.extend(IndexedDbBackend.make(command), scope))).then((exit) => {
    if (Exit.isSuccess(exit)) return report({ result: "opened", incarnation: exit.value.backend.incarnation })
    const failure = Cause.failureOption(exit.cause)
    report({ result: "failed", tag: Option.isSome(failure) ? failure.value._tag : Cause.pretty(exit.cause) })
  })
}
