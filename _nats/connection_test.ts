import assert from "node:assert/strict";
import { nkeys } from "@nats-io/transport-node";
import { connectError, connectionOptions } from "./connection.ts";
import { NatsError } from "./errors.ts";

const servers = "127.0.0.1:4222";

Deno.test("connectionOptions() passes one kind of credentials and TLS on, reconnecting forever", () => {
  const seed = new TextDecoder().decode(nkeys.createUser().getSeed());
  const options = connectionOptions({
    servers,
    nkeySeed: seed,
    tls: { caCerts: ["A", "B"], cert: "C", key: "K" },
  }, "fedcomm root j");
  assert.equal(options.name, "fedcomm root j");
  assert.equal(typeof options.authenticator, "function");
  assert.deepStrictEqual(options.tls, { ca: "A\nB", cert: "C", key: "K" });
  assert.equal(options.maxReconnectAttempts, -1);
  assert.equal(options.timeout, 10_000);
  const user = connectionOptions({ servers, user: "u", pass: "p", timeout: 500 }, "n");
  assert.deepStrictEqual([user.user, user.pass, user.authenticator, user.timeout], [
    "u",
    "p",
    undefined,
    500,
  ]);
});

Deno.test("connectionOptions() refuses malformed credentials and TLS options with a TypeError", () => {
  const cases: [Record<string, unknown>, string | RegExp][] = [
    [
      { token: "t", creds: "c" },
      `Invalid nats options: "token" and "creds" are set: give only one of user and pass, token, nkeySeed or creds`,
    ],
    [{ pass: "p" }, `Invalid nats options: "user" and "pass" go together: one is missing`],
    [{ user: 7, pass: "p" }, `Invalid nats.user: "7" is not a non-empty string`],
    [{ nkeySeed: "SUAM" }, /^Invalid nats.nkeySeed: not an nkey seed \("SU…"\): nkeys: /],
    [
      { creds: "no creds here" },
      `Invalid nats.creds: not a .creds file's text: unable to parse credentials`,
    ],
    [{ tls: { caCerts: "PEM" } }, "Invalid nats.tls.caCerts: not a list of PEM strings"],
    [{ tls: { key: "K" } }, `Invalid nats.tls: "cert" and "key" go together: one is missing`],
  ];
  for (const [more, message] of cases) {
    assert.throws(() => connectionOptions({ servers, ...more }, "n"), (error: Error) => {
      assert.equal(error.name, "TypeError");
      if (typeof message === "string") assert.equal(error.message, message);
      else assert.match(error.message, message);
      return true;
    });
  }
});

Deno.test("connectError() says which credentials were refused, what TLS did not accept, or that nothing answered", () => {
  const named = (name: string, message: string, code?: string) =>
    Object.assign(new Error(message), { name, code });
  const refused = connectError(named("AuthorizationError", "Authorization Violation"), {
    servers: [servers, "127.0.0.1:4223"],
    user: "root",
    pass: "x",
  });
  assert.ok(refused instanceof NatsError);
  assert.equal(
    refused.message,
    `Could not connect to NATS at "127.0.0.1:4222,127.0.0.1:4223": it refused the credentials ` +
      `(user "root"): Authorization Violation`,
  );
  const tls = connectError(
    named("Error", "self-signed certificate", "DEPTH_ZERO_SELF_SIGNED_CERT"),
    { servers, tls: { caCerts: ["PEM"] } },
  );
  assert.equal(
    tls.message,
    `Could not connect to NATS at "${servers}" over TLS: self-signed certificate ` +
      `(code "DEPTH_ZERO_SELF_SIGNED_CERT"): is its CA in nats.tls.caCerts?`,
  );
  const silent = connectError(named("TimeoutError", "timeout"), {
    servers,
    tls: {},
    timeout: 2_000,
  });
  assert.ok(silent instanceof NatsError);
  assert.equal(
    silent.message,
    `Could not connect to NATS at "${servers}": no answer within "2000" ms (nats.timeout): ` +
      `is it up, and does it want a client certificate (nats.tls.cert and nats.tls.key)?`,
  );
  const address = connectError(new TypeError("Invalid URL: 'http://[x:::]'"), { servers: "x:::" });
  assert.equal(address.name, "TypeError");
  assert.equal(
    address.message,
    `Invalid nats.servers: "x:::" is not a server address: Invalid URL: 'http://[x:::]'`,
  );
  const other = connectError(named("ConnectionError", "connection refused"), { servers });
  assert.ok(other instanceof NatsError);
  assert.equal(other.message, `Could not connect to NATS at "${servers}": connection refused`);
});
