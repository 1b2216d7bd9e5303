/**
 * fedcomm's command line: an echo server and client, a file transfer, the
 * federated-averaging demo, the benchmark, and a probe that runs the
 * handshake against a server and reports what it learned.
 *
 * ```sh
 * deno run -A cli.ts --help
 * deno run -A cli.ts echo server --port 5678 --clients 2
 * deno run -A cli.ts echo client --port 5678 --message hello
 * deno run -A cli.ts receive-file --port 8001 --out received/
 * deno run -A cli.ts send-file 127.0.0.1:8001 model.bin
 * deno run -A cli.ts probe 127.0.0.1:5678 --timeout 2000
 * deno run -A cli.ts demo --clients 2 --rounds 3
 * deno run -A cli.ts bench --quick
 * ```
 *
 * Every command exits with 0 on success, 1 on failure (one line on stderr,
 * `error: …`) and 2 for a bad command line (`error: …` and a hint to run
 * `fedcomm <command> --help`). `demo` and `bench` run `examples/fedavg.ts`
 * and `bench/run.ts` from a checkout of the repository.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import {
  connect,
  type ConnectOptions,
  PROTOCOL_VERSION,
  ProtocolError,
  TimeoutError,
} from "./mod.ts";
import {
  type Address,
  CONSOLE,
  formatAddress,
  integerFlag,
  type Output,
  parseAddress,
  parseFlags,
  portFlag,
  reportFailure,
  secondsFlag,
  toUsageError,
  UsageError,
} from "./examples/command_line.ts";
import { echoClient, echoServer } from "./examples/echo.ts";
import { receiveFile, sendFile } from "./examples/file_transfer.ts";

export type { Output } from "./examples/command_line.ts";

/** How the commands refer to the program in usage lines and hints. */
const PROGRAM = "fedcomm";

/** One subcommand. */
interface Command {
  /** One line for the top-level help. */
  readonly summary: string;
  /** The full help text. */
  readonly usage: string;
  /** Runs the command; throws {@linkcode UsageError} for a bad command line. */
  run(args: string[], output: Output): Promise<number>;
}

/** Whether the arguments ask for help (`--help` or `-h` before any `--`). */
function wantsHelp(args: readonly string[]): boolean {
  for (const arg of args) {
    if (arg === "--") return false;
    if (arg === "--help" || arg === "-h") return true;
  }
  return false;
}

// ---------------------------------------------------------------- echo

const ECHO_USAGE = `Usage: ${PROGRAM} echo server --port P --clients N [--host H] [--timeout S]
       ${PROGRAM} echo client --port P [--host H] [--message TEXT] [--count K] [--timeout S]

A multi-connection echo server over fedcomm, and its client (examples/echo.ts).

server: waits for N clients, echoes each message back to its sender, exits when all
        have left.
  --port P        TCP port (0: any free port, printed on the first line)
  --clients N     how many clients to serve
  --host H        address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)
  --timeout S     seconds to wait for the clients to join (default 60)

client: sends K messages, one at a time, and prints each echo.
  --port P        the server's port
  --host H        the server's address (default 127.0.0.1)
  --message TEXT  what to send (default "hello"; numbered "TEXT #i" when K > 1)
  --count K       how many messages (default 1; 0 joins and leaves at once)
  --timeout S     seconds to connect and to wait for each echo (default 10)

  -h, --help      show this help`;

