/**
 * The `probe` command of `cli.ts`: connects, runs the handshake and reports
 * what it learned.
 *
 * @module
 */

import { spokeTls } from "../_link/tls.ts";
import {
  connect,
  type ConnectOptions,
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
}

/** What {@linkcode probe} learned. */
export type ProbeResult =
  | {
    /** The server welcomed the probe as a client. */
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
 * Connects to a fedcomm server, runs the handshake and closes the connection.
 * A welcome takes one of the server's client slots.
 *
 * @param options The server's address and the time limit.
 * @returns The welcome (version, id, client count) or the reject (reason), and the handshake time.
 * @throws {Deno.errors.ConnectionRefused} If nothing listens at the address.
 * @throws {TimeoutError} If the server did not answer in time.
 * @throws {Error} If the answer was not a fedcomm welcome or reject.
 */
export async function probe(options: ProbeOptions): Promise<ProbeResult> {
  const started = performance.now();
  try {
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
  } catch (error) {
    const handshakeMs = performance.now() - started;
    if (error instanceof RejectedError) {
      return { outcome: "rejected", reason: error.reason, message: error.detail, handshakeMs };
    }
    const where = formatAddress(options);
    if (error instanceof TimeoutError) {
      throw new TimeoutError(
        `No answer within ${options.timeoutMs} ms from ${where}: ` +
          `not a fedcomm server, or one that is stuck`,
        { cause: error },
      );
    }
    if (error instanceof ProtocolError && spokeTls(error.cause)) {
      throw new Error(
        `Server speaks TLS: pass --tls-ca FILE (its CA certificate): ${where} answered with a TLS record`,
        { cause: error },
      );
    }
    if (error instanceof ProtocolError || error instanceof RangeError) {
      // A malformed or oversized first frame: something else answers at that port.
      throw new Error(`Unexpected answer from ${where} (not a fedcomm server?): ${error.message}`, {
        cause: error,
      });
    }
    throw error;
  }
}

export const PROBE_USAGE =
  `Usage: ${PROGRAM} probe HOST:PORT [--timeout MS] [--tls-ca FILE] [--name N] [--secret-file FILE]

Connects to a fedcomm server, runs the handshake (hello → welcome or reject) and reports
what it learned: the protocol version, the client id it was given and the number of
clients, or the reason it was rejected; and the handshake's round-trip time.

A successful probe takes a client slot: a server waiting for N clients counts the probe
as one of them (it then sees it disconnect). Probe a server that is full, or one you are
about to restart, or start it with one client more.

  HOST:PORT      the server's address, e.g. 127.0.0.1:7000 or [::1]:7000
  --timeout MS        milliseconds to connect and complete the handshake (default 5000)
  --tls-ca FILE       connect over TLS, trusting this CA certificate (PEM)
  --tls-name NAME     the name the server's certificate must carry (default: HOST)
  --name N            the client name to give in the hello
  --secret-file FILE  authenticate with the secret in FILE (or set FEDCOMM_SECRET)
  -h, --help          show this help

Exit code: 0 for a welcome, 1 for a reject, nothing listening, or no answer in time.`;

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
    });
    return report(result, formatAddress(address), output);
  });
}

/** Prints what a probe learned; the exit code: 0 for a welcome, 1 for a reject. */
function report(result: ProbeResult, where: string, output: Output): number {
  const time = `${result.handshakeMs.toFixed(2)} ms (TCP connect + hello/${
    result.outcome === "welcome" ? "welcome" : "reject"
  })`;
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
