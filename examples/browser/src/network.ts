import * as PeerId from "@intersession/core/PeerId"
import * as WebSocketNetwork from "@intersession/platform-node/WebSocketNetwork"
import * as Effect from "effect/Effect"
import * as Crypto from "node:crypto"

export const serverId = PeerId.make("server")

// A token is `<peer id>.<HMAC-SHA256(secret, peer id)>`: what an application would issue after a login.
export const tokens = (secret: Uint8Array) => {
  const sign = (peer: string) => Crypto.createHmac("sha256", secret).update(peer).digest("hex")
  const issue = (peer: PeerId.PeerId) => `${peer}.${sign(peer)}`
  const verify = ({ credential }: WebSocketNetwork.ClientRequest) =>
    Effect.suspend(() => {
      const token = new TextDecoder().decode(credential)
      const peer = token.slice(0, token.lastIndexOf("."))
      const given = Buffer.from(token)
      const expected = Buffer.from(/^browser-[a-z0-9-]{1,64}$/.test(peer) ? issue(PeerId.make(peer)) : "")
      const valid = given.length === expected.length && Crypto.timingSafeEqual(given, expected)
      return valid ? Effect.succeed(PeerId.make(peer)) : Effect.fail("the token's signature does not match")
    })
  return { issue, verify }
}

// The Node peer takes browser tabs as clients: no pre-shared key, a token instead, checked by `verify`.
export const network = (port: number, verify: ReturnType<typeof tokens>["verify"]) =>
  WebSocketNetwork.layer({
    peer: serverId,
    listen: { host: "127.0.0.1", port, path: "/intersession" },
    peers: new Map(),
    clients: { verify, maxStreams: 16 }
  })
