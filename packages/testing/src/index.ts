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
/**
 * @since 0.1.0
 */
export * as BackendSuite from "./BackendSuite.js"
/**
 * @since 0.1.0
 */
export * as NetworkSuite from "./NetworkSuite.js"
