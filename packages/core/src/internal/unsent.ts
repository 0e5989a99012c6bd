/**
 * Messages stored and not yet sent: the pump sends a fresh message from here instead of reading it back from the
 * store it was just written to. A seq names one message for the whole run, so an entry can never be stale; a miss
 * only costs the read it would have cost anyway. Bounded per stream and in bytes, so a backlog stays in the store.
 *
 * @internal
 */
import type { OutboundMessage, StoredMessage } from "../Backend.js"

export class Unsent {
  private readonly streams = new Map<string, Map<number, StoredMessage>>()
  private bytes = 0

  constructor(private readonly perStream: number, private readonly maxBytes: number) {}

  /** Keeps a copy of a just-stored message (the sender may reuse its buffer) if there is room. */
  add(key: string, message: OutboundMessage, seq: number, run: number): void {
    let stream = this.streams.get(key)
    if ((stream?.size ?? 0) >= this.perStream || this.bytes + message.payload.length > this.maxBytes) return
    if (stream === undefined) this.streams.set(key, stream = new Map())
    stream.set(seq, { peer: message.peer, lane: message.lane, seq, run, payload: message.payload.slice() })
    this.bytes += message.payload.length
  }

  /** Removes seqs `from … to` of a stream; returns them in order if every one was here. */
  take(key: string, from: number, to: number): Array<StoredMessage> | undefined {
    const stream = this.streams.get(key)
    if (stream === undefined) return undefined
    const found: Array<StoredMessage> = []
    for (let seq = from; seq <= to; seq++) {
      const message = stream.get(seq)
      if (message === undefined) continue
      stream.delete(seq)
      this.bytes -= message.payload.length
      found.push(message)
    }
    if (stream.size === 0) this.streams.delete(key)
    return found.length === to - from + 1 ? found : undefined
  }

  /** Forgets seqs up to `upTo` of a stream: acknowledged before they were sent (a resend from the floor, say). */
  drop(key: string, upTo: number): void {
    const stream = this.streams.get(key)
    if (stream === undefined) return
    for (const [seq, message] of stream) {
      if (seq > upTo) continue
      stream.delete(seq)
      this.bytes -= message.payload.length
    }
    if (stream.size === 0) this.streams.delete(key)
  }
}
