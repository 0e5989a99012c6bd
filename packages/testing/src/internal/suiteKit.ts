/**
 * Small helpers the conformance suites share.
 *
 * @internal
 */
import { assert } from "@effect/vitest"

const encoder = new TextEncoder()

/** @internal */
export const decoder = new TextDecoder()

/** @internal */
export const text = (value: string): Uint8Array => encoder.encode(value)

/**
 * `length` bytes that differ from one position to the next and from one `seed` to another.
 *
 * @internal
 */
export const pattern = (length: number, seed: number): Uint8Array =>
  Uint8Array.from({ length }, (_, i) => (i * 31 + (i >>> 8) * 7 + seed) & 0xff)

/** @internal */
export const range = (from: number, to: number): Array<number> =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i)

/**
 * Checks bytes one by one, so a driver's `Buffer` or a view on a larger buffer compares by content only.
 *
 * @internal
 */
export const assertBytes = (actual: Uint8Array, expected: Uint8Array, what: string) => {
  assert.instanceOf(actual, Uint8Array, `${what} is a Uint8Array`)
  assert.strictEqual(actual.length, expected.length, `${what} has ${expected.length} bytes`)
  let firstDifference = -1
  for (let i = 0; i < expected.length; i++) {
    if (actual[i] !== expected[i]) {
      firstDifference = i
      break
    }
  }
  assert.strictEqual(firstDifference, -1, `${what}: first differing byte`)
}
