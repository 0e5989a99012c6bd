/**
 * The page: runs the tab's engine (`engine.ts`), shows what it sent and what arrived, and offers the same to the
 * browser tests through `window.example`. `?peer=browser-…` picks the tab's peer id (else one kept in
 * `localStorage`), and `?token=…` a credential instead of one from the server's `/token`.
 */
import * as ILM from "@intersession/core/ILM"
import * as PeerId from "@intersession/core/PeerId"
import * as IndexedDbBackend from "@intersession/platform-browser/IndexedDbBackend"
import * as WebSocketNetwork from "@intersession/platform-browser/WebSocketNetwork"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Stream from "effect/Stream"
import { tab } from "./engine.js"

const params = new URLSearchParams(location.search)
const me = PeerId.make(
  params.get("peer") ?? localStorage.getItem("intersession-example-peer") ??
    `browser-${crypto.randomUUID().slice(0, 8)}`
)
localStorage.setItem("intersession-example-peer", me)
const wsUrl = params.get("ws") ?? `ws://${location.hostname}:${Number(location.port) + 1}/intersession`
const fixedToken = params.get("token")

const credential = fixedToken !== null
  ? Effect.succeed(fixedToken)
  : Effect.tryPromise(() =>
    fetch(`/token?peer=${encodeURIComponent(me)}`).then((response) => response.json() as Promise<{ token: string }>)
  ).pipe(Effect.map(({ token }) => token))

const runtime = ManagedRuntime.make(tab(me, wsUrl, credential).pipe(Layer.orDie))
const encoder = new TextEncoder()

const element = (id: string) => document.getElementById(id)!
element("me").textContent = me

const isRecord = (value: unknown): value is { readonly seq: number; readonly text: string } =>
  typeof value === "object" && value !== null && "seq" in value && "text" in value &&
  typeof value.seq === "number" && typeof value.text === "string"

/** What the tab was given: per lane, in the order it was given them (the records' key order). */
const records = Effect.flatMap(IndexedDbBackend.Records, (store) => store.list()).pipe(
  Effect.map((list) =>
    list.flatMap(({ key, value }) =>
      Array.isArray(key) && typeof key[0] === "string" && isRecord(value)
        ? [{ lane: key[0], seq: value.seq, text: value.text }]
        : []
    )
  )
)

const sentHere: Array<string> = []

const show = Effect.gen(function*() {
  const received = yield* records
  element("received").replaceChildren(
    ...received.slice(-200).map(({ lane, seq, text }) =>
      Object.assign(document.createElement("li"), {
        textContent: `${lane} #${seq}: ${text}`
      })
    )
  )
  element("received-count").textContent = `(${received.length})`
  const stats = yield* Effect.flatMap(ILM.ILM, (ilm) => ilm.stats)
  const pending = stats.outbound.reduce((sum, stream) => sum + stream.pending, 0)
  element("sent").replaceChildren(
    ...sentHere.slice(-200).map((text) => Object.assign(document.createElement("li"), { textContent: text }))
  )
  element("sent-count").textContent = `(${sentHere.length} in this page's life; ${pending} not yet acknowledged)`
})

const send = (lane: string, texts: ReadonlyArray<string>) =>
  Effect.flatMap(
    ILM.ILM,
    (ilm) =>
      Effect.map(ilm.sendAll(PeerId.make("server"), texts.map((text) => encoder.encode(text)), { lane }), (ids) => {
        sentHere.push(...texts)
        return ids.length
      })
  )

// The status line, and the lists again whenever something changes.
runtime.runFork(
  Effect.flatMap(
    WebSocketNetwork.ConnectionStatus,
    (status) =>
      Stream.runForEach(status.changes, (current) =>
        Effect.sync(() => {
          const line = element("status")
          line.className = current._tag.toLowerCase()
          line.textContent = WebSocketNetwork.Status.$match(current, {
            Connecting: ({ attempt }) => `connecting (attempt ${attempt})`,
            Connected: ({ server }) => `connected to ${server}`,
            Disconnected: ({ reason, retryIn }) => `disconnected (${reason}), retrying in ${Duration.format(retryIn)}`,
            Refused: ({ detail, reason }) => `refused: ${reason} (${detail})`
          })
        }))
  )
)
runtime.runFork(Effect.forever(Effect.zipRight(show, Effect.sleep("200 millis"))))

element("chat").addEventListener("submit", (event) => {
  event.preventDefault()
  const input = element("text") as HTMLInputElement
  if (input.value === "") return
  void runtime.runPromise(send("chat", [input.value]))
  input.value = ""
})
let burst = 0
element("burst").addEventListener("click", () => {
  const from = burst
  burst += 100
  void runtime.runPromise(send("burst", Array.from({ length: 100 }, (_, i) => `burst ${from + i + 1}`)))
})

/** What the browser tests drive. */
const example = {
  me,
  ready: runtime.runPromise(ILM.ILM).then(() => true),
  status: () => element("status").textContent,
  send: (lane: string, texts: ReadonlyArray<string>) => runtime.runPromise(send(lane, texts)),
  records: () => runtime.runPromise(records),
  pending: () =>
    runtime.runPromise(
      Effect.flatMap(ILM.ILM, (ilm) =>
        Effect.map(ilm.stats, (stats) => stats.outbound.reduce((sum, stream) => sum + stream.pending, 0)))
    )
}
Object.assign(globalThis, { example })
