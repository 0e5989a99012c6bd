/**
 * How the cases hand messages to the engine: `sendAll` calls of `batch` messages per destination, `concurrency`
 * calls at a time, as a producer streaming messages would; or, with a batch of 1 and a concurrency of 1, the
 * simplest loop an application writes: one `send` at a time, each awaited before the next.
 */
import type * as ILM from "@intersession/core/ILM"
import type { PeerId } from "@intersession/core/PeerId"
import * as Effect from "effect/Effect"

export interface SendOptions {
  /** Messages per `sendAll` call; 1 sends each message with its own `send` call. */
  readonly batch?: number | undefined
  /** Calls in progress at once. */
  readonly concurrency?: number | undefined
}

export const defaults = { batch: 256, concurrency: 16 } as const

/** Sends `count` messages made by `make(i)` to `to(i)`, in order per destination; resolves once all are stored. */
export const sendMany = (
  ilm: ILM.ILM["Type"],
  count: number,
  to: (i: number) => PeerId,
  make: (i: number) => Uint8Array,
  options?: SendOptions
): Effect.Effect<void, ILM.SendError> => {
  const batch = options?.batch ?? defaults.batch
  const concurrency = options?.concurrency ?? defaults.concurrency
  if (batch === 1 && concurrency === 1) {
    return Effect.gen(function*() {
      for (let i = 0; i < count; i++) yield* ilm.send(to(i), make(i))
    })
  }
  if (batch === 1) {
    return Effect.forEach(Array.from({ length: count }, (_, i) => i), (i) => Effect.asVoid(ilm.send(to(i), make(i))), {
      concurrency,
      discard: true
    })
  }
  // Payloads are made as calls are issued, so a large run does not hold them all at once.
  const open = new Map<PeerId, Array<number>>()
  const calls: Array<{ readonly to: PeerId; readonly indices: Array<number> }> = []
  for (let i = 0; i < count; i++) {
    const destination = to(i)
    let indices = open.get(destination)
    if (indices === undefined) open.set(destination, indices = [])
    indices.push(i)
    if (indices.length === batch) {
      calls.push({ to: destination, indices })
      open.delete(destination)
    }
  }
  for (const [destination, indices] of open) calls.push({ to: destination, indices })
  // asVoid: a concurrent forEach keeps every call's result until the last call ends, even with `discard`.
  return Effect.forEach(calls, (call) => Effect.asVoid(ilm.sendAll(call.to, call.indices.map(make))), {
    concurrency,
    discard: true
  })
}
