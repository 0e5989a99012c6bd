/**
 * The round-trip estimate of one peer and the retransmission timeout it gives (RFC 6298): a smoothed round trip,
 * its variation, and a timeout kept within bounds, backed off after each expiry without progress.
 *
 * @internal
 */

export interface Rtt {
  /** The smoothed round trip, once one has been measured. */
  readonly srtt: number | undefined
  readonly rttvar: number
  /** The retransmission timeout, in milliseconds. */
  readonly rto: number
}

export interface RttBounds {
  readonly initial: number
  readonly min: number
  readonly max: number
  readonly backoff: number
}

export const initial = (bounds: RttBounds): Rtt => ({ srtt: undefined, rttvar: 0, rto: bounds.initial })

const clamp = (bounds: RttBounds, rto: number) => Math.ceil(Math.min(bounds.max, Math.max(bounds.min, rto)))

/** Takes one measured round trip. */
export const sample = (rtt: Rtt, millis: number, bounds: RttBounds): Rtt => {
  const measured = Math.max(0, millis)
  const first = rtt.srtt === undefined
  const rttvar = first ? measured / 2 : 0.75 * rtt.rttvar + 0.25 * Math.abs(rtt.srtt - measured)
  const srtt = first ? measured : 0.875 * rtt.srtt + 0.125 * measured
  return { srtt, rttvar, rto: clamp(bounds, srtt + 4 * rttvar) }
}

/** Progress without a sample (a retransmitted seq was acknowledged) still ends the back-off. */
export const progress = (rtt: Rtt, bounds: RttBounds): Rtt => {
  const rto = rtt.srtt === undefined ? bounds.initial : clamp(bounds, rtt.srtt + 4 * rtt.rttvar)
  return rto < rtt.rto ? { ...rtt, rto } : rtt
}

/** A retransmission timeout expired: wait longer before the next one. */
export const backoff = (rtt: Rtt, bounds: RttBounds): Rtt => ({
  ...rtt,
  rto: Math.min(bounds.max, rtt.rto * bounds.backoff)
})
