/**
 * Peer identities.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * The longest peer id (and lane name) in UTF-16 code units. Ids travel in every frame, so they stay short.
 *
 * @since 0.1.0
 * @category constants
 */
export const maxLength = 255

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/**
 * Tells whether a string is well-formed Unicode: it has no lone surrogate, so it survives UTF-8 unchanged.
 *
 * @since 0.1.0
 * @category guards
 */
export const isWellFormed = (s: string): boolean => !loneSurrogate.test(s)

/**
 * A peer's id: a non-empty, well-formed string of at most {@link maxLength} characters, unique in one deployment.
 *
 * @since 0.1.0
 * @category schemas
 */
export const PeerId = Schema.String.pipe(
  Schema.minLength(1),
  Schema.maxLength(maxLength),
  Schema.filter(isWellFormed, { message: () => "an id must be well-formed Unicode (no lone surrogate)" }),
  Schema.brand("@intersession/core/PeerId"),
  Schema.annotations({ identifier: "PeerId" })
)

/**
 * @since 0.1.0
 * @category models
 */
export type PeerId = typeof PeerId.Type

/**
 * Makes a `PeerId` from a string literal you know to be valid. It throws on an empty or over-long id, like every
 * branded constructor of `effect/Schema`; use {@link decode} for ids that come from outside the program.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (id: string) => PeerId = PeerId.make

/**
 * Validates a string as a `PeerId`, failing with a `ParseError` that says why it is not one.
 *
 * @since 0.1.0
 * @category constructors
 */
export const decode = Schema.decodeUnknown(PeerId)

/**
 * Whether a value is a valid peer id.
 *
 * @since 0.1.0
 * @category guards
 */
export const isPeerId: (u: unknown) => u is PeerId = Schema.is(PeerId)
