import assert from "node:assert/strict";
import { importSecret, nonce, prove, secretBytes, verify } from "./auth.ts";
import { connect } from "../client.ts";
import { AuthenticationError, RejectedError } from "../errors.ts";
import type { RefuseEvent } from "../events.ts";
import { listen } from "../server.ts";
import { encode } from "../codec.ts";
import { until } from "../tests/test_util.ts";

const SECRET = "0123456789abcdef0123456789abcdef";

Deno.test("prove() and verify() bind the secret, both nonces, the side and the name", () => {
  const key = importSecret(secretBytes(SECRET, "secret"));
  const other = importSecret(secretBytes("another secret of 32 bytes......", "secret"));
  const [c, s] = [nonce(), nonce()];
  const proof = prove(key, "client", c, s, "site-a");
  assert.equal(proof.byteLength, 32);
  assert.equal(verify(key, "client", proof, c, s, "site-a"), true);
  assert.equal(verify(other, "client", proof, c, s, "site-a"), false, "another secret");
  assert.equal(verify(key, "server", proof, c, s, "site-a"), false, "the other side");
  assert.equal(verify(key, "client", proof, c, nonce(), "site-a"), false, "a new nonce");
  assert.equal(verify(key, "client", proof, c, s, "site-b"), false, "another name");
  assert.equal(verify(key, "client", proof.slice(1), c, s, "site-a"), false, "short");
  assert.equal(verify(key, "client", "x", c, s, "site-a"), false, "not bytes");
});

Deno.test("secretBytes() refuses short secrets and other types", () => {
  assert.throws(() => secretBytes("short", "secret"), RangeError);
  assert.throws(() => secretBytes(42, "secret"), TypeError);
  assert.equal(secretBytes(new Uint8Array(16), "secret").byteLength, 16);
});

Deno.test("connect() with the cohort secret joins a server that requires it", async () => {
  await using server = listen({ clients: 2, auth: { secret: SECRET } });
  await using a = await connect({ port: server.port, secret: SECRET });
  await using b = await connect({ port: server.port, secret: new TextEncoder().encode(SECRET) });
  assert.deepStrictEqual([a.id, b.id, a.authenticated], [0, 1, true]);
  await server.ready();
  await server.broadcast("hello");
  assert.equal(await a.recv({ timeout: 10_000 }), "hello");
});

Deno.test("listen() with auth refuses a wrong secret and a client without one, taking no slot", async () => {
  await using server = listen({ clients: 1, auth: { secret: SECRET } });
  const refusals: RefuseEvent[] = [];
  server.addEventListener("refuse", (event) => refusals.push(event));
  // The wrong secret: the server's proof does not match, so the client refuses the server.
  await assert.rejects(
    connect({ port: server.port, secret: "the wrong secret, 32 bytes long." }),
    AuthenticationError,
  );
  // No secret at all.
  await assert.rejects(connect({ port: server.port }), (error) => {
    assert.ok(error instanceof RejectedError);
    assert.equal(error.reason, "auth");
    return true;
  });
  assert.equal(server.joined, 0);
  await using good = await connect({ port: server.port, secret: SECRET });
  assert.equal(good.id, 0);
  assert.ok(refusals.some((e) => e.reason === "auth"));
  for (const event of refusals) assert.ok(!event.message.includes(SECRET));
});

Deno.test("listen() reports a wrong secret as a refuse event with reason auth and the claimed name, logged at warn", async () => {
  const warnings: [string, Record<string, unknown>][] = [];
  const logger = {
    warn: (message: string, fields: Record<string, unknown>) => warnings.push([message, fields]),
  };
  await using server = listen({ clients: 1, auth: { secret: SECRET }, logger });
  const refusals: RefuseEvent[] = [];
  server.addEventListener("refuse", (event) => refusals.push(event));
  await assert.rejects(
    connect({ port: server.port, name: "site-7", secret: "the wrong secret, 32 bytes long." }),
    AuthenticationError,
  );
  await until(() => refusals.length === 1, "the refuse event");
  assert.equal(refusals[0].reason, "auth");
  assert.equal(refusals[0].name, "site-7");
  assert.match(refusals[0].message, /^Authentication failed for "site-7": the client left after/);
  assert.equal(warnings.length, 1);
  assert.equal(warnings[0][1].reason, "auth");
  assert.equal(warnings[0][1].name, "site-7");
});

