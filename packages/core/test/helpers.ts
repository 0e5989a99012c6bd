import type { Message } from "@intersession/core/Message"
import * as PeerId from "@intersession/core/PeerId"
import { Eventually, type TestPeer } from "@intersession/testing"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"

export const A = PeerId.make("A")
export const B = PeerId.make("B")
export const C = PeerId.make("C")

const encoder = new TextEncoder()
const decoder = new TextDecoder()

export const text = (value: string): Uint8Array => encoder.encode(value)
export const texts = (messages: ReadonlyArray<Message>): Array<string> => messages.map((m) => decoder.decode(m.payload))

/** Moves the TestClock until `peer`'s application has received at least `count` messages. */
export const awaitReceived = (peer: TestPeer.Peer, count: number, limit: Duration.DurationInput = "5 minutes") =>
  Eventually.eventually(
    `${peer.id} received ${count} messages`,
    Effect.map(peer.recorder.messages, (messages) => messages.length >= count),
    { limit }
  )

/** Moves the TestClock until the store of `peer` holds no pending message. */
export const awaitAcknowledged = (peer: TestPeer.Peer, limit: Duration.DurationInput = "5 minutes") =>
  Eventually.eventually(
    `${peer.id}'s outbox is acknowledged`,
    Effect.map(peer.store.pendingCount, (count) => count === 0),
    { limit }
  )

/** Sends `count` messages "<label> <i>" from `running` to `to`, one after another. */
export const sendNumbered = (
  running: TestPeer.Running,
  to: PeerId.PeerId,
  label: string,
  from: number,
  count: number,
  lane?: string
) =>
  Effect.forEach(
    Array.from({ length: count }, (_, i) => from + i),
    (i) => running.ilm.send(to, text(`${label} ${i}`), { lane }),
    { discard: true }
  )

export const numbered = (label: string, from: number, count: number): Array<string> =>
  Array.from({ length: count }, (_, i) => `${label} ${from + i}`)
