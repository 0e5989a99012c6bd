/**
 * Node.js networks (TCP, WebSocket), stores (SQLite, PostgreSQL) and the `intersession` command-line program for
 * `@intersession/core`.
 *
 * @since 0.1.0
 */
/**
 * @since 0.1.0
 */
export * as SqlBackend from "./SqlBackend.js"
/**
 * @since 0.1.0
 */
export * as SqliteBackend from "./SqliteBackend.js"
/**
 * @since 0.1.0
 */
export * as PostgresBackend from "./PostgresBackend.js"
/**
 * @since 0.1.0
 */
export * as TcpNetwork from "./TcpNetwork.js"
/**
 * @since 0.1.0
 */
export * as WebSocketNetwork from "./WebSocketNetwork.js"
/**
 * @since 0.1.0
 */
export * as Cli from "./Cli.js"