Deno.test("listen() with per-client secrets admits each name with its own secret", async () => {
  const clients = { "site-a": "secret of site a, 32 bytes long.", "site-b": SECRET };
  await using server = listen({ clients: 2, auth: { clients } });
  await using a = await connect({ port: server.port, name: "site-a", secret: clients["site-a"] });
  // site-b's secret under site-a's name, and an unknown name, are refused.
  await assert.rejects(
    connect({ port: server.port, name: "site-a", secret: clients["site-b"] }),
    AuthenticationError,
  );
  await assert.rejects(
    connect({ port: server.port, name: "site-c", secret: SECRET }),
    AuthenticationError,
  );
  await using b = await connect({ port: server.port, name: "site-b", secret: SECRET });
  await server.ready();
  assert.deepStrictEqual(server.stats().map((s) => s.name), ["site-a", "site-b"]);
  assert.deepStrictEqual([a.id, b.id], [0, 1]);
});

Deno.test("connect() with a secret refuses a server that does not authenticate", async () => {
  await using server = listen({ clients: 1 });
  await assert.rejects(connect({ port: server.port, secret: SECRET }), (error) => {
    assert.ok(error instanceof AuthenticationError);
    assert.match(error.message, /Server did not authenticate|proof/);
    return true;
  });
});

Deno.test("listen() rejects a replayed auth message: the new server nonce changes the proof", async () => {
  await using server = listen({ clients: 2, auth: { secret: SECRET } });
  // A recording proxy between a real client and the server.
  const proxy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const recorded: Uint8Array[] = [];
  const relay = (async () => {
    const inner = await proxy.accept();
    const outer = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    const up = (async () => {
      const buf = new Uint8Array(65536);
      for (let n = await inner.read(buf); n !== null; n = await inner.read(buf)) {
        recorded.push(buf.slice(0, n));
        await outer.write(buf.subarray(0, n));
      }
    })().catch(() => {});
    const down = (async () => {
      const buf = new Uint8Array(65536);
      for (let n = await outer.read(buf); n !== null; n = await outer.read(buf)) {
        await inner.write(buf.subarray(0, n));
      }
    })().catch(() => {});
    return { inner, outer, done: Promise.all([up, down]) };
  })();
  const client = await connect({ port: proxy.addr.port, secret: SECRET });
  assert.equal(client.id, 0);
  await client.close();
  const { inner, outer, done } = await relay;
  for (const conn of [inner, outer]) {
    try {
      conn.close();
    } catch {
      // Closed by the other side.
    }
  }
  await done;
  proxy.close();
  // Replay everything the client sent (its hello and its auth) on a new connection.
  const bytes = new Uint8Array(recorded.reduce((n, c) => n + c.byteLength, 0));
  let offset = 0;
  for (const chunk of recorded) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  const refused = new Promise<RefuseEvent>((resolve) =>
    server.addEventListener("refuse", resolve, { once: true })
  );
  const replay = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  await replay.write(bytes);
  const event = await refused;
  assert.equal(event.reason, "auth");
  const buf = new Uint8Array(65536);
  while (await replay.read(buf) !== null) {
    // Drain until the server closes.
  }
  replay.close();
  assert.equal(server.joined, 1, "the replay took no slot");
  // The hello carried no secret: only nonces and a name.
  assert.ok(!new TextDecoder().decode(bytes).includes(SECRET));
  assert.ok(encode(SECRET).byteLength > 0);
});
