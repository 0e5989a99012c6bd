/**
 * The test kit of `@intersession/core`: an in-memory network and store with fault injection, test peers and a
 * deterministic simulation. The conformance suites run under vitest, so they are imported by their paths
 * (`@intersession/testing/BackendSuite`, `@intersession/testing/NetworkSuite`), and this module loads anywhere.
 *
 * @since 0.1.0
 */
/**
 * @since 0.1.0
 */
export * as InMemoryBackend from "./InMemoryBackend.js"
/**
 * @since 0.1.0
 */
export * as InMemoryNetwork from "./InMemoryNetwork.js"
/**
 * @since 0.1.0
 */
export * as Eventually from "./Eventually.js"
/**
 * @since 0.1.0
 */
export * as TestPeer from "./TestPeer.js"
/**
 * @since 0.1.0
 */
export * as Simulation from "./Simulation.js"
/**
 * @since 0.1.0
 */
export * as VirtualClock from "./VirtualClock.js"
