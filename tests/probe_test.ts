/**
 * `probe()` against real servers: by default it takes no id and the server sees no join or
 * leave (only a `refuse` of its resume hello), with or without TLS and authentication; it still
 * tells a wrong secret, and `join: true` takes a slot as a client would.
 */

import assert from "node:assert/strict";
import { probe } from "../cli.ts";
import { AuthenticationError, connect, listen, type Server } from "../mod.ts";

const TLS = new URL("../testdata/tls/", import.meta.url);
const SECRET = "probe secret, thirty-two bytes..";

/** The probe options for a server on loopback. */
function local(server: Server): { hostname: string; port: number; timeoutMs: number } {
  return { hostname: "127.0.0.1", port: server.port, timeoutMs: 5000 };
}

/** The server's join, leave and refuse events, by type (a refusal: its reason and name). */
function record(server: Server): Record<string, string[]> {
  const seen: Record<string, string[]> = { join: [], leave: [], refuse: [] };
  server.addEventListener("join", (e) => seen.join.push(String(e.clientId)));
  server.addEventListener("leave", (e) => seen.leave.push(String(e.clientId)));
  server.addEventListener("refuse", (e) => seen.refuse.push(`${e.reason} ${e.name ?? "-"}`));
  return seen;
}

/** Waits (at most 5 s) until the server reported `count` refusals. */
async function refusals(seen: Record<string, string[]>, count: number): Promise<string[]> {
  const deadline = Date.now() + 5000;
  while (seen.refuse.length < count && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
  }
  return seen.refuse;
}

Deno.test("probe() takes no id and fires no join or leave event on the server", async () => {
  await using server = listen({ clients: 1 });
  const seen = record(server);
  const result = await probe(local(server));
  assert.equal(result.outcome, "answered");
  assert.deepStrictEqual({ ...result, handshakeMs: 0 }, {
    outcome: "answered",
    version: 3,
    tls: false,
    authenticated: false,
    handshakeMs: 0,
  });
  await using client = await connect({ port: server.port });
  await server.ready({ timeout: 5000 });
  assert.equal(client.id, 0, "the first client still gets id 0");
  assert.deepStrictEqual(server.stats().map((s) => s.id), [0]);
  assert.deepStrictEqual(seen, { join: ["0"], leave: [], refuse: ["resume -"] });
  // A full fixed cohort still answers the probe, and loses nobody.
  assert.equal(
    (await probe(local(server))).outcome,
    "answered",
  );
  assert.equal(server.stats(0).state, "connected");
});

Deno.test("probe() over TLS with a secret: authenticated, no slot; a wrong secret is refused", async () => {
  await using server = listen({
    clients: 2,
    open: true,
    tls: {
      cert: await Deno.readTextFile(new URL("server.pem", TLS)),
      key: await Deno.readTextFile(new URL("server.key", TLS)),
    },
    auth: { clients: { "site-a": SECRET } },
  });
  const seen = record(server);
  const base = {
    hostname: "127.0.0.1",
    port: server.port,
    timeoutMs: 5000,
    tlsCa: await Deno.readTextFile(new URL("ca.pem", TLS)),
    name: "site-a",
  };
  const result = await probe({ ...base, secret: SECRET });
  assert.deepStrictEqual([result.outcome, "tls" in result && result.tls], ["answered", true]);
  assert.equal("authenticated" in result && result.authenticated, true);
  // The resume refused after the proofs, then the check that the server requires a secret:
  // a hello without one, and without the site's name (no refused login charged to the site).
  assert.deepStrictEqual(await refusals(seen, 2), ["resume site-a", "auth -"]);
  await assert.rejects(
    probe({ ...base, secret: "another secret of 32 bytes......" }),
    AuthenticationError,
  );
  const refused = await probe(base);
  assert.deepStrictEqual([refused.outcome, "reason" in refused && refused.reason], [
    "rejected",
    "auth",
  ]);
  assert.deepStrictEqual(seen.join, []);
  assert.deepStrictEqual(seen.leave, []);
  assert.deepStrictEqual(server.stats(), []);
});

Deno.test("probe() with a secret at a server that requires none reports no authentication", async () => {
  await using server = listen({ clients: 1 });
  const result = await probe({ ...local(server), secret: SECRET });
  assert.equal(result.outcome, "answered");
  assert.equal("authenticated" in result && result.authenticated, false);
  assert.deepStrictEqual(server.stats(), []);
});

Deno.test("probe() with join takes a slot, as a client: the server sees it join and leave", async () => {
  await using server = listen({ clients: 2 });
  const seen = record(server);
  const result = await probe({ ...local(server), join: true });
  assert.equal(result.outcome, "welcome");
  assert.deepStrictEqual(["id" in result && result.id, "clients" in result && result.clients], [
    0,
    2,
  ]);
  const deadline = Date.now() + 5000;
  while (seen.leave.length === 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.deepStrictEqual([seen.join, seen.leave], [["0"], ["0"]]);
});
