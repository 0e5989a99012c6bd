/**
 * Typed channels: a lane bound to a `Schema` that turns the application's values into payload bytes and back, so
 * that peers send and receive typed values instead of `Uint8Array`s.
 *
 * - A channel is a plain value: define each one once, next to its schema, and share that value between the code
 *   that sends and the code that receives. `json` encodes as JSON in UTF-8; `make` takes any
 *   `Schema<A, Uint8Array>`, such as `MsgPack.schema(schema)` from `@effect/platform/MsgPack`.
 * - `send` and `sendAll` encode with the channel's schema and call `ILM.send` / `ILM.sendAll` in the channel's lane.
 *   A value the schema cannot encode fails with `ChannelEncodeError`, and nothing is sent.
 * - `layerDelivery(channels)` provides the `Delivery` and the `Channels` it fills: each message is routed by its lane
 *   to its channel, decoded, and offered to that channel's queue; `messages(channel)` streams them as `Received`
 *   values. Messages of lanes without a channel go, as raw `Message`s, to `unrouted`.
 * - A payload that does not decode is refused for good (a `DeliveryError` with `permanent: true`): the engine moves
 *   it to the receiver's dead letters at once (`ilm.deadLetters.list({ lane })` shows it, with the parse error) and
 *   goes on with the lane. It is never a defect and never holds its lane up.
 *
 * **Schema evolution.** Messages are stored encoded, as bytes: in the sender's store until they are acknowledged,
 * and in the receiver's dead letters. A message is decoded with the schema of the receiver's channel at the moment
 * it is delivered, which may be a later version than the one that encoded it (across a restart, or when the peers
 * are upgraded one after the other). So:
 *
 * - An additive change decodes fine either way: a new optional field (`Schema.optional`, or one with a default)
 *   is absent in the older messages, and an older reader ignores a field it does not know (the default
 *   `onExcessProperty: "ignore"`).
 * - A breaking change — a required field removed, renamed or retyped, a narrower type — makes the messages encoded
 *   before it fail to decode: each goes to the receiver's dead letters, where the application can read its bytes,
 *   fix them up or purge them. Nothing is lost, but nothing is delivered either.
 * - For a breaking change, use a new lane: a versioned channel (`"orders.v2"`) next to the old one, both received
 *   until the old lane is drained (`ilm.drain`, `ilm.stats`), then the old channel removed. Order holds per lane,
 *   so messages of the two versions are not ordered with each other.
 *
 * @example
 * ```ts
 * import * as Channel from "@intersession/core/Channel"
 * import * as ILM from "@intersession/core/ILM"
 * import * as PeerId from "@intersession/core/PeerId"
 * import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
 * import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 * import * as Schema from "effect/Schema"
 * import * as Stream from "effect/Stream"
 *
 * // Channels are plain values: define each once and share it between the sending and the receiving code.
 * class Order extends Schema.Class<Order>("Order")({ id: Schema.Number, item: Schema.String }) {}
 * const orders = Channel.json("orders", Order)
 * const audit = Channel.json("audit", Schema.Struct({ note: Schema.String }))
 *
 * // A peer whose application receives through its channels (`provideMerge` keeps `Channels` in its context).
 * const peer = (hub: InMemoryNetwork.Hub, id: string) =>
 *   Layer.build(
 *     ILM.layer().pipe(
 *       Layer.provideMerge(Channel.layerDelivery([orders, audit])),
 *       Layer.provide(hub.layer(PeerId.make(id))),
 *       Layer.provide(InMemoryBackend.layerFresh)
 *     )
 *   )
 *
 * const program = Effect.gen(function*() {
 *   const hub = yield* InMemoryNetwork.make()
 *   const shop = yield* peer(hub, "shop")
 *   const warehouse = yield* peer(hub, "warehouse")
 *
 *   // The shop sends typed values; each channel encodes them and sends them in its own lane.
 *   yield* Effect.provide(
 *     Effect.all([
 *       Channel.send(orders, PeerId.make("warehouse"), new Order({ id: 1, item: "tea" })),
 *       Channel.send(audit, PeerId.make("warehouse"), { note: "order 1 placed" }),
 *       Channel.send(orders, PeerId.make("warehouse"), new Order({ id: 2, item: "cups" }))
 *     ]),
 *     shop
 *   )
 *
 *   // The warehouse receives them decoded, per channel, with where they came from.
 *   const received = yield* Channel.messages(orders).pipe(Stream.take(2), Stream.runCollect, Effect.provide(warehouse))
 *   for (const order of received) {
 *     console.log(`${order.source} ${order.lane} #${order.seq}: ${order.value.item}`)
 *   }
 *   // shop orders #1: tea
 *   // shop orders #2: cups
 *   const note = yield* Effect.provide(Channel.take(audit), warehouse)
 *   console.log(note.value.note) // order 1 placed
 * })
 *
 * Effect.runPromise(Effect.scoped(program))
 * ```
 *
 * @since 0.3.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ParseResult from "effect/ParseResult"
import * as Queue from "effect/Queue"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { Delivery, DeliveryError, fromQueue } from "./Delivery.js"
import * as ILM from "./ILM.js"
import { InvalidLaneError } from "./IlmError.js"
import type { Incarnation } from "./Incarnation.js"
import { isLane, type Lane } from "./Lane.js"
import { type Message, MessageId } from "./Message.js"
import type { PeerId } from "./PeerId.js"

/**
 * A lane bound to a schema between the application's values `A` and payload bytes.
 *
 * A channel is known by identity: `layerDelivery` and `messages` must be given the same value, so define each
 * channel once (a module constant) rather than building it again where it is used.
 *
 * The lane is checked where the channel is used, not when it is made, so that channels can be module constants
 * like the schemas they carry: `send` and `sendAll` fail with `InvalidLaneError`, and `layerDelivery` fails to
 * build with it, when the lane is not a valid lane name.
 *
 * @since 0.3.0
 * @category models
 */
