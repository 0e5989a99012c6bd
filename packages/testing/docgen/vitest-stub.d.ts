// The types of the real module, for docgen's type-check of the examples: see vitest-stub.js.
export * from "@effect/vitest/index"
