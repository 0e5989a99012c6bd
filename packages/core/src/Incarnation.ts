/**
 * Incarnations: which life of a store a stream belongs to.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import * as Schema from "effect/Schema"

/**
 * An incarnation id: the store's creation time in milliseconds times 1024 plus 10 random bits, so a store created
 * later compares greater, and two stores created in the same millisecond almost surely differ. It stays a safe
 * integer until the year 2248.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Incarnation = Schema.Number.pipe(
  Schema.int(),
  Schema.nonNegative(),
  Schema.lessThanOrEqualTo(Number.MAX_SAFE_INTEGER),
  Schema.brand("@intersession/core/Incarnation"),
  Schema.annotations({ identifier: "Incarnation" })
)

/**
 * @since 0.1.0
 * @category models
 */
export type Incarnation = typeof Incarnation.Type

const randomBits = 1024

/**
 * Makes a fresh incarnation from the `Clock` and `Random` services.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<Incarnation> = Effect.map(
  Effect.zip(Clock.currentTimeMillis, Random.nextIntBetween(0, randomBits)),
  ([millis, bits]) => clamp(Math.floor(millis) * randomBits + bits)
)

/** Keeps a computed id in range whatever the clock says, so making one never fails. */
const clamp = (n: number): Incarnation => Incarnation.make(Math.min(Number.MAX_SAFE_INTEGER, Math.max(0, n)))

/**
 * Makes an incarnation that is newer than `after`: a fresh one, or `after + 1` when the clock runs behind (the
 * largest safe integer stays itself: nothing is newer).
 *
 * @since 0.1.0
 * @category constructors
 */
export const after = (after: Incarnation): Effect.Effect<Incarnation> =>
  Effect.map(make, (fresh) => (fresh > after ? fresh : clamp(after + 1)))
