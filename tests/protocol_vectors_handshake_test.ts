/**
 * The protocol test vectors of the handshake (`testdata/vectors/protocol_v3.json`):
 * the hellos, welcomes, rejects, the challenge and the auth, each written by
 * the library as the server or the client and decoded by the public decoders
 * (how: `protocol_vectors.ts`); and for every proof of the file, the
 * HMAC-SHA256 of PROTOCOL.md §7.1, computed by the library as a server and
 * as a client.
 *
 * @module
 */

import assert from "node:assert/strict";
import { decode } from "../codec.ts";
import { connect, DEFAULT_MAX_FRAME_BYTES, listen } from "../mod.ts";
import { handshakeControlFrame } from "./fake_conn.ts";
import {
  AUTH_TOKEN,
  fromHex,
  isHandshakeCase,
  type Json,
  jsonOf,
  SITE_A,
  toHex,
  vectors,
} from "./protocol_vectors.ts";
import { HOST, Raw, withPeer, withRandom } from "./protocol_vectors_peer.ts";
import { testCases } from "./protocol_vectors_cases.ts";

testCases(vectors.cases.filter(isHandshakeCase));

/** The map of the next frame the library writes on `raw`, a handshake control frame. */
async function messageOf(raw: Raw): Promise<Record<string, unknown>> {
  return decode((await raw.frame()).subarray(6)) as Record<string, unknown>;
}

for (const p of vectors.proofs) {
  Deno.test(`protocol vectors: proof ${p.name} is what the server and the client compute`, async () => {
    const nc = fromHex(p.clientNonce);
    const ns = fromHex(p.serverNonce);
    const name = p.clientName === "" ? {} : { name: p.clientName };
    // The server's proof, and its check of the client's.
    const server = listen({ clients: 1, hostname: HOST, port: 0, auth: { secret: p.secret } });
    const raw = await Raw.connect(server.port);
    try {
      await withRandom([ns, AUTH_TOKEN], async () => {
        await raw.send(handshakeControlFrame({ fedcomm: 3, type: "hello", ...name, nonce: nc }));
        const challenge = await messageOf(raw);
        assert.deepStrictEqual(challenge.nonce, ns);
        assert.equal(toHex(challenge.proof as Uint8Array), p.serverProof);
        const proof = fromHex(p.clientProof);
        await raw.send(handshakeControlFrame({ fedcomm: 3, type: "auth", proof }));
        const welcome = await messageOf(raw);
        assert.equal(welcome.type, "welcome");
      });
    } finally {
      raw.close();
      await server.close();
    }
    // The client's check of the server's proof, and its own.
    await withPeer(async (peer) => {
      const client = await withRandom([nc], async () => {
        const connecting = connect({ hostname: HOST, port: peer.port, ...name, secret: p.secret });
        const s = await peer.accept();
        const hello = await messageOf(s);
        assert.deepStrictEqual(hello.nonce, nc);
        const proof = fromHex(p.serverProof);
        await s.send(handshakeControlFrame({ fedcomm: 3, type: "challenge", nonce: ns, proof }));
        const auth = await messageOf(s);
        assert.equal(toHex(auth.proof as Uint8Array), p.clientProof);
        await s.send("welcome-no-resume");
        return await connecting;
      });
      assert.equal(client.authenticated, true);
      await client.close();
    });
  });
}

Deno.test("protocol vectors: the authenticated cases carry the site-a proofs", () => {
  const hello = jsonOf("hello-auth") as Record<string, Json>;
  const challenge = jsonOf("challenge") as Record<string, Json>;
  const auth = jsonOf("auth") as Record<string, Json>;
  assert.equal(hello.name, SITE_A.clientName);
  assert.deepStrictEqual(hello.nonce, { $bin: SITE_A.clientNonce });
  assert.deepStrictEqual(challenge.nonce, { $bin: SITE_A.serverNonce });
  assert.deepStrictEqual(challenge.proof, { $bin: SITE_A.serverProof });
  assert.deepStrictEqual(auth.proof, { $bin: SITE_A.clientProof });
  const welcome = jsonOf("welcome") as Record<string, Json>;
  assert.equal(welcome.maxFrameBytes, DEFAULT_MAX_FRAME_BYTES);
});
