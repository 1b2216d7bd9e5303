import assert from "node:assert/strict";
import { connect } from "../client.ts";
import {
  AuthenticationError,
  PeerDisconnectedError,
  ProtocolError,
  TimeoutError,
} from "../errors.ts";
import type { RefuseEvent } from "../events.ts";
import { listen, type Server } from "../server.ts";
import { rejectionOf, until } from "./test_util.ts";

const dir = new URL("../testdata/tls/", import.meta.url);
const cert = await Deno.readTextFile(new URL("server.pem", dir));
const key = await Deno.readTextFile(new URL("server.key", dir));
const ca = await Deno.readTextFile(new URL("ca.pem", dir));
const otherCa = await Deno.readTextFile(new URL("other_ca.pem", dir));

/** The server's refuse events, as `reason: message`. */
function refusals(server: Server): string[] {
  const seen: string[] = [];
  server.addEventListener("refuse", (event: RefuseEvent) => {
    seen.push(`${event.reason}: ${event.message}`);
  });
  return seen;
}

/** Checks that the server still admits a client that does it right. */
async function stillServes(server: Server, tls: boolean): Promise<void> {
  await using client = await connect({
    port: server.port,
    tls: tls ? { caCerts: [ca], hostname: "localhost" } : undefined,
    timeout: 10_000,
  });
  assert.equal(client.id, 0);
}

Deno.test("connect() over TLS rejects an untrusted certificate with AuthenticationError naming tls.caCerts", async () => {
  await using server = listen({ clients: 1, tls: { cert, key } });
  const seen = refusals(server);
  const error = await rejectionOf(
    connect({ port: server.port, tls: { caCerts: [otherCa] }, timeout: 10_000 }),
  );
  assert.ok(error instanceof AuthenticationError, String(error));
  assert.match(
    error.message,
    /^TLS certificate verification failed for 127\.0\.0\.1:\d+ \(as "127\.0\.0\.1"\): .*UnknownIssuer.*: pass its CA in tls\.caCerts$/,
  );
  assert.ok(error.cause instanceof Deno.errors.InvalidData);
  await until(() => seen.length === 1, "the server's refuse event");
  assert.match(seen[0], /^tls: TLS handshake failed: .*UnknownCA/);
  await stillServes(server, true);
});

Deno.test("connect() over TLS rejects a certificate for another name with AuthenticationError naming tls.hostname", async () => {
  await using server = listen({ clients: 1, tls: { cert, key } });
  const error = await rejectionOf(connect({
    port: server.port,
    tls: { caCerts: [ca], hostname: "wrong.example" },
    timeout: 10_000,
  }));
  assert.ok(error instanceof AuthenticationError, String(error));
  assert.match(error.message, /\(as "wrong\.example"\): .*not valid for name "wrong\.example"/);
  assert.match(
    error.message,
    /: connect with a name the certificate carries, or set tls\.hostname$/,
  );
  await stillServes(server, true);
});

Deno.test("connect() without tls to a TLS server fails with ProtocolError: server speaks TLS", async () => {
  await using server = listen({ clients: 1, tls: { cert, key } });
  const seen = refusals(server);
  const error = await rejectionOf(connect({ port: server.port, timeout: 10_000 }));
  assert.ok(error instanceof ProtocolError, String(error));
  assert.match(
    error.message,
    /^Server speaks TLS: pass tls to connect\(\) \(with tls\.caCerts for a private CA\): 127\.0\.0\.1:\d+ answered with a TLS record/,
  );
  await until(() => seen.length === 1, "the server's refuse event");
  assert.match(seen[0], /^tls: TLS handshake failed: .*: the client may not speak TLS/);
  await stillServes(server, true);
});

Deno.test("connect() with tls to a plain server fails with PeerDisconnectedError, and the server says why", async () => {
  await using server = listen({ clients: 1 });
  const seen = refusals(server);
  const error = await rejectionOf(
    connect({ port: server.port, tls: { caCerts: [ca] }, timeout: 10_000 }),
  );
  assert.ok(error instanceof PeerDisconnectedError, String(error));
  assert.match(
    error.message,
    /^Server closed the connection during the TLS handshake: 127\.0\.0\.1:\d+: it may not speak TLS \(connect without tls if it does not\)/,
  );
  await until(() => seen.length === 1, "the server's refuse event");
  assert.equal(
    seen[0],
    "tls: Client speaks TLS, this server does not: start the server with tls, or connect without tls",
  );
  await stillServes(server, false);
});

Deno.test("connect() with tls to a server that never answers fails with TimeoutError at its timeout", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) held.push(conn);
  })();
  try {
    const error = await rejectionOf(connect({
      port: (listener.addr as Deno.NetAddr).port,
      tls: { caCerts: [ca] },
      timeout: 300,
    }));
    assert.ok(error instanceof TimeoutError, String(error));
    assert.match(
      error.message,
      /^Connect timed out after 300 ms: 127\.0\.0\.1:\d+: no answer to the TLS handshake$/,
    );
  } finally {
    listener.close();
    await accepting.catch(() => {});
    for (const conn of held) conn.close();
  }
});
