/**
 * A typed channel over MessagePack: `Channel.make(lane, MsgPack.schema(schema))` with `@effect/platform/MsgPack`
 * round-trips between two peers, and a payload that is not MessagePack of the schema is refused for good.
 */
import * as MsgPack from "@effect/platform/MsgPack"
import { assert, describe, it } from "@effect/vitest"
import * as Channel from "@intersession/core/Channel"
import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import { Incarnation } from "@intersession/core/Incarnation"
import { Message } from "@intersession/core/Message"
import * as PeerId from "@intersession/core/PeerId"
import * as Eventually from "@intersession/testing/Eventually"
import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ParseResult from "effect/ParseResult"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"

const A = PeerId.make("A")
const B = PeerId.make("B")

class Reading extends Schema.Class<Reading>("Reading")({
  sensor: Schema.String,
  at: Schema.DateFromNumber,
  values: Schema.Array(Schema.Number),
  raw: Schema.Uint8ArrayFromSelf
}) {}

const readings = Channel.make("readings", MsgPack.schema(Reading))

const peer = (hub: InMemoryNetwork.Hub, id: PeerId.PeerId) =>
  Layer.build(
    ILM.layer().pipe(
      Layer.provideMerge(Channel.layerDelivery([readings])),
      Layer.provide(hub.layer(id)),
      Layer.provide(InMemoryBackend.layerFresh)
    )
  )

describe("Channel over MessagePack", () => {
  it.scoped("values encoded with MsgPack.schema round-trip between two peers, in order", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* peer(hub, A)
      const b = yield* peer(hub, B)
      const received = yield* Ref.make<ReadonlyArray<Channel.Received<Reading>>>([])
      yield* Effect.forkScoped(
        Stream.runForEach(
          Stream.provideContext(Channel.messages(readings), b),
          (r) => Ref.update(received, (all) => [...all, r])
        )
      )
      const sent = [
        new Reading({ sensor: "t1", at: new Date(1_000), values: [1.5, -2], raw: new Uint8Array([0, 255]) }),
        new Reading({ sensor: "t2", at: new Date(2_000), values: [], raw: new Uint8Array(0) })
      ]
      const ids = yield* Effect.provide(Channel.sendAll(readings, B, sent), a)
      yield* Eventually.eventually("B received 2 readings", Effect.map(Ref.get(received), (all) => all.length >= 2))

      const got = yield* Ref.get(received)
      assert.deepStrictEqual(got.map((r) => r.id), ids)
      assert.deepStrictEqual(got.map((r) => r.value.sensor), ["t1", "t2"])
      assert.isTrue(got.every((r) => r.value instanceof Reading))
      assert.deepStrictEqual(got.map((r) => r.value.at.getTime()), [1_000, 2_000])
      assert.deepStrictEqual(got.map((r) => r.value.values), [[1.5, -2], []])
      assert.deepStrictEqual(got.map((r) => Array.from(r.value.raw)), [[0, 255], []])
    }))

  it.scoped("a payload that is not MessagePack of the schema is a permanent DeliveryError", () =>
    Effect.gen(function*() {
      const context = yield* Layer.build(Channel.layerDelivery([readings]))
      const delivery = Context.get(context, Delivery.Delivery)
      const message = (payload: Uint8Array) =>
        new Message({ source: A, destination: B, lane: "readings", incarnation: Incarnation.make(1), seq: 1, payload })
      for (const payload of [new Uint8Array([0xc1]), new TextEncoder().encode("not msgpack of a reading")]) {
        const error = yield* Effect.flip(delivery.deliver(message(payload)))
        assert.strictEqual(error.permanent, true)
        assert.isTrue(ParseResult.isParseError(error.cause))
      }
    }))
})