async function runEcho(args: string[], output: Output): Promise<number> {
  const [mode, ...rest] = args;
  if (mode !== "server" && mode !== "client") {
    throw new UsageError(
      mode === undefined
        ? "Missing mode: server or client"
        : `Unknown mode: "${mode}" (expected server or client)`,
    );
  }
  const common = {
    port: { type: "string" },
    host: { type: "string" },
    timeout: { type: "string" },
    help: { type: "boolean", short: "h" },
  } as const;
  if (mode === "server") {
    const { values } = parseFlags({
      args: rest,
      options: { ...common, clients: { type: "string" } },
    });
    if (values.clients === undefined) throw new UsageError("Missing flag: --clients");
    const address = { hostname: values.host ?? "127.0.0.1", port: portFlag(values.port, 0) };
    const clients = integerFlag("clients", values.clients, 1, 1);
    const timeoutMs = secondsFlag("timeout", values.timeout, 60);
    return await withAddress(address, async () => {
      await echoServer({ ...address, clients, timeoutMs, output });
      return 0;
    });
  }
  const { values } = parseFlags({
    args: rest,
    options: { ...common, message: { type: "string" }, count: { type: "string" } },
  });
  const address = { hostname: values.host ?? "127.0.0.1", port: portFlag(values.port, 1) };
  const count = integerFlag("count", values.count, 1, 0);
  const timeoutMs = secondsFlag("timeout", values.timeout, 10);
  return await withAddress(address, async () => {
    await echoClient({ ...address, message: values.message, count, timeoutMs, output });
    return 0;
  });
}

/** A failure that names the address it concerns, for network errors. */
class AddressedError extends Error {
  readonly address: Address;
  constructor(cause: unknown, address: Address) {
    super("", { cause });
    this.address = address;
  }
}

/** Runs `body`, tagging what it throws with `address` so the report can name it. */
async function withAddress(address: Address, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (error) {
    throw new AddressedError(error, address);
  }
}

// ---------------------------------------------------------------- files

const SEND_FILE_USAGE = `Usage: ${PROGRAM} send-file HOST:PORT FILE [--timeout S]

Sends FILE to a receiver ("${PROGRAM} receive-file") in 4 MiB chunks, with a progress bar on
stderr, after its name, size and SHA-256; the receiver verifies the checksum
(examples/file_transfer.ts).

  HOST:PORT     the receiver's address, e.g. 127.0.0.1:8001 or [::1]:8001
  --timeout S   seconds to connect and to wait for each answer of the receiver (default 60)
  -h, --help    show this help`;

async function runSendFile(args: string[], output: Output): Promise<number> {
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
  if (positionals.length !== 2) {
    throw new UsageError(
      positionals.length < 2
        ? `Missing ${positionals.length === 0 ? "HOST:PORT and FILE" : "FILE"}`
        : `Unexpected argument: "${positionals[2]}"`,
    );
  }
  const address = parseAddress(positionals[0]);
  const timeoutMs = secondsFlag("timeout", values.timeout, 60);
  return await withAddress(address, async () => {
    await sendFile({ ...address, path: positionals[1], timeoutMs, output });
    return 0;
  });
}

const RECEIVE_FILE_USAGE =
  `Usage: ${PROGRAM} receive-file --port P --out DIR [--host H] [--timeout S]

Waits for one sender ("${PROGRAM} send-file"), writes its file into DIR chunk by chunk with
a progress bar on stderr, verifies its SHA-256, and exits (examples/file_transfer.ts).
Unsafe names (../x), existing files and files larger than the free space are refused.

  --port P      TCP port (0: any free port, printed on the first line)
  --out DIR     the directory to save into (created if missing)
  --host H      address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)
  --timeout S   seconds to wait for the sender, and at most between two chunks (default 60)
  -h, --help    show this help`;

