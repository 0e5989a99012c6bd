/**
 * One exclusive Web Lock held for as long as its owner wants it: the lock the IndexedDB backend takes on its store.
 *
 * A Web Lock is the origin's: every tab, worker and frame of it asks the same lock manager, so one holder at a time
 * across all of them. The browser releases it when its holder's context ends (the tab closes or crashes), and
 * otherwise only when it is released, or stolen by a request with `steal: true`.
 *
 * @internal
 */

/** A held lock. */
export interface HeldLock {
  /**
   * Releases the lock, and resolves once the lock manager has let go of it, when a request of another context can get
   * it (the lock manager releases asynchronously: a request made at once after giving it up could still find it
   * held). Later calls only wait.
   */
  readonly release: () => Promise<void>
}

/** How to ask for a lock. */
export interface LockRequest {
  /** Wait until the lock is free; otherwise get nothing at once while another holds it. */
  readonly wait: boolean
  /** Aborts a request still waiting (only with `wait`): the promise then rejects with the signal's reason. */
  readonly signal?: AbortSignal | undefined
  /** Called if another context steals the lock while it is held. */
  readonly onStolen: (cause: unknown) => void
}

/**
 * Asks for the exclusive lock `name`: resolves with the held lock, or with `undefined` when the request does not wait
 * and another context holds it.
 *
 * The lock manager holds a lock while the promise its callback returned is pending: here, until `release` is called.
 * The promise of the request itself resolves once the lock is released, and rejects if the lock was stolen (with an
 * `AbortError`) or if the request failed before the lock was granted.
 */
export const request = (locks: LockManager, name: string, options: LockRequest): Promise<HeldLock | undefined> =>
  new Promise((resolve, reject) => {
    let granted = false
    let letGo = () => {}
    const released = new Promise<void>((done) => {
      letGo = done
    })
    const settings: LockOptions = options.wait
      ? { mode: "exclusive", ...(options.signal === undefined ? {} : { signal: options.signal }) }
      : { mode: "exclusive", ifAvailable: true }
    const requested = locks.request(name, settings, (lock) => {
      if (lock === null) {
        resolve(undefined)
        return undefined
      }
      granted = true
      resolve({
        release: () => {
          letGo()
          return ended
        }
      })
      return released
    })
    const ended = requested.then(
      () => {},
      (cause: unknown) => {
        if (granted) options.onStolen(cause)
        else reject(cause)
      }
    )
  })