export interface Channel<A> {
  readonly lane: string
  readonly schema: Schema.Schema<A, Uint8Array>
}

/**
 * Any channel, whatever its value type: what `layerDelivery` takes a list of.
 *
 * @since 0.3.0
 * @category models
 */
export interface Any {
  readonly lane: string
  readonly schema: Schema.Schema.AnyNoContext
}

/**
 * The value type of a channel.
 *
 * @since 0.3.0
 * @category models
 */
export type Type<C> = C extends Channel<infer A> ? A : never

/**
 * Binds a lane to a schema from the application's values to payload bytes, for instance
 * `Channel.make("orders", MsgPack.schema(Order))` with `@effect/platform/MsgPack`.
 *
 * `make` returns the channel itself rather than an `Effect` or an `Either`, so that a channel can be defined once
 * as a module constant; a lane name that is not valid fails with `InvalidLaneError` where the channel is first
 * used (`send`, `sendAll`, `layerDelivery`).
 *
 * @since 0.3.0
 * @category constructors
 */
export const make = <A>(lane: string, schema: Schema.Schema<A, Uint8Array>): Channel<A> => ({ lane, schema })

/** UTF-8 bytes ⇄ string; bytes that are not UTF-8 fail to decode. */
const Utf8: Schema.Schema<string, Uint8Array> = Schema.transformOrFail(Schema.Uint8ArrayFromSelf, Schema.String, {
  strict: true,
  decode: (bytes, _, ast) =>
    ParseResult.try({
      try: () => new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes),
      catch: () => new ParseResult.Type(ast, bytes, "the payload is not UTF-8 text")
    }),
  encode: (text) => ParseResult.succeed(new TextEncoder().encode(text))
})

/**
 * A channel whose values travel as JSON text in UTF-8: `schema` encodes a value to JSON-compatible data
 * (`Schema.parseJson(schema)`), and that is written out as UTF-8 bytes. A payload that is not UTF-8, not JSON or
 * not of the schema fails to decode.
 *
 * @since 0.3.0
 * @category constructors
 */
