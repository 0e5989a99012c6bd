import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import * as PeerId from "@intersession/core/PeerId"
import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"

const alice = PeerId.make("alice")
const bob = PeerId.make("bob")
const encoder = new TextEncoder()
const decoder = new TextDecoder()

// Bob's ledger takes payments in euros only, until it learns dollars.
const ledger = (knowsDollars: Ref.Ref<boolean>) =>
  Delivery.Delivery.of({
    deliver: (message) =>
      Effect.gen(function*() {
        const payment = decoder.decode(message.payload)
        if (payment.endsWith("USD") && !(yield* Ref.get(knowsDollars))) {
          return yield* new Delivery.DeliveryError({ reason: `unknown currency in "${payment}"` })
        }
        yield* Console.log(`ledger: ${payment}`)
      })
  })

const main = Effect.gen(function*() {
  const network = yield* InMemoryNetwork.make()
  const knowsDollars = yield* Ref.make(false)
  const sender = Context.get(
    yield* Layer.build(
      ILM.layer().pipe(
        Layer.provide(Delivery.layerInbox()),
        Layer.provide(network.layer(alice)),
        Layer.provide(InMemoryBackend.layerFresh)
      )
    ),
    ILM.ILM
  )
  // Three attempts, 100 ms apart, on the payments lane; every other lane keeps the default: retry forever.
  const receiver = Context.get(
    yield* Layer.build(
      ILM.layer({
        lanePolicies: { payments: { attempts: 3, backoff: Schedule.spaced("100 millis") } }
      }).pipe(
        Layer.provide(Layer.succeed(Delivery.Delivery, ledger(knowsDollars))),
        Layer.provide(network.layer(bob)),
        Layer.provide(InMemoryBackend.layerFresh)
      )
    ),
    ILM.ILM
  )
  yield* receiver.events.pipe(
    Stream.filter((event) => event._tag === "DeadLettered"),
    Stream.runForEach((event) => Console.log(`dead letter: ${event.peer}/${event.lane} seq ${event.seq}`)),
    Effect.forkScoped
  )

  for (const payment of ["10 EUR", "25 USD", "7 EUR"]) {
    yield* sender.send(bob, encoder.encode(payment), { lane: "payments" })
  }
  // The lane went on past the payment it could not take: everything is acknowledged.
  yield* sender.drain("5 seconds")
  for (const letter of yield* receiver.deadLetters.list()) {
    yield* Console.log(`kept: "${decoder.decode(letter.payload)}" after ${letter.attempts} attempts: ${letter.error}`)
  }

  // Once the ledger knows dollars, replay it: delivered, and gone from the dead letters.
  yield* Ref.set(knowsDollars, true)
  const { replayed } = yield* receiver.deadLetters.replay({ lane: "payments" })
  yield* Console.log(`replayed ${replayed}; ${(yield* receiver.deadLetters.list()).length} dead letters left`)
})

// The engine logs every failed delivery as a warning; this example keeps its output to what it prints itself.
Effect.runPromise(Effect.scoped(main).pipe(Logger.withMinimumLogLevel(LogLevel.Error)))
