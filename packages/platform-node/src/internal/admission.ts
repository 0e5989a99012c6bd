/**
 * What a listener lets in before the other side has proved the key, so that unauthenticated clients cost bounded
 * memory, however many there are and whatever they send:
 *
 * - at most `maxUnauthenticated` accepted connections that have not authenticated at once, and at most
 *   `maxUnauthenticatedPerAddress` of them from one remote address; one more is destroyed as soon as it is accepted
 *   (before a TLS handshake or an HTTP upgrade, where the transport has them);
 * - at most {@link preAuthBytes} bytes from each before it authenticates, counted as they arrive on the socket, before
 *   a transport assembles them into messages (a WebSocket server would otherwise buffer a whole message first);
 * - at most `handshakeTimeout` to reach the key handshake (a TLS handshake, an HTTP upgrade), which then has its own
 *   `handshakeTimeout`.
 *
 * A connection over a bound is destroyed: no close handshake, nothing written, nothing left waiting for the other
 * side. A connection stops counting once the other side proved the key, or when it ends.
 *
 * Every step is synchronous: transports call it from their socket callbacks.
 *
 * @internal
 */

/**
 * The most bytes a connection may send before it authenticates: the handshake needs less than 2 KiB (a `Hello` of
 * two ids of the greatest length and a `Proof`), so this leaves room for a transport's own framing.
 *
 * @internal
 */
export const preAuthBytes = 16 * 1024

/**
 * Why a guard destroyed its connection: over the byte budget, or the transport's part took too long.
 *
 * @internal
 */
export type Refusal = "TooManyBytes" | "HandshakeTimeout"

/**
 * One accepted connection that has not authenticated yet.
 *
 * @internal
 */
export interface Guard {
  /** Counts bytes that arrived; past {@link preAuthBytes} before authentication, destroys the connection. */
  readonly arrived: (bytes: number) => void
  /**
   * The key handshake begins (it has its own timeout): the transport's deadline no longer applies, and the network
   * counts how the handshake ends (before, the guard counts its own refusals).
   */
  readonly started: () => void
  /** The other side proved the key: the connection leaves the count, and its bytes are no longer counted. */
  readonly authenticated: () => void
  /** Whether the other side proved the key. */
  readonly isAuthenticated: () => boolean
  /** Why the guard destroyed the connection, if it did. */
  readonly refusal: () => Refusal | undefined
  /** Ends the connection at once, without a close handshake. */
  readonly destroy: () => void
  /** The connection ended: it leaves the count. Safe to call more than once. */
  readonly release: () => void
}

/**
 * The counts, for diagnostics.
 *
 * @internal
 */
export interface Stats {
  /** Accepted connections that have not authenticated yet. */
  readonly pending: number
  /** The most there were at once. */
  readonly peak: number
  /**
   * Accepted connections that ended before they authenticated, by reason: `Busy` (refused at once, over a cap),
   * `TooManyBytes`, `HandshakeTimeout`, `Unauthenticated` (a wrong proof), `UnknownPeer`, `Malformed`, `Closed` (the
   * client left), `TlsHandshake`…
   */
  readonly failed: Readonly<Record<string, number>>
}

/** @internal */
export interface Admission {
  /**
   * A guard for a connection just accepted from `host`, or `undefined` when a cap is reached: the caller destroys the
   * connection at once. `destroy` ends the connection; the guard calls it when the connection overruns a bound.
   * `deadline: false` when the transport bounds the time to the key handshake itself.
   */
  readonly admit: (host: string, destroy: () => void, deadline?: boolean) => Guard | undefined
  /** Counts a connection that ended before it authenticated, for `reason`. */
  readonly failed: (reason: string) => void
  readonly stats: () => Stats
  /**
   * Connections refused at once (over a cap) since the last call, taken; the network logs them in one line, so
   * that a flood does not become a flood of log lines.
   */
  readonly takeBusy: () => number
  /** Calls `wake` at the next refusal over a cap (once), or at once if there were some not yet taken. */
  readonly onBusy: (wake: () => void) => () => void
}

/** @internal */
export interface Limits {
  readonly maxUnauthenticated: number
  readonly maxUnauthenticatedPerAddress: number
  /** Milliseconds a connection may take to reach the key handshake. */
  readonly deadline: number
}

/** @internal */
export const make = (limits: Limits): Admission => {
  let pending = 0
  let peak = 0
  let busy = 0
  const perHost = new Map<string, number>()
  const failed: Record<string, number> = {}
  let wake: (() => void) | undefined

  const count = (reason: string) => {
    failed[reason] = (failed[reason] ?? 0) + 1
  }

  const admit = (host: string, destroy: () => void, deadline = true): Guard | undefined => {
    const fromHost = perHost.get(host) ?? 0
    if (pending >= limits.maxUnauthenticated || fromHost >= limits.maxUnauthenticatedPerAddress) {
      count("Busy")
      busy++
      const waiting = wake
      wake = undefined
      waiting?.()
      return undefined
    }
    pending++
    peak = Math.max(peak, pending)
    perHost.set(host, fromHost + 1)
    let counted = true
    let started = false
    let authenticated = false
    let refusal: Refusal | undefined
    let bytes = 0
    let timer: ReturnType<typeof setTimeout> | undefined

    /** Leaves the count, once. */
    const leave = () => {
      if (timer !== undefined) clearTimeout(timer)
      timer = undefined
      if (!counted) return
      counted = false
      pending--
      const left = (perHost.get(host) ?? 1) - 1
      if (left === 0) perHost.delete(host)
      else perHost.set(host, left)
    }
    const refuse = (reason: Refusal) => {
      if (authenticated || refusal !== undefined) return
      refusal = reason
      // Once the key handshake has started, the network counts how it ended.
      if (!started) count(reason)
      leave()
      destroy()
    }
    if (deadline) {
      timer = setTimeout(() => refuse("HandshakeTimeout"), limits.deadline)
      // A pending deadline does not keep the process alive.
      timer.unref()
    }

    return {
      arrived: (size) => {
        if (authenticated || refusal !== undefined) return
        bytes += size
        if (bytes > preAuthBytes) refuse("TooManyBytes")
      },
      started: () => {
        started = true
        if (timer !== undefined) clearTimeout(timer)
        timer = undefined
      },
      authenticated: () => {
        if (refusal !== undefined) return
        authenticated = true
        leave()
      },
      isAuthenticated: () => authenticated,
      refusal: () => refusal,
      destroy: () => {
        leave()
        destroy()
      },
      release: leave
    }
  }

  return {
    admit,
    failed: count,
    stats: () => ({ pending, peak, failed: { ...failed } }),
    takeBusy: () => {
      const taken = busy
      busy = 0
      return taken
    },
    onBusy: (callback) => {
      if (busy > 0) {
        callback()
        return () => {}
      }
      wake = callback
      return () => {
        if (wake === callback) wake = undefined
      }
    }
  }
}