export const json = <A, I>(lane: string, schema: Schema.Schema<A, I>): Channel<A> =>
  make(lane, Schema.compose(Utf8, Schema.parseJson(schema)))

/**
 * A message received in a channel: its decoded `value`, who sent it to whom, its lane and its place in the stream
 * (`seq` under the sender's `incarnation`). `id` is the `MessageId` the sender's `send` returned for it.
 *
 * @since 0.3.0
 * @category models
 */
export interface Received<A> {
  readonly value: A
  readonly source: PeerId
  readonly destination: PeerId
  readonly lane: Lane
  readonly incarnation: Incarnation
  readonly seq: number
  readonly id: MessageId
}

/**
 * A channel's schema could not encode a value, so nothing was sent. `cause` holds the `ParseError`; `index` is the
 * value's position in `sendAll`'s list.
 *
 * @since 0.3.0
 * @category errors
 */
export class ChannelEncodeError extends Data.TaggedError("ChannelEncodeError")<{
  readonly lane: string
  readonly cause: ParseResult.ParseError
  readonly index?: number | undefined
}> {
  override get message(): string {
    const which = this.index === undefined ? "a value" : `value #${this.index}`
    return `Channel ${JSON.stringify(this.lane)} could not encode ${which}, so nothing was sent: ` +
      ParseResult.TreeFormatter.formatErrorSync(this.cause)
  }
}

/**
 * The channels of `layerDelivery` do not fit together: two different channels share a lane (`"LaneTaken"`), or
 * `messages` or `take` was given a channel that is not one of them (`"NotRegistered"`; a channel is known by
 * identity, so pass the same value to both).
 *
 * @since 0.3.0
 * @category errors
 */
export class ChannelRegistryError extends Data.TaggedError("ChannelRegistryError")<{
  readonly lane: string
  readonly reason: "LaneTaken" | "NotRegistered"
}> {
  override get message(): string {
    const lane = JSON.stringify(this.lane.slice(0, 40))
    return this.reason === "LaneTaken"
      ? `Two different channels have lane ${lane}: give each lane one channel, defined once`
      : `Channel ${lane} is not one of Channel.layerDelivery's channels: pass it the same channel value`
  }
}

/**
 * The received messages of a {@link layerDelivery}: per channel, decoded, and the raw messages of lanes that have
 * no channel (`unrouted`). Each queue has one set of messages: several consumers of one stream share them out.
 *
 * @since 0.3.0
 * @category tags
 */
export class Channels extends Context.Tag("@intersession/core/Channel/Channels")<Channels, {
  readonly messages: <A>(channel: Channel<A>) => Stream.Stream<Received<A>, ChannelRegistryError>
  readonly take: <A>(channel: Channel<A>) => Effect.Effect<Received<A>, ChannelRegistryError>
  readonly unrouted: Stream.Stream<Message>
  readonly takeUnrouted: Effect.Effect<Message>
}>() {}

/**
 * The messages of a channel, decoded, in the order of each stream (one sender's lane); those of different senders
 * interleave.
 *
 * @since 0.3.0
 * @category accessors
 */
export const messages = <A>(channel: Channel<A>): Stream.Stream<Received<A>, ChannelRegistryError, Channels> =>
  Stream.unwrap(Effect.map(Channels, (channels) => channels.messages(channel)))

/**
 * The next message of a channel, decoded.
 *
 * @since 0.3.0
 * @category accessors
 */
export const take = <A>(channel: Channel<A>): Effect.Effect<Received<A>, ChannelRegistryError, Channels> =>
  Effect.flatMap(Channels, (channels) => channels.take(channel))

/**
 * The raw messages of lanes that have no channel.
 *
 * @since 0.3.0
 * @category accessors
 */
export const unrouted: Stream.Stream<Message, never, Channels> = Stream.unwrap(
  Effect.map(Channels, (channels) => channels.unrouted)
)

const checkLane = (lane: string): Effect.Effect<void, InvalidLaneError> =>
  isLane(lane) ? Effect.void : Effect.fail(new InvalidLaneError({ lane }))

