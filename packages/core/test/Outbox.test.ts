/**
 * The outbox's room per peer: reserved on the sender's fiber, waited for in STM only when there is none.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Outbox from "../src/internal/engine/outbox.js"
import { A, B } from "./helpers.js"

describe("outbox", () => {
  it.effect("reserves room per peer up to the bound, and refuses beyond it when told to fail", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.make({ max: 3, wait: false })
      assert.strictEqual(outbox.tryReserve(A, 2), "reserved")
      assert.strictEqual(outbox.tryReserve(A, 2), "full")
      assert.strictEqual(outbox.tryReserve(B, 3), "reserved")
      assert.strictEqual(outbox.total(), 5)
      assert.deepStrictEqual(yield* Effect.either(outbox.reserve(A, 2)), Either.left<Outbox.Refusal>("full"))
      yield* outbox.release(A, 1)
      yield* outbox.reserve(A, 2)
      assert.strictEqual(outbox.total(), 6)
    }))

  it.effect("a reservation that must wait resumes once room is freed, and never beyond the bound", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.make({ max: 3, wait: true })
      yield* outbox.reserve(A, 3)
      const first = yield* Effect.fork(outbox.reserve(A, 2))
      const second = yield* Effect.fork(outbox.reserve(A, 2))
      const finished = Effect.map(
        Effect.all([Fiber.poll(first), Fiber.poll(second)]),
        (polls) => polls.filter(Option.isSome).length
      )
      for (let i = 0; i < 10; i++) yield* Effect.yieldNow()
      assert.strictEqual(yield* finished, 0, "both wait while the outbox is full")
      yield* outbox.release(A, 2)
      for (let i = 0; i < 10; i++) yield* Effect.yieldNow()
      assert.strictEqual(yield* finished, 1, "room for one of the two")
      assert.strictEqual(outbox.total(), 3)
      yield* outbox.release(A, 3)
      yield* Fiber.join(first)
      yield* Fiber.join(second)
      assert.strictEqual(outbox.total(), 2)
    }))

  it.effect("a call larger than the whole outbox fails at once, even when sends wait", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.make({ max: 3, wait: true })
      assert.strictEqual(outbox.tryReserve(A, 4), "full")
    }))

  it.effect("closing refuses every reservation and wakes those waiting", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.make({ max: 1, wait: true })
      yield* outbox.reserve(A, 1)
      const waiting = yield* Effect.fork(outbox.reserve(A, 1))
      yield* Effect.yieldNow()
      yield* outbox.close
      assert.deepStrictEqual(yield* Effect.either(Fiber.join(waiting)), Either.left<Outbox.Refusal>("closed"))
      assert.strictEqual(outbox.tryReserve(B, 1), "closed")
    }))

  it.effect("what a store held at the start counts, however far above the bound", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.make({ max: 3, wait: false })
      outbox.restore(A, 10)
      assert.strictEqual(outbox.tryReserve(A, 1), "full")
      yield* outbox.release(A, 8)
      assert.strictEqual(outbox.tryReserve(A, 1), "reserved")
    }))
})
