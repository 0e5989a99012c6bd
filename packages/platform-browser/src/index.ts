/**
 * A browser tab as a peer of `@intersession/core`: a WebSocket network that dials a Node peer with a credential, and
 * an IndexedDB backend owned through a Web Lock.
 *
 * @since 0.3.0
 */
/**
 * @since 0.3.0
 */
export * as IndexedDbBackend from "./IndexedDbBackend.js"

/**
 * @since 0.3.0
 */
export * as WebSocketNetwork from "./WebSocketNetwork.js"
