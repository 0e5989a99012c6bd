/**
 * What a browser case's page offers the case's process, as `globalThis.bench`; the page reads its settings from
 * its URL's query.
 */
export interface PageApi {
  /** Resolves once the page is connected to the case's Node side, so that the clock measures messaging only. */
  readonly ready: Promise<void>
  /**
   * Sends messages 0 … messages-1 of `payloadBytes` each, made by the bench's `payload`; resolves once every one
   * was acknowledged, to the number of them that failed.
   */
  readonly run: (messages: number, payloadBytes: number) => Promise<number>
}

/** Offers `api` to the case's process. */
export const offer = (api: PageApi): void => {
  Object.assign(globalThis, { bench: api })
}