const encode = <A>(channel: Channel<A>, value: A, index?: number): Effect.Effect<Uint8Array, ChannelEncodeError> =>
  Effect.mapError(
    Schema.encode(channel.schema)(value),
    (cause) => new ChannelEncodeError({ lane: channel.lane, cause, index })
  )

/**
 * The options of `send` and `sendAll`: `ILM.SendOptions` without the lane, which is the channel's.
 *
 * @since 0.3.0
 * @category models
 */
export type SendOptions = Omit<ILM.SendOptions, "lane">

/**
 * Encodes a value with the channel's schema and sends it in the channel's lane with `ILM.send`: it resolves with
 * the message's id once the message is stored. A value the schema cannot encode fails with `ChannelEncodeError`
 * and sends nothing.
 *
 * @since 0.3.0
 * @category sending
 */
export const send = <A>(
  channel: Channel<A>,
  to: PeerId,
  value: A,
  options?: SendOptions
): Effect.Effect<MessageId, ChannelEncodeError | ILM.SendError, ILM.ILM> =>
  checkLane(channel.lane).pipe(
    Effect.zipRight(encode(channel, value)),
    Effect.flatMap((payload) =>
      Effect.flatMap(ILM.ILM, (ilm) => ilm.send(to, payload, { ...options, lane: channel.lane }))
    ),
    Effect.withSpan("Channel.send", { attributes: { lane: channel.lane } })
  )

/**
 * Encodes several values with the channel's schema and stores them with `ILM.sendAll`: all of them in one step, in
 * order, or none. If one does not encode, it fails with `ChannelEncodeError` (whose `index` says which) and sends
 * none.
 *
 * @since 0.3.0
 * @category sending
 */
export const sendAll = <A>(
  channel: Channel<A>,
  to: PeerId,
  values: Iterable<A>,
  options?: SendOptions
): Effect.Effect<ReadonlyArray<MessageId>, ChannelEncodeError | ILM.SendError, ILM.ILM> =>
  checkLane(channel.lane).pipe(
    Effect.zipRight(Effect.forEach(values, (value, index) => encode(channel, value, index))),
    Effect.flatMap((payloads) =>
      Effect.flatMap(ILM.ILM, (ilm) => ilm.sendAll(to, payloads, { ...options, lane: channel.lane }))
    ),
    Effect.withSpan("Channel.sendAll", { attributes: { lane: channel.lane } })
  )

/** A dead letter keeps the delivery's reason: a parse error that quotes a huge payload is cut short. */
const maxReason = 1000

const cut = (text: string): string => text.length <= maxReason ? text : `${text.slice(0, maxReason - 1)}…`

const offer = <A>(queue: Queue.Enqueue<A>, value: A, lane: string): Effect.Effect<void, DeliveryError> =>
  Effect.flatMap(
    queue.isShutdown,
    (shutdown) =>
      shutdown
        ? Effect.fail(new DeliveryError({ reason: `the queue of channel ${JSON.stringify(lane)} is shut down` }))
        : Effect.asVoid(Queue.offer(queue, value))
  )

interface Route {
  readonly channel: Any
  readonly queue: Queue.Queue<Received<unknown>>
}

/**
 * Decodes a message's payload with its channel's schema. A payload that does not decode, or on which the schema
 * throws (it is the remote peer's input), is refused for good; it never becomes a defect.
 */
const decode = (route: Route, message: Message): Effect.Effect<Received<unknown>, DeliveryError> => {
  const where = `${message.source}/${message.lane} #${message.seq}`
  return Effect.suspend(() => Schema.decode(route.channel.schema)(message.payload)).pipe(
    Effect.mapError((cause) =>
      new DeliveryError({
        reason: cut(
          `the payload of ${where} does not decode with channel ${JSON.stringify(route.channel.lane)}'s schema: ` +
            ParseResult.TreeFormatter.formatErrorSync(cause)
        ),
        cause,
        permanent: true
      })
    ),
    Effect.catchAllDefect((defect) =>
      Effect.fail(
        new DeliveryError({
          reason: cut(`channel ${JSON.stringify(route.channel.lane)}'s schema threw on the payload of ${where}`),
          cause: defect,
          permanent: true
        })
      )
    ),
    Effect.map((value): Received<unknown> => ({
      value,
      source: message.source,
      destination: message.destination,
      lane: message.lane,
      incarnation: message.incarnation,
      seq: message.seq,
      id: new MessageId({
        destination: message.destination,
        lane: message.lane,
        incarnation: message.incarnation,
        seq: message.seq
      }, { disableValidation: true })
    }))
  )
}

