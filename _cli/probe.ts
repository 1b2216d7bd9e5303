/**
 * The `probe` command of `cli.ts`: connects, runs the handshake and reports
 * what it learned.
 *
 * @module
 */

import { dial } from "../_client/dial.ts";
import { secretBytes } from "../_handshake/auth.ts";
import { spokeTls } from "../_link/tls.ts";
import {
  connect,
  type ConnectOptions,
  DEFAULT_MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  ProtocolError,
  RejectedError,
  TimeoutError,
} from "../mod.ts";
import {
  type Address,
  formatAddress,
  integerFlag,
  type Output,
  parseAddress,
  parseFlags,
  UsageError,
} from "../examples/command_line.ts";

/** How the commands refer to the program in usage lines and hints. */
export const PROGRAM = "fedcomm";

/** A failure that names the address it concerns, for network errors. */
export class AddressedError extends Error {
  /** The address concerned. */
  readonly address: Address;
  /**
   * Wraps an error.
   *
   * @param cause The error.
   * @param address The address concerned.
   */
  constructor(cause: unknown, address: Address) {
    super("", { cause });
    this.address = address;
  }
}

/** Runs `body`, tagging what it throws with `address` so the report can name it. */
export async function withAddress(address: Address, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (error) {
    throw new AddressedError(error, address);
  }
}

// ---------------------------------------------------------------- probe

/** What {@linkcode probe} is given. */
export interface ProbeOptions {
  /** The server's address. */
  readonly hostname: string;
  /** The server's port. */
  readonly port: number;
  /** Milliseconds for connecting and the handshake. */
  readonly timeoutMs: number;
  /** Connect over TLS, trusting this CA certificate (PEM text). */
  readonly tlsCa?: string;
  /** The name the server's TLS certificate must carry (default: the hostname). */
  readonly tlsHostname?: string;
  /** The client name to give in the hello. */
  readonly name?: string;
  /** The shared secret, for a server that requires authentication. */
  readonly secret?: string;
  /**
   * Join as a client to learn the id and the cohort size (default false). A
   * join takes a client slot, and the server sees a `join` and a `leave`;
   * without it the probe takes none (see {@linkcode probe}).
   */
  readonly join?: boolean;
}

/** What {@linkcode probe} learned. */
export type ProbeResult =
  | {
    /**
     * The server answered the probe's hello, and gave it no id: the
     * handshake (TLS, authentication) went through up to the id.
     */
    readonly outcome: "answered";
    /** The protocol version both sides speak. */
    readonly version: number;
    /** Whether the connection used TLS. */
    readonly tls: boolean;
    /** Whether both sides proved they know the shared secret. */
    readonly authenticated: boolean;
    /** Milliseconds from connecting to the answer. */
    readonly handshakeMs: number;
  }
  | {
    /** The server welcomed the probe as a client (with `join: true` only). */
    readonly outcome: "welcome";
    /** The protocol version both sides speak. */
    readonly version: number;
    /** The client id the server assigned to the probe. */
    readonly id: number;
    /** Whether the connection used TLS. */
    readonly tls: boolean;
    /** Whether both sides proved they know the shared secret. */
    readonly authenticated: boolean;
    /** How many clients the server serves. */
    readonly clients: number;
    /** Milliseconds from connecting to the welcome. */
    readonly handshakeMs: number;
  }
  | {
    /** The server answered the hello with a reject. */
    readonly outcome: "rejected";
    /** The machine-readable reason (`full`, `version`, `closed`, …). */
    readonly reason: string;
    /** The server's explanation. */
    readonly message: string;
    /** Milliseconds from connecting to the reject. */
    readonly handshakeMs: number;
  };

/** The client options a probe connects with: one place to add TLS and authentication. */
function connectOptions(options: ProbeOptions): ConnectOptions {
  return {
    hostname: options.hostname,
    port: options.port,
    timeout: options.timeoutMs,
    name: options.name,
    secret: options.secret,
    tls: options.tlsCa === undefined
      ? undefined
      : { caCerts: [options.tlsCa], hostname: options.tlsHostname },
  };
}

/**
 * The id a probe asks to resume: no server ever gives it (ids are counted
 * from 0, one per session), so the server refuses the resume, having taken
 * no slot and told no listener.
 */
const NO_SESSION = Number.MAX_SAFE_INTEGER;

/**
 * The probe without a slot: a hello that resumes a session that does not
 * exist. The server runs everything a client meets (TLS, the version, the
 * authentication both ways, whether it is closing) and then refuses the
 * resume before any id is given: no `join`, no `leave` (a `refuse` event).
 * With a secret, a second hello, without the secret or a name, tells whether
 * the server requires authentication (a second `refuse`, reason `auth`).
 */
