/**
 * Node.js networks (TCP, WebSocket) and stores (SQLite, PostgreSQL) for `@intersession/core`. They arrive in the
 * next release; until then this package exports nothing.
 *
 * @since 0.1.0
 */
export {}
