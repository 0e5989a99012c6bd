/**
 * What `@effect/vitest` resolves to when docgen runs this package's examples (see `paths` in ../docgen.json).
 *
 * The examples of `BackendSuite` and `NetworkSuite` are test files: they declare vitest suites, and vitest cannot
 * be imported outside its own runner, while docgen runs every example with tsx. So docgen type-checks them against
 * the real `@effect/vitest` (vitest-stub.d.ts re-exports its types), and runs them against this module, where
 * declaring a suite or a test does nothing. The suites themselves run in this package's tests.
 */
const ignore = new Proxy(() => ignore, { get: () => ignore })

export const afterAll = ignore
export const assert = ignore
export const describe = ignore
export const it = ignore
