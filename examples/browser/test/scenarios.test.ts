/**
 * The example app in a real Chromium (Debian's, driven by playwright-core), against its Node peer in a child
 * process: a reload mid-stream both ways, an offline period, a `kill -9` of the Node peer, two tabs on one store and a
 * refused token. Each scenario ends with what each side recorded: the server's table of what it was given from the
 * tab, and the tab's records (kept in its IndexedDB store with its receive state, in the order it was given them).
 * Nothing may be missing, doubled or out of order.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import type { Browser, BrowserContext } from "playwright-core"
import { chromiumMissing, launch, onLane, Server, shots, sleep, Tab, texts, until } from "./kit.js"

/**
 * Large enough that each transfer is still going when a scenario interrupts it: what the tab sends (it stores sends
 * faster than the server takes them, each batch waiting for the server's SQLite commit), and what the server sends.
 */
const upCount = 20_000
const downCount = 10_000
/** Each way, where nothing interrupts the streams. */
const count = 3000

if (chromiumMissing !== undefined) {
  // `pnpm test` must not pass without the browser scenarios.
  describe("the browser example", () => {
    it("needs Chromium", () => {
      assert.fail(chromiumMissing)
    })
  })
} else {
  describe("the browser example", () => {
    let browser: Browser
    let server: Server
    beforeAll(async () => {
      browser = await launch()
      server = await Server.start()
    })
    afterAll(async () => {
      await browser?.close()
      await server?.stop()
    })

    /** Waits until both sides have everything, and checks it is each message once, in order. */
    const complete = async (tab: Tab, up: ReadonlyArray<string>, down: ReadonlyArray<string>, lane: string) => {
      const received = await until("the server to have everything", async () => {
        const got = await server.received(tab.peer, lane)
        return got.length >= up.length ? got : undefined
      })
      const recorded = await until("the tab to have everything", async () => {
        const got = onLane(await tab.records(), lane)
        return got.length >= down.length ? got : undefined
      })
      // A moment more, for anything given twice to show.
      await sleep(500)
      assert.deepStrictEqual(await server.received(tab.peer, lane), up)
      assert.deepStrictEqual(received, up)
      assert.deepStrictEqual(onLane(await tab.records(), lane), down)
      assert.deepStrictEqual(recorded, down)
    }

    /**
     * Opens a tab for `peer`, starts `upCount` messages from it and `downCount` to it on `lane`, and returns once both
     * streams are under way and neither is done: the server has some of the tab's, the tab still holds some the
     * server has not acknowledged, and it has some, not all, of the server's. Polled every 10 ms.
     */
    const bothWaysUnderWay = async (context: BrowserContext, peer: string, lane: string) => {
      const tab = await Tab.open(context, server, peer)
      await tab.ready()
      const up = texts("p", 1, upCount)
      const down = texts("s", 1, downCount)
      await tab.send(lane, up)
      await server.send(tab.peer, lane, 1, downCount)
      const before = await until(
        "both directions under way",
        async () => {
          const [atServer, atTab, pending] = [
            (await server.received(tab.peer, lane)).length,
            onLane(await tab.records(), lane).length,
            await tab.pending()
          ]
          return atServer > 0 && atTab > 0 && atTab < downCount && pending > 0
            ? { atServer, atTab, pending }
            : undefined
        },
        60_000,
        10
      )
      return { tab, up, down, before }
    }

    it("a reload in the middle of a stream, both ways, loses and repeats nothing", async () => {
      const context = await browser.newContext()
      const { before, down, tab, up } = await bothWaysUnderWay(context, "browser-reload", "reload")
      if (shots !== undefined) await tab.page.screenshot({ path: `${shots}/before-reload.png` })
      await tab.reload()
      await tab.ready()
      const after = { pending: await tab.pending(), atTab: onLane(await tab.records(), "reload").length }
      if (shots !== undefined) await tab.page.screenshot({ path: `${shots}/just-after-reload.png` })
      console.log(
        `reload: before it, the server had ${before.atServer} of ${upCount}, the tab ${before.atTab} of ${downCount} ` +
          `and ${before.pending} of its own unacknowledged; once the page was back, ${after.pending} unacknowledged ` +
          `(read from its store) and ${after.atTab} received`
      )
      // The page that came back had both streams still to finish: its own unacknowledged messages, read from its
      // store, and more of the server's.
      assert.isAbove(after.pending, 0, "the reload came after the stream to the server ended")
      assert.isBelow(after.atTab, downCount, "the reload came after the stream to the tab ended")
      await complete(tab, up, down, "reload")
      if (shots !== undefined) await tab.page.screenshot({ path: `${shots}/after-reload.png` })
      await context.close()
    })

    it("offline for a while: what is sent meanwhile is kept both ways and arrives once back online", async () => {
      const context = await browser.newContext()
      const tab = await Tab.open(context, server, "browser-offline")
      await tab.ready()
      await until("the tab to connect", async () => (await tab.status()).startsWith("connected") ? true : undefined)
      await context.setOffline(true)
      await until(
        "the tab to see it is offline",
        async () => (await tab.status()).startsWith("disconnected") ? true : undefined
      )
      const up = texts("p", 1, 500)
      const down = texts("s", 1, 500)
      await tab.send("offline", up)
      await server.send(tab.peer, "offline", 1, 500)
      await sleep(2000)
      // Nothing crossed while offline.
      assert.deepStrictEqual(await server.received(tab.peer, "offline"), [])
      assert.deepStrictEqual(onLane(await tab.records(), "offline"), [])
      await context.setOffline(false)
      await complete(tab, up, down, "offline")
      await context.close()
    })

    it("kill -9 of the Node peer mid-stream, then a restart on the same store: everything arrives once", async () => {
      const context = await browser.newContext()
      const { before, down, tab, up } = await bothWaysUnderWay(context, "browser-kill", "kill")
      await server.kill()
      const atKill = {
        atServer: server.receivedOffline(tab.peer, "kill").length,
        atTab: onLane(await tab.records(), "kill").length
      }
      await sleep(1000)
      await server.spawn()
      console.log(
        `kill -9: before it, the server had ${before.atServer} of ${upCount} and the tab ${before.atTab} of ${downCount}; ` +
          `once it was dead, ${atKill.atServer} and ${atKill.atTab}`
      )
      assert.isBelow(atKill.atServer, upCount, "the kill came after the stream to the server ended")
      assert.isBelow(atKill.atTab, downCount, "the kill came after the stream to the tab ended")
      await complete(tab, up, down, "kill")
      await context.close()
    })

    it("two tabs on one store: the second waits for the first, then takes over its streams", async () => {
      const context = await browser.newContext()
      const first = await Tab.open(context, server, "browser-twotabs")
      await first.ready()
      const second = await Tab.open(context, server, "browser-twotabs")
      const secondReady = second.ready()
      const up = texts("p", 1, count)
      const down = texts("s", 1, count)
      await first.send("tabs", up)
      await server.send(first.peer, "tabs", 1, count)
      await until(
        "the first tab to be under way",
        async () => onLane(await first.records(), "tabs").length > 0 ? true : undefined
      )
      // The second tab has not opened the store: its engine waits for the first tab's Web Lock.
      assert.strictEqual(
        await Promise.race([secondReady.then(() => "ready"), sleep(300).then(() => "waiting")]),
        "waiting"
      )
      await first.page.close()
      await secondReady
      await complete(second, up, down, "tabs")
      await context.close()
    })

    it("a token the verifier refuses: the tab is told so, and nothing of it reaches the server", async () => {
      const context = await browser.newContext()
      const tab = await Tab.open(context, server, "browser-refused", "&token=browser-refused.not-a-signature")
      await tab.ready()
      await tab.send("refused", ["never delivered"])
      const status = await until("the refusal", async () => {
        const line = await tab.status()
        return line.startsWith("refused") ? line : undefined
      })
      assert.include(status, "Unauthorized")
      await sleep(1000)
      assert.deepStrictEqual(await server.received(tab.peer, "refused"), [])
      // It stays stored in the tab, for a tab with a valid token.
      assert.strictEqual(await tab.pending(), 1)
      await context.close()
    })
  })
}
