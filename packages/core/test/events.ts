import type { ILM } from "@intersession/core/ILM"
import type { IlmEvent } from "@intersession/core/IlmEvent"
import * as Effect from "effect/Effect"
import * as Ref from "effect/Ref"
import * as Stream from "effect/Stream"

/** Records every event of an engine from now on, for the rest of the scope. */
export const recordEvents = (ilm: ILM["Type"]) =>
  Effect.gen(function*() {
    const events = yield* Ref.make<ReadonlyArray<IlmEvent>>([])
    yield* Effect.forkScoped(Stream.runForEach(ilm.events, (event) => Ref.update(events, (all) => [...all, event])))
    // Let the subscription start before anything happens.
    yield* Effect.yieldNow()
    return events
  })

/** Lets the recording fibers take what was published so far. */
export const settle: Effect.Effect<void> = Effect.repeatN(Effect.yieldNow(), 20)
