/**
 * Lanes: independent ordered streams between the same two peers.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"
import { isWellFormed, maxLength } from "./PeerId.js"

/**
 * A lane name: a non-empty, well-formed string of at most 255 characters. Order holds per lane, and a message that cannot be
 * delivered in one lane never holds up another.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Lane = Schema.String.pipe(
  Schema.minLength(1),
  Schema.maxLength(maxLength),
  Schema.filter(isWellFormed, { message: () => "a lane must be well-formed Unicode (no lone surrogate)" }),
  Schema.annotations({ identifier: "Lane" })
)

/**
 * @since 0.1.0
 * @category models
 */
export type Lane = typeof Lane.Type

/**
 * The lane of a message sent without one.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultLane: Lane = "default"

/**
 * Tells whether a string is a valid lane name.
 *
 * @since 0.1.0
 * @category guards
 */
export const isLane: (u: unknown) => u is Lane = Schema.is(Lane)
