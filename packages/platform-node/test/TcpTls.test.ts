/**
 * `TcpNetwork` with TLS and mutual authentication. A throwaway CA, two peer certificates, and a rogue CA with its
 * own certificate are made with the `openssl` command-line tool at the start; without it the tests are skipped.
 */
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import { assert, describe, it } from "@effect/vitest"
import * as PeerId from "@intersession/core/PeerId"
import * as NetworkSuite from "@intersession/testing/NetworkSuite"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as NodeTls from "node:tls"
import * as Tls from "../src/internal/tls.js"
import * as TcpNetwork from "../src/TcpNetwork.js"
import * as NetKit from "./NetKit.js"

interface Material {
  readonly ca: string
  readonly peers: { readonly a: TcpNetwork.TlsOptions; readonly b: TcpNetwork.TlsOptions }
  /** A certificate from another CA, trusting the deployment's CA. */
  readonly rogue: TcpNetwork.TlsOptions
}

const openssl = (cwd: string, args: ReadonlyArray<string>) =>
  ChildProcess.execFileSync("openssl", args, { cwd, stdio: "pipe" })

const newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

/** Makes the certificates, or says why it cannot. */
const makeMaterial = (): { readonly material: Material } | { readonly skip: string } => {
  try {
    openssl(Os.tmpdir(), ["version"])
  } catch (cause) {
    return { skip: `the openssl command-line tool is not available: ${String(cause)}` }
  }
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "intersession-tls-"))
  try {
    const read = (file: string) => Fs.readFileSync(Path.join(dir, file), "utf8")
    const ca = (name: string) =>
      openssl(dir, [
        "req",
        "-x509",
        ...newKey,
        "-keyout",
        `${name}.key`,
        "-out",
        `${name}.crt`,
        "-days",
        "1",
        "-subj",
        `/CN=${name}`
      ])
    const leaf = (name: string, issuer: string, serial: number) => {
      openssl(dir, ["req", ...newKey, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`])
      openssl(dir, [
        "x509",
        "-req",
        "-in",
        `${name}.csr`,
        "-CA",
        `${issuer}.crt`,
        "-CAkey",
        `${issuer}.key`,
        "-set_serial",
        String(serial),
        "-days",
        "1",
        "-out",
        `${name}.crt`
      ])
    }
    ca("test-ca")
    ca("rogue-ca")
    leaf("peer-a", "test-ca", 1)
    leaf("peer-b", "test-ca", 2)
    leaf("rogue", "rogue-ca", 3)
    const caPem = read("test-ca.crt")
    const peer = (name: string) => ({ key: read(`${name}.key`), cert: read(`${name}.crt`), ca: caPem })
    return {
      material: {
        ca: caPem,
        peers: { a: peer("peer-a"), b: peer("peer-b") },
        rogue: { key: read("rogue.key"), cert: read("rogue.crt"), ca: caPem }
      }
    }
  } catch (cause) {
    return { skip: `openssl could not make the test certificates: ${String(cause)}` }
  } finally {
    Fs.rmSync(dir, { recursive: true, force: true })
  }
}

const made = makeMaterial()
if ("skip" in made) console.log(`TcpTls tests skipped: ${made.skip}`)

const A = PeerId.make("peer-a")
const B = PeerId.make("peer-b")
const C = PeerId.make("peer-c")

/** A kit whose peers use `tls` (plain TCP when undefined). */
const kitWith = (name: string, tls: (peer: PeerId.PeerId) => TcpNetwork.TlsOptions | undefined): NetKit.Kit<
  TcpNetwork.Address
> => ({
  name,
  address: (port) => ({ host: "127.0.0.1", port }),
  make: (options) => {
    const material = tls(options.peer)
    return Effect.map(
      TcpNetwork.make({
        ...options.settings,
        peer: options.peer,
        listen: { host: "127.0.0.1", port: options.port },
        peers: options.book,
        key: options.key ?? NetKit.key,
        ...(material === undefined ? {} : { tls: material })
      }),
      (network) => ({ ...network, port: network.address.port })
    )
  },
  connect: (port) => {
    const material = tls(A)
    if (material === undefined) return NodeSocket.makeNet({ host: "127.0.0.1", port })
    const credentials = Tls.credentials(material)
    return credentials._tag === "Left"
      ? Effect.fail(new Error(credentials.left))
      : Tls.dial({ host: "127.0.0.1", port }, credentials.right, Duration.seconds(5))
  }
})

const test = (title: string, body: (logs: NetKit.LogTap) => Effect.Effect<void, unknown, Scope.Scope>) =>
  it.live(title, () => {
    const logs = NetKit.makeLogTap()
    return Effect.provide(Effect.scoped(Effect.suspend(() => body(logs))), logs.layer)
  }, 15_000)

/** A TLS client with no certificate of its own: resolves once the peer on `port` has closed it. */
const clientWithoutCertificate = (port: number, ca: string) =>
  Effect.async<string>((resume) => {
    const socket = NodeTls.connect({ host: "127.0.0.1", port, ca, checkServerIdentity: () => undefined })
    let error = "none"
    socket.on("error", (cause) => {
      error = cause.message
    })
    socket.on("close", () => resume(Effect.succeed(error)))
    return Effect.sync(() => socket.destroy())
  }).pipe(
    Effect.timeoutFail({
      duration: NetKit.limit,
      onTimeout: () => new Error("the client without a certificate stayed")
    })
  )

const isTlsRefusal = (local: PeerId.PeerId) => NetKit.reason("TlsHandshake", local)

/** An attempt of `local` to reach `peer` ended: its dial or its handshake failed. */
const dialFailed = (local: PeerId.PeerId, peer: PeerId.PeerId) => (record: NetKit.LogRecord) =>
  record.annotations["local"] === local && record.annotations["peer"] === peer &&
  (record.message.startsWith("dial failed") || record.message.startsWith("handshake failed"))

/** Whether `other` was ever in `peer`'s `connected`, from its start until now. */
const everSaw = (peer: NetKit.Peer, other: PeerId.PeerId) => peer.history.some((peers) => peers.includes(other))

if ("material" in made) {
  const { material } = made
  const peerTls = (peer: PeerId.PeerId) => peer === A ? material.peers.a : material.peers.b
  const tlsKit = kitWith("TcpNetwork over TLS", peerTls)
  const mixedKit = kitWith(
    "TcpNetwork, mixed",
    (peer) => peer === C ? undefined : peerTls(peer)
  )
  const rogueKit = kitWith("TcpNetwork, rogue", (peer) => peer === C ? material.rogue : peerTls(peer))

  NetworkSuite.networkSuite("TcpNetwork over TLS", NetKit.fixture(tlsKit), { raw: true })

  describe("TcpNetwork over TLS", () => {
    test("two TLS peers connect and exchange frames both ways", () =>
      Effect.gen(function*() {
        const { book, port } = yield* NetKit.bookFor(tlsKit, [A, B])
        const a = yield* NetKit.startPeer(tlsKit, { peer: A, port: port(A), book })
        const b = yield* NetKit.startPeer(tlsKit, { peer: B, port: port(B), book })
        yield* NetKit.awaitMesh([a, b])
        yield* NetKit.exchange(a, b, "over TLS", 5)
        const [connection] = yield* NetKit.connectionTo(a, B)
        assert.isDefined(connection)
      }))

    test("a client without a certificate, and a peer with a certificate of another CA, are refused", (logs) =>
      Effect.gen(function*() {
        const { book, port } = yield* NetKit.bookFor(rogueKit, [A, B, C])
        const a = yield* NetKit.startPeer(rogueKit, { peer: A, port: port(A), book })
        const b = yield* NetKit.startPeer(rogueKit, { peer: B, port: port(B), book })
        yield* NetKit.awaitMesh([a, b])
        const [before] = yield* NetKit.connectionTo(a, B)

        const mark = logs.mark()
        const error = yield* clientWithoutCertificate(port(A), material.ca)
        assert.notStrictEqual(error, "", "the client saw why it was closed")
        yield* logs.waitFor("A refuses the client without a certificate", isTlsRefusal(A), mark)

        // The rogue holds the pre-shared key and is in the book, but its certificate is from another CA. Every
        // attempt, in each direction, ends refused; and no peer ever saw the rogue connected, nor the rogue them.
        const refusedBefore = (yield* a.network.handshakes).failed["TlsHandshake"] ?? 0
        const rogue = yield* NetKit.startPeer(rogueKit, { peer: C, port: port(C), book })
        const dialsEnded = logs.mark()
        yield* logs.waitFor("A refuses the rogue", isTlsRefusal(A), dialsEnded)
        yield* logs.waitFor("B refuses the rogue", isTlsRefusal(B), dialsEnded)
        for (const [from, to] of [[C, A], [C, B], [A, C], [B, C]] as const) {
          yield* logs.waitFor(`${from}'s dial of ${to} fails`, dialFailed(from, to), dialsEnded)
        }
        assert.isAbove((yield* a.network.handshakes).failed["TlsHandshake"] ?? 0, refusedBefore, "A counted it")
        assert.isFalse(everSaw(rogue, A) || everSaw(rogue, B), "the rogue never saw A or B connected")
        assert.isFalse(everSaw(a, C), "A never saw the rogue connected")
        assert.isFalse(everSaw(b, C), "B never saw the rogue connected")

        // The legitimate peers kept their connection and still exchange frames.
        yield* NetKit.exchange(a, b, "after the refusals")
        const [after] = yield* NetKit.connectionTo(a, B)
        assert.strictEqual(after?.id, before?.id)
        assert.isFalse(NetKit.flapped(a, B))
        assert.isFalse(NetKit.flapped(b, A))
      }))

    test("a plain TCP peer cannot connect to a TLS peer, either way", (logs) =>
      Effect.gen(function*() {
        const { book, port } = yield* NetKit.bookFor(mixedKit, [A, C])
        const mark = logs.mark()
        const a = yield* NetKit.startPeer(mixedKit, { peer: A, port: port(A), book })
        const plain = yield* NetKit.startPeer(mixedKit, { peer: C, port: port(C), book })
        yield* logs.waitFor("A refuses the plain TCP client", isTlsRefusal(A), mark)
        yield* logs.waitFor("the plain peer's dial of A fails", dialFailed(C, A), mark)
        yield* logs.waitFor("A's dial of the plain peer fails", dialFailed(A, C), mark)
        // The plain peer took A's TLS bytes for a frame of no sense, and said so.
        const refusedByPlain = (yield* plain.network.handshakes).failed
        assert.isAtLeast((refusedByPlain["FrameTooLarge"] ?? 0) + (refusedByPlain["Malformed"] ?? 0), 1)
        assert.isAtLeast((yield* a.network.handshakes).failed["TlsHandshake"] ?? 0, 1, "A counted its refusal")
        assert.isFalse(everSaw(a, C), "A never saw the plain peer connected")
        assert.isFalse(everSaw(plain, A), "the plain peer never saw A connected")
      }))

    test("connections in their TLS handshake count against the caps; one more is destroyed at once", (logs) =>
      Effect.gen(function*() {
        const { book, port } = yield* NetKit.bookFor(tlsKit, [A, B])
        const settings = {
          ...NetKit.fast,
          // Long enough that no waiting client is timed out during the test.
          handshakeTimeout: Duration.seconds(30),
          maxUnauthenticatedPerAddress: 2
        }
        const a = yield* NetKit.startPeer(tlsKit, { peer: A, port: port(A), book, settings })
        const b = yield* NetKit.startPeer(tlsKit, { peer: B, port: port(B), book })
        yield* NetKit.awaitMesh([a, b])
        // Clients that open TCP and never start TLS.
        const waiting = yield* Effect.forEach(["127.0.0.2", "127.0.0.2"], (from) => NetKit.plainClient(port(A), from))
        yield* NetKit.awaitHandshakes(a, "2 pending", (stats) => stats.pending === 2)
        const mark = logs.mark()
        for (let i = 0; i < 3; i++) {
          const over = yield* NetKit.plainClient(port(A), "127.0.0.2")
          yield* NetKit.within(`client ${i + 3} of 127.0.0.2 is destroyed`, over.closed)
          assert.strictEqual(over.received().length, 0, "nothing written to a refused client")
        }
        yield* logs.waitFor("A reports the refusals", NetKit.reason("Busy", A), mark)
        yield* NetKit.exchange(a, b, "while the cap is full")
        const { failed, pending } = yield* a.network.handshakes
        assert.strictEqual(failed["Busy"], 3)
        assert.strictEqual(pending, 2)
        // The TLS server never saw them: no failed TLS handshake, counted or logged, for a refusal.
        assert.isUndefined(failed["TlsHandshake"])
        assert.isUndefined(logs.records.slice(mark).find(isTlsRefusal(A)))
        assert.isFalse(waiting.some((client) => client.isClosed()), "the admitted clients still wait")
      }))

    it.effect("bad PEM material is refused at start", () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(Effect.scoped(TcpNetwork.make({
          peer: A,
          listen: { host: "127.0.0.1", port: 0 },
          peers: new Map(),
          key: NetKit.key,
          tls: { key: material.peers.b.key, cert: material.peers.a.cert, ca: material.ca }
        })))
        assert.strictEqual(error.reason, "InvalidOptions")
      }))
  })
} else {
  describe.skip("TcpNetwork over TLS", () => {
    it("needs openssl", () => {})
  })
}
