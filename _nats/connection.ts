/**
 * How the root and the edges connect to NATS: the client's options made
 * from ours (credentials, TLS, reconnecting forever), checked before
 * anything is connected, and a failed connection's error made clear (which
 * address, which credentials were refused, what TLS did not accept).
 *
 * @module
 */

import {
  type Authenticator,
  credsAuthenticator,
  nkeyAuthenticator,
  type NodeConnectionOptions,
} from "@nats-io/transport-node";
import { NatsError } from "./errors.ts";
import type { NatsConnectOptions } from "./types.ts";

/** Milliseconds for the first connection, by default. */
const DEFAULT_CONNECT_MS = 10_000;

/** The credential options, at most one of which may be given (`user` goes with `pass`). */
const CREDENTIALS = ["user", "token", "nkeySeed", "creds"] as const;

function checkString(value: unknown, name: string): void {
  if (value !== undefined && (typeof value !== "string" || value === "")) {
    throw new TypeError(`Invalid nats.${name}: "${String(value)}" is not a non-empty string`);
  }
}

/** Makes and tries an authenticator: a malformed seed or creds file fails here, not at connect. */
function authenticatorOf(options: NatsConnectOptions): Authenticator | undefined {
  const encoder = new TextEncoder();
  const [name, make] = options.creds !== undefined
    ? ["creds", () => credsAuthenticator(encoder.encode(options.creds))] as const
    : options.nkeySeed !== undefined
    ? ["nkeySeed", () => nkeyAuthenticator(encoder.encode(options.nkeySeed))] as const
    : [undefined, undefined];
  if (make === undefined) return undefined;
  const authenticator = make();
  try {
    authenticator("fedcomm-check"); // signs a nonce with the seed: parses it
  } catch (error) {
    const what = name === "creds" ? "a .creds file's text" : `an nkey seed ("SU…")`;
    throw new TypeError(`Invalid nats.${name}: not ${what}: ${(error as Error)?.message}`);
  }
  return authenticator;
}

/**
 * Checks the NATS options' credentials and TLS, and makes the client's options.
 *
 * @param options Where NATS is and how to log in.
 * @param name The connection's name for NATS monitoring, unless `options.name` is set.
 * @returns The client's options: reconnect forever, the credentials, TLS.
 * @throws {TypeError} If a credential or TLS option is not a string, more than one kind of
 * credential is given, `user` comes without `pass` (or `pass` without `user`), an nkey seed or
 * `.creds` text cannot be parsed, or a client certificate comes without its key.
 */
export function connectionOptions(
  options: NatsConnectOptions,
  name: string,
): NodeConnectionOptions {
  for (const key of ["user", "pass", "token", "nkeySeed", "creds", "name"] as const) {
    checkString(options[key], key);
  }
  const given = CREDENTIALS.filter((key) => options[key] !== undefined);
  if (given.length > 1) {
    throw new TypeError(
      `Invalid nats options: ${given.map((key) => `"${key}"`).join(" and ")} are set: ` +
        `give only one of user and pass, token, nkeySeed or creds`,
    );
  }
  if ((options.user === undefined) !== (options.pass === undefined)) {
    throw new TypeError(`Invalid nats options: "user" and "pass" go together: one is missing`);
  }
  const tls = options.tls;
  if (tls !== undefined) {
    if (
      tls.caCerts !== undefined &&
      !(Array.isArray(tls.caCerts) && tls.caCerts.every((c) => typeof c === "string"))
    ) {
      throw new TypeError(`Invalid nats.tls.caCerts: not a list of PEM strings`);
    }
    checkString(tls.cert, "tls.cert");
    checkString(tls.key, "tls.key");
    if ((tls.cert === undefined) !== (tls.key === undefined)) {
      throw new TypeError(`Invalid nats.tls: "cert" and "key" go together: one is missing`);
    }
  }
  return {
    servers: options.servers,
    name: options.name ?? name,
    user: options.user,
    pass: options.pass,
    token: options.token,
    authenticator: authenticatorOf(options),
    tls: tls === undefined
      ? undefined
      : { ca: tls.caCerts?.join("\n"), cert: tls.cert, key: tls.key },
    timeout: options.timeout ?? DEFAULT_CONNECT_MS,
    maxReconnectAttempts: -1, // a restarted NATS server is waited for, within each call's deadline
    reconnectTimeWait: 250,
    reconnectJitter: 100,
  };
}

/** The credentials tried, for an error: `user "root"`, `an nkey`, `no credentials`. */
function credentialsOf(options: NatsConnectOptions): string {
  if (options.user !== undefined) return `user "${options.user}"`;
  if (options.token !== undefined) return "a token";
  if (options.nkeySeed !== undefined) return "an nkey seed";
  if (options.creds !== undefined) return "a .creds file";
  return "no credentials";
}

/**
 * The error of a connection that failed, said clearly.
 *
 * @param error What the NATS client threw.
 * @param options The options it was given.
 * @returns A `NatsError` naming the address and what failed (the refused credentials, the TLS
 * certificate not trusted), or a `TypeError` for a server address the client cannot parse.
 */
export function connectError(error: unknown, options: NatsConnectOptions): Error {
  const where = `"${[options.servers].flat().join(",")}"`;
  const message = (error as Error)?.message ?? String(error);
  const code = (error as { code?: unknown })?.code;
  if ((error as Error)?.name === "AuthorizationError") {
    return new NatsError(
      `Could not connect to NATS at ${where}: it refused the credentials ` +
        `(${credentialsOf(options)}): ${message}`,
      { cause: error },
    );
  }
  if (typeof code === "string" && /CERT|SIGNATURE|TLS|SSL|ISSUER/.test(code)) {
    const hint = options.tls?.caCerts === undefined
      ? "give its CA in nats.tls.caCerts"
      : "is its CA in nats.tls.caCerts?";
    return new NatsError(
      `Could not connect to NATS at ${where} over TLS: ${message} (code "${code}"): ${hint}`,
      { cause: error },
    );
  }
  if ((error as Error)?.name === "TimeoutError") {
    // A server that wants a client certificate drops a TLS 1.3 client without one after the
    // handshake, and the client only sees no answer: say so where that may be the reason.
    const hint = options.tls !== undefined && options.tls.cert === undefined
      ? ": is it up, and does it want a client certificate (nats.tls.cert and nats.tls.key)?"
      : ": is it up?";
    return new NatsError(
      `Could not connect to NATS at ${where}: no answer within ` +
        `"${options.timeout ?? DEFAULT_CONNECT_MS}" ms (nats.timeout)${hint}`,
      { cause: error },
    );
  }
  if (error instanceof TypeError) {
    return new TypeError(`Invalid nats.servers: ${where} is not a server address: ${message}`, {
      cause: error,
    });
  }
  return new NatsError(`Could not connect to NATS at ${where}: ${message}`, { cause: error });
}