async function quietProbe(options: ProbeOptions, started: number): Promise<ProbeResult> {
  if (options.secret !== undefined) secretBytes(options.secret, "secret");
  await refusedResume(options);
  const handshakeMs = performance.now() - started;
  // With a secret, the refusal came after the challenge only if the server requires
  // authentication: it then refuses a hello without one ("auth"). That hello gives no name,
  // so that a server's record of refused logins does not name the site as failing.
  const authenticated = options.secret !== undefined &&
    await refusedResume({ ...options, secret: undefined, name: undefined }).then(
      () => false,
      (error) => {
        if (error instanceof RejectedError && error.reason === "auth") return true;
        throw error;
      },
    );
  const tls = options.tlsCa !== undefined;
  return { outcome: "answered", version: PROTOCOL_VERSION, tls, authenticated, handshakeMs };
}

/** Sends a hello that resumes no session; returns on the server's `resume` refusal. */
async function refusedResume(options: ProbeOptions): Promise<void> {
  const checked = connectOptions(options);
  const dialOptions = { ...checked, maxFrameBytes: DEFAULT_MAX_FRAME_BYTES, maxMessageBytes: 0 };
  const resume = { id: NO_SESSION, token: crypto.getRandomValues(new Uint8Array(16)), received: 0 };
  try {
    const { greeting } = await dial(dialOptions, options.timeoutMs, undefined, false, resume);
    await greeting.close();
  } catch (error) {
    if (error instanceof RejectedError && error.reason === "resume") return;
    throw error;
  }
  throw new ProtocolError(`Invalid welcome: the server resumed a session "${NO_SESSION}"`);
}

/** The probe that joins: a welcome, which takes a slot, then a close. */
async function joinProbe(options: ProbeOptions, started: number): Promise<ProbeResult> {
  const client = await connect(connectOptions(options));
  const handshakeMs = performance.now() - started;
  await client.close();
  return {
    outcome: "welcome",
    version: PROTOCOL_VERSION,
    id: client.id,
    clients: client.clients,
    tls: options.tlsCa !== undefined,
    authenticated: client.authenticated,
    handshakeMs,
  };
}

/** The error a failed probe reports: what the answer says about the other end. */
function explain(error: unknown, options: ProbeOptions): unknown {
  const where = formatAddress(options);
  if (error instanceof TimeoutError) {
    return new TimeoutError(
      `No answer within ${options.timeoutMs} ms from ${where}: ` +
        `not a fedcomm server, or one that is stuck`,
      { cause: error },
    );
  }
  if (error instanceof ProtocolError && spokeTls(error.cause)) {
    return new Error(
      `Server speaks TLS: pass --tls-ca FILE (its CA certificate): ${where} answered with a TLS record`,
      { cause: error },
    );
  }
  if (error instanceof ProtocolError || error instanceof RangeError) {
    // A malformed or oversized first frame: something else answers at that port.
    return new Error(`Unexpected answer from ${where} (not a fedcomm server?): ${error.message}`, {
      cause: error,
    });
  }
  return error;
}

/**
 * Connects to a fedcomm server, runs the handshake and closes the connection.
 * By default the probe takes no client slot: its hello asks to resume a
 * session that does not exist, which the server refuses after the TLS
 * handshake and the authentication, before it gives an id (no `join` or
 * `leave` event; a `refuse` event with reason `resume`, and with a secret a
 * second one, reason `auth` and no name, from the hello that checks that the
 * server requires authentication). With `join`, the probe joins as a client
 * (a slot, a `join` and a `leave`) and learns its id and the cohort size, or
 * that the server is full.
 *
 * @param options The server's address, the time limit, TLS, the secret, `join`.
 * @returns That the server answered (version, TLS, authentication), the
 * welcome (with `join`: id, client count) or the reject (reason); and the handshake time.
 * @throws {Deno.errors.ConnectionRefused} If nothing listens at the address.
 * @throws {TimeoutError} If the server did not answer in time.
 * @throws {AuthenticationError} If the server did not prove the secret, or its certificate failed.
 * @throws {Error} If the answer was not a fedcomm welcome or reject.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { listen } from "@fedcomm/fedcomm";
 * import { probe } from "@fedcomm/fedcomm/cli";
 *
 * await using server = listen({ clients: 1 });
 * let joined = 0;
 * server.addEventListener("join", () => joined++);
 * const result = await probe({ hostname: "127.0.0.1", port: server.port, timeoutMs: 5000 });
 * assert.equal(result.outcome, "answered");
 * assert.equal(joined, 0); // the probe took no slot
 * ```
 */
export async function probe(options: ProbeOptions): Promise<ProbeResult> {
  const started = performance.now();
  try {
    return await (options.join ? joinProbe(options, started) : quietProbe(options, started));
  } catch (error) {
    if (error instanceof RejectedError) {
      const handshakeMs = performance.now() - started;
      return { outcome: "rejected", reason: error.reason, message: error.detail, handshakeMs };
    }
    throw explain(error, options);
  }
}