async function runReceiveFile(args: string[], output: Output): Promise<number> {
  const { values } = parseFlags({
    args,
    options: {
      port: { type: "string" },
      out: { type: "string" },
      host: { type: "string" },
      timeout: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.out === undefined) throw new UsageError("Missing flag: --out");
  const address = { hostname: values.host ?? "127.0.0.1", port: portFlag(values.port, 0) };
  const timeoutMs = secondsFlag("timeout", values.timeout, 60);
  return await withAddress(address, async () => {
    await receiveFile({ ...address, out: values.out!, timeoutMs, output });
    return 0;
  });
}

// ---------------------------------------------------------------- demo, bench

/**
 * A script of the repository, as a local path.
 *
 * @throws {Error} If this file does not run from a checkout (e.g. from JSR,
 * whose package does not include `examples/` and `bench/`).
 */
function scriptPath(relative: string, what: string): string {
  const url = new URL(relative, import.meta.url);
  if (url.protocol !== "file:") {
    throw new Error(
      `${what} needs a checkout of the repository: ${relative} is not in the published package`,
    );
  }
  return fileURLToPath(url);
}

/**
 * Runs a script of the repository with this Deno, its output passed through.
 * On the console the child inherits the terminal (so progress bars draw);
 * otherwise its lines are forwarded to `output`.
 */
async function runScript(script: string, args: string[], output: Output): Promise<number> {
  const inherit = output === CONSOLE;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    stdin: inherit ? "inherit" : "null",
    stdout: inherit ? "inherit" : "piped",
    stderr: inherit ? "inherit" : "piped",
  }).spawn();
  if (!inherit) {
    await Promise.all([
      forwardLines(child.stdout, output.out),
      forwardLines(child.stderr, output.err),
    ]);
  }
  const status = await child.status;
  return status.signal ? 128 + signalNumber(status.signal) : status.code;
}

function signalNumber(signal: Deno.Signal): number {
  return ({ SIGINT: 2, SIGKILL: 9, SIGTERM: 15 } as Partial<Record<Deno.Signal, number>>)[
    signal
  ] ?? 1;
}

async function forwardLines(
  stream: ReadableStream<Uint8Array>,
  write: (line: string) => void,
): Promise<void> {
  let pending = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    const lines = (pending + text).split("\n");
    pending = lines.pop()!;
    for (const line of lines) write(line);
  }
  if (pending !== "") write(pending);
}

const DEMO_USAGE = `Usage: ${PROGRAM} demo [flags of examples/fedavg.ts]

Federated averaging on the UCI handwritten digits: one server and N client processes on
127.0.0.1 (the same as "deno task demo"). Needs a checkout of the repository.

Common flags (run "${PROGRAM} demo --flags" for all of them):
  --clients N       client processes (default 4)
  --rounds R        rounds of federated averaging (default 10)
  --hidden H[,H…]   hidden layer widths (default: none, softmax regression)
  --partition P     iid or shards (default shards)
  --steps S         at most S local SGD steps per round (default 0: no limit)
  -h, --help        show this help`;

async function runDemo(args: string[], output: Output): Promise<number> {
  const script = scriptPath("./examples/fedavg.ts", "demo");
  if (args.length === 1 && args[0] === "--flags") {
    return await runScript(script, ["--help"], output);
  }
  // Check the flags here, so a mistake reads like every other command's. The
  // import is by URL so that the published package, which has no examples/,
  // does not depend on it.
  const demo = new URL("./examples/fedavg.ts", import.meta.url);
  const { parseSettings } = await import(demo.href) as { parseSettings(args: string[]): unknown };
  try {
    parseSettings(args);
  } catch (error) {
    throw toUsageError(error);
  }
  return await runScript(script, args, output);
}

const BENCH_USAGE = `Usage: ${PROGRAM} bench [--quick] [--no-peers]

Runs the side-by-side benchmark (bench/run.ts, the same as "deno task bench"): fedcomm,
a raw-bytes baseline and the Node.js and Python peers, each as a server process and a
client-host process on 127.0.0.1, then prints a table. A full run takes many minutes.
Needs a checkout of the repository.

  --quick       fewer rounds (a smoke test)
  --no-peers    skip the Node.js and Python peers
  -h, --help    show this help`;