/**
 * Provides a `Delivery` that routes each message by its lane to its channel, and the `Channels` it fills.
 *
 * - A message of a channel's lane is decoded with the channel's schema and offered to the channel's queue
 *   (`messages`, `take`). A payload that does not decode fails the delivery with a `DeliveryError` marked
 *   `permanent`, whose `reason` is the parse error: the engine moves the message to the dead letters at once and
 *   goes on with the lane.
 * - A message of a lane without a channel is offered, raw, to the `unrouted` queue, as `Delivery.layerInbox` would:
 *   nothing is dropped or dead-lettered behind the application's back, and lanes can move to channels one at a
 *   time. Consume `unrouted` if such lanes may arrive: when its queue is full, their messages wait (the other
 *   lanes go on).
 *
 * `capacity` bounds each queue (1,024 by default); when a channel's queue is full, the deliveries of its lane wait,
 * and so do its senders. As with `Delivery.layerInbox`, a message counts as delivered once it is in the queue. The
 * layer fails with `InvalidLaneError` for a channel whose lane is not valid, and with `ChannelRegistryError` when
 * two different channels have one lane (the same channel listed twice is fine).
 *
 * @since 0.3.0
 * @category layers
 */
export const layerDelivery = (
  channels: Iterable<Any>,
  options?: { readonly capacity?: number | undefined }
): Layer.Layer<Delivery | Channels, InvalidLaneError | ChannelRegistryError> =>
  Layer.scopedContext(Effect.gen(function*() {
    const capacity = options?.capacity ?? 1024
    const bounded = <A>() => Effect.acquireRelease(Queue.bounded<A>(capacity), Queue.shutdown)
    const routes = new Map<string, Route>()
    for (const channel of channels) {
      yield* checkLane(channel.lane)
      const taken = routes.get(channel.lane)
      if (taken !== undefined) {
        if (taken.channel === channel) continue
        return yield* new ChannelRegistryError({ lane: channel.lane, reason: "LaneTaken" })
      }
      routes.set(channel.lane, { channel, queue: yield* bounded<Received<unknown>>() })
    }
    const unrouted = yield* bounded<Message>()
    const toUnrouted = fromQueue(unrouted)

    const queueOf = <A>(channel: Channel<A>): Effect.Effect<Queue.Dequeue<Received<A>>, ChannelRegistryError> => {
      const route = routes.get(channel.lane)
      // The route was made from this very channel value, so the values in its queue are the channel's `A`s.
      return route !== undefined && route.channel === channel
        ? Effect.succeed(route.queue as Queue.Dequeue<Received<A>>)
        : Effect.fail(new ChannelRegistryError({ lane: channel.lane, reason: "NotRegistered" }))
    }

    const delivery = Delivery.of({
      deliver: (message) => {
        const route = routes.get(message.lane)
        return route === undefined
          ? toUnrouted.deliver(message)
          : Effect.flatMap(decode(route, message), (received) => offer(route.queue, received, message.lane))
      }
    })
    return Context.make(Delivery, delivery).pipe(
      Context.add(
        Channels,
        Channels.of({
          messages: (channel) => Stream.unwrap(Effect.map(queueOf(channel), (queue) => Stream.fromQueue(queue))),
          take: (channel) => Effect.flatMap(queueOf(channel), Queue.take),
          unrouted: Stream.fromQueue(unrouted),
          takeUnrouted: Queue.take(unrouted)
        })
      )
    )
  }))