export const PROBE_USAGE =
  `Usage: ${PROGRAM} probe HOST:PORT [--timeout MS] [--tls-ca FILE] [--tls-name NAME] [--name N]
                      [--secret-file FILE] [--join]

Connects to a fedcomm server, runs the handshake and reports what it learned: that it
speaks the protocol, with TLS and authentication as asked, or the reason it refused;
and the handshake's round-trip time.

The probe takes no client slot: its hello asks to resume a session that does not exist,
which the server refuses after TLS and authentication, before it gives an id (the server
sees no join and no leave). With --join it joins as a client instead, to learn the id it
is given and the number of clients, or that the server is full: that takes a slot (a
server waiting for N clients counts the probe as one of them, then sees it leave).

  HOST:PORT           the server's address, e.g. 127.0.0.1:7000 or [::1]:7000
  --timeout MS        milliseconds to connect and complete the handshake (default 5000)
  --tls-ca FILE       connect over TLS, trusting this CA certificate (PEM)
  --tls-name NAME     the name the server's certificate must carry (default: HOST)
  --name N            the client name to give in the hello
  --secret-file FILE  authenticate with the secret in FILE (or set FEDCOMM_SECRET); a
                      second hello, without it or a name, checks that the server requires
                      it (the server records a refused login "auth" from this address)
  --join              join as a client: learn the id and the cohort size (takes a slot)
  -h, --help          show this help

Exit code: 0 for an answer or a welcome, 1 for a reject, nothing listening, or no answer in time.`;

export async function runProbe(args: string[], output: Output): Promise<number> {
  const { values, positionals } = parseFlags({
    args,
    allowPositionals: true,
    options: {
      timeout: { type: "string" },
      "tls-ca": { type: "string" },
      "tls-name": { type: "string" },
      name: { type: "string" },
      "secret-file": { type: "string" },
      join: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (positionals.length !== 1) {
    throw new UsageError(
      positionals.length === 0 ? "Missing HOST:PORT" : `Unexpected argument: "${positionals[1]}"`,
    );
  }
  const address = parseAddress(positionals[0]);
  const timeoutMs = integerFlag("timeout", values.timeout, 5000, 1);
  return await withAddress(address, async () => {
    const tlsCa = values["tls-ca"] === undefined
      ? undefined
      : await Deno.readTextFile(values["tls-ca"]);
    const secretFile = values["secret-file"];
    const secret = secretFile === undefined
      ? Deno.env.get("FEDCOMM_SECRET")
      : (await Deno.readTextFile(secretFile)).trim();
    const result = await probe({
      ...address,
      timeoutMs,
      tlsCa,
      tlsHostname: values["tls-name"],
      name: values.name,
      secret,
      join: values.join ?? false,
    });
    return report(result, formatAddress(address), output);
  });
}

/** Prints what a probe learned; the exit code: 0 for a welcome, 1 for a reject. */
function report(result: ProbeResult, where: string, output: Output): number {
  const answer = { answered: "refused resume", welcome: "welcome", rejected: "reject" };
  const time = `${result.handshakeMs.toFixed(2)} ms (TCP connect + hello/${
    answer[result.outcome]
  })`;
  if (result.outcome === "answered") {
    output.out(`fedcomm server at ${where}`);
    output.out(`  protocol:   version ${result.version}`);
    output.out(`  tls:        ${result.tls ? "yes" : "no"}`);
    output.out(`  auth:       ${result.authenticated ? "mutual (HMAC-SHA256)" : "none"}`);
    output.out(`  handshake:  ${time}`);
    output.out(
      `  note: the probe took no client slot (--join to learn the id and the cohort size)`,
    );
    return 0;
  }
  if (result.outcome === "welcome") {
    output.out(`fedcomm server at ${where}`);
    output.out(`  protocol:   version ${result.version}`);
    output.out(`  welcome:    client id ${result.id} of ${result.clients}`);
    output.out(`  tls:        ${result.tls ? "yes" : "no"}`);
    output.out(`  auth:       ${result.authenticated ? "mutual (HMAC-SHA256)" : "none"}`);
    output.out(`  handshake:  ${time}`);
    output.out(`  note: the probe took client slot ${result.id}, then disconnected`);
    return 0;
  }
  output.out(`fedcomm server at ${where}`);
  output.out(`  protocol:   version ${PROTOCOL_VERSION} (this probe)`);
  output.out(`  rejected:   ${result.reason}: ${result.message}`);
  if (result.reason === "auth") {
    output.out(`  hint:       the server requires authentication: pass --secret-file`);
  }
  output.out(`  handshake:  ${time}`);
  output.err(`error: Rejected by ${where}: ${result.reason}: ${result.message}`);
  return 1;
}