async function runBench(args: string[], output: Output): Promise<number> {
  const { values } = parseFlags({
    args,
    options: {
      quick: { type: "boolean" },
      "no-peers": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  const script = scriptPath("./bench/run.ts", "bench");
  const flags = [
    ...(values.quick ? ["--quick"] : []),
    ...(values["no-peers"] ? ["--no-peers"] : []),
  ];
  return await runScript(script, flags, output);
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

/** Reads the reason and explanation out of a reject. */
function rejection(error: ProtocolError): { reason: string; message: string } | undefined {
  const reason = (error as ProtocolError & { reason?: unknown }).reason;
  const match = error.message.match(/^Server rejected the connection: ([^:]+): (.*)$/s);
  if (match === null) return undefined;
  return { reason: typeof reason === "string" ? reason : match[1], message: match[2] };
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
    if (error instanceof ProtocolError) {
      const refused = rejection(error);
      if (refused !== undefined) return { outcome: "rejected", ...refused, handshakeMs };
    }
    const where = formatAddress(options);
    if (error instanceof TimeoutError) {
      throw new TimeoutError(
        `No answer within ${options.timeoutMs} ms from ${where}: ` +
          `not a fedcomm server, or one that is stuck`,
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

const PROBE_USAGE =
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

async function runProbe(args: string[], output: Output): Promise<number> {
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
    const where = formatAddress(address);
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
  });
}

// ---------------------------------------------------------------- main

const COMMANDS: Readonly<Record<string, Command>> = {
  echo: {
    summary: "a multi-connection echo server (echo server) and its client (echo client)",
    usage: ECHO_USAGE,
    run: runEcho,
  },
  "send-file": {
    summary: "send a file in chunks with a progress bar and a SHA-256 check",
    usage: SEND_FILE_USAGE,
    run: runSendFile,
  },
  "receive-file": {
    summary: "receive one file into a directory, verify it, exit",
    usage: RECEIVE_FILE_USAGE,
    run: runReceiveFile,
  },
  demo: {
    summary: "federated averaging on the UCI digits: a server and N client processes",
    usage: DEMO_USAGE,
    run: runDemo,
  },
  bench: {
    summary: "the side-by-side benchmark against a raw baseline and Node.js/Python peers",
    usage: BENCH_USAGE,
    run: runBench,
  },
  probe: {
    summary: "run the handshake against a server and report what it answered",
    usage: PROBE_USAGE,
    run: runProbe,
  },
};

const USAGE = `Usage: ${PROGRAM} <command> [flags]

fedcomm's command line (deno run -A cli.ts, deno task cli, or jsr:@fedcomm/fedcomm/cli).

Commands:
${Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(14)}${c.summary}`).join("\n")}

Run "${PROGRAM} <command> --help" for a command's flags.

  -h, --help    show this help`;

/**
 * Runs the command line.
 *
 * @param args The arguments, without the program name: `["echo", "server", "--port", "0", …]`.
 * @param output Where to write (default: the console).
 * @returns The exit code: 0 on success, 1 on failure, 2 for a bad command line.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { main } from "./cli.ts";
 *
 * const lines: string[] = [];
 * const code = await main(["probe", "--help"], { out: (l) => lines.push(l), err: () => {} });
 * assert.equal(code, 0);
 * assert.match(lines[0], /^Usage: fedcomm probe HOST:PORT/);
 * ```
 */
export async function main(args: string[], output: Output = CONSOLE): Promise<number> {
  const [name, ...rest] = args;
  const command = name === undefined ? undefined : COMMANDS[name];
  const help = command === undefined ? `${PROGRAM} --help` : `${PROGRAM} ${name} --help`;
  try {
    if (name === "--help" || name === "-h") {
      output.out(USAGE);
      return 0;
    }
    if (name === undefined) throw new UsageError("Missing command");
    if (command === undefined) {
      throw new UsageError(
        name.startsWith("-") ? `Unknown flag: ${name}` : `Unknown command: "${name}"`,
      );
    }
    if (wantsHelp(rest)) {
      output.out(command.usage);
      return 0;
    }
    return await command.run(rest, output);
  } catch (error) {
    if (error instanceof AddressedError) {
      return reportFailure(error.cause, output, help, error.address);
    }
    return reportFailure(error, output, help);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
