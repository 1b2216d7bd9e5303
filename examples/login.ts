/**
 * Logging in, done right: seed 002 case 3's "remote login system" with
 * fedcomm's mutual authentication.
 *
 * ```sh
 * deno run -A examples/login.ts keygen --dir creds alice bob
 * deno run -A examples/login.ts server --port 8001 --users creds/users.json
 * deno run -A examples/login.ts client --port 8001 --name alice --secret-file creds/alice.secret
 * FEDCOMM_SECRET=$(cat creds/bob.secret) deno run -A examples/login.ts client --port 8001 --name bob
 * ```
 *
 * `keygen` makes a random 32-byte secret per name: `users.json` (name →
 * secret, for the server) and `<name>.secret` (for that client), readable by
 * the owner only. The server waits for every user in the file to log in
 * (`--clients` fewer), greets each by name, as the seed's "欢迎使用XX系统" and
 * "登陆成功", and exits when all have left; it prints every refused attempt.
 * The client reads its secret from `--secret-file` or `FEDCOMM_SECRET`,
 * never from the command line (where `ps` would show it).
 *
 * **What the seed did.** Its client sends
 * `{"username": …, "password": md5(salt + password)}` as JSON, in the clear,
 * with one salt (`"sdasdfagfawds"`) written into both programs; the server
 * compares the string with the one in its `user` file. That is broken in
 * every way that matters:
 *
 * - The MD5 is the password. Whoever sees the traffic (or the server's file)
 *   replays the string and logs in without knowing the password.
 * - One fixed, public salt: equal passwords give equal hashes, and one
 *   precomputed table for that salt cracks every user. MD5 is fast (billions
 *   of guesses per second on a GPU), so a dictionary finds most real
 *   passwords in minutes.
 * - Only the client is checked: a fake server collects the hashes, which, as
 *   above, are all it needs.
 * - The comparison is `==` (not constant time), the JSON is read with one
 *   `recv(1024)` (sticky packets), a malformed login ends the server with a
 *   stack trace, and each line of the `user` file but the last keeps its
 *   `"\n"`, so `passwd == pwd` refuses every user but the last.
 *
 * **What fedcomm does instead** (`listen({ auth: { clients: { name: secret
 * } } })` and `connect({ name, secret })`, or one `secret` for a whole
 * cohort): a challenge–response with HMAC-SHA256 over both sides' fresh
 * 32-byte random nonces and the client's name.
 *
 * - The secret never crosses the wire, and a recorded handshake cannot be
 *   replayed: the next one has new nonces.
 * - It is mutual: the server proves first, and the client checks that proof
 *   before it sends its own, so an impostor server learns nothing it can use,
 *   and the client fails with `AuthenticationError`.
 * - The proof covers the name: alice's proof does not log in as bob. A name
 *   the server does not know gets a challenge under a random key, so a
 *   prober cannot tell which names exist.
 * - Secrets must be at least 16 bytes: random keys, not passwords. (From a
 *   recorded handshake, a guessable password could be tested offline; a
 *   32-byte random key cannot.)
 * - Proofs are compared in constant time (`crypto.subtle.verify`), and a
 *   refused client is told `reject` with reason `auth`, or fails on its own
 *   side, while the server goes on.
 *
 * Authentication is not encryption: the messages after the handshake travel
 * as they are. For confidentiality use TLS as well (`listen({ tls })` and
 * `connect({ tls })`). The server's `users.json` holds the secrets themselves
 * (HMAC needs them), so keep it private.
 *
 * @module
 */

import { join } from "node:path";
import { AuthenticationError, connect, listen, RejectedError, TimeoutError } from "../mod.ts";
import {
  type Address,
  CONSOLE,
  formatAddress,
  integerFlag,
  osReason,
  type Output,
  parseFlags,
  portFlag,
  reportFailure,
  secondsFlag,
  UsageError,
} from "./command_line.ts";

/** Bytes of the secrets `keygen` makes. */
export const SECRET_BYTES = 32;

/** The environment variable a client reads its secret from. */
export const SECRET_ENV = "FEDCOMM_SECRET";

/** A valid user name: what `connect({ name })` accepts, and a safe file name. */
const NAME = /^[A-Za-z0-9._-]{1,64}$/;

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Makes a random secret per name: `users.json` (name → secret) and
 * `<name>.secret` in `dir`, readable by the owner only. Existing names in
 * `users.json` keep their secrets.
 *
 * @param dir The directory (created if missing).
 * @param names The user names.
 * @returns The path of `users.json`.
 * @throws {Error} If a name is invalid or the files cannot be written.
 */
export async function keygen(dir: string, names: readonly string[]): Promise<string> {
  for (const name of names) {
    if (!NAME.test(name)) {
      throw new Error(`Invalid name: "${name}" is not 1–64 letters, digits, ".", "_" or "-"`);
    }
  }
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const usersPath = join(dir, "users.json");
  const users = await readUsers(usersPath).catch((error): Record<string, string> => {
    if (error instanceof Deno.errors.NotFound || error?.cause instanceof Deno.errors.NotFound) {
      return {};
    }
    throw error;
  });
  for (const name of names) {
    const secret = users[name] ?? hex(crypto.getRandomValues(new Uint8Array(SECRET_BYTES)));
    users[name] = secret;
    await writePrivate(join(dir, `${name}.secret`), `${secret}\n`);
  }
  await writePrivate(usersPath, `${JSON.stringify(users, null, 2)}\n`);
  return usersPath;
}

/** Writes a file only its owner can read, whatever its mode was. */
async function writePrivate(path: string, text: string): Promise<void> {
  await Deno.writeTextFile(path, text, { mode: 0o600 });
  await Deno.chmod(path, 0o600);
}

/**
 * Reads a credentials file: a JSON object of user name → secret.
 *
 * @param path The file.
 * @returns The secrets by name.
 * @throws {Error} If it cannot be read or is not such an object.
 */
export async function readUsers(path: string): Promise<Record<string, string>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new Error(`Cannot read ${path}: ${osReason(error)}`, { cause: error });
  }
  let users: unknown;
  try {
    users = JSON.parse(text);
  } catch {
    throw new Error(`Invalid users file ${path}: not JSON`);
  }
  if (typeof users !== "object" || users === null || Array.isArray(users)) {
    throw new Error(`Invalid users file ${path}: expected an object of name → secret`);
  }
  for (const [name, secret] of Object.entries(users)) {
    if (!NAME.test(name) || typeof secret !== "string") {
      throw new Error(`Invalid users file ${path}: entry "${name}" is not name → secret text`);
    }
  }
  return users as Record<string, string>;
}

/** Options for {@linkcode loginServer}. */
export interface LoginServerOptions {
  /** The TCP port; 0 lets the system choose (it is printed). */
  port: number;
  /** The secrets by user name. */
  users: Readonly<Record<string, string>>;
  /** How many users must log in (default: all of them). */
  clients?: number;
  /** The address to listen on (default `"127.0.0.1"`). */
  hostname?: string;
  /** Milliseconds to wait for the users to log in (default 60,000). */
  timeoutMs?: number;
  /** Where the server reports (default: the console). */
  output?: Output;
}

/**
 * Runs the login server: admits only clients that prove their secret,
 * greets each by name once all have logged in, and returns when all have left.
 *
 * @param options The port, the users and the time limit.
 * @returns The names that logged in, by client id.
 * @throws {TimeoutError} If not every user logged in in time.
 * @throws {RangeError} If a secret is shorter than 16 bytes.
 */
export async function loginServer(options: LoginServerOptions): Promise<string[]> {
  const output = options.output ?? CONSOLE;
  const names = Object.keys(options.users);
  const clients = options.clients ?? names.length;
  await using server = listen({
    clients,
    port: options.port,
    hostname: options.hostname ?? "127.0.0.1",
    auth: { clients: options.users },
  });
  output.out(
    `listening on ${formatAddress({ hostname: server.hostname, port: server.port })} ` +
      `for ${clients} of ${names.length} user(s): ${names.join(", ")}`,
  );
  const loggedIn: string[] = [];
  server.addEventListener("join", (event) => {
    loggedIn[event.clientId] = event.name ?? "";
    output.out(`logged in: "${event.name}" as client ${event.clientId}`);
  });
  server.addEventListener("refuse", (event) => {
    const from = event.address === undefined
      ? ""
      : ` from ${formatAddress(event.address as Deno.NetAddr)}`;
    const who = event.name === undefined ? "" : ` ("${event.name}")`;
    const why = event.reason === "error"
      ? `left during the handshake (${event.message})`
      : `${event.reason}: ${event.message}`;
    output.out(`refused${from}${who}: ${why}`);
  });
  server.addEventListener("leave", (event) => output.out(`left: "${event.name}"`));
  await server.ready({ timeout: options.timeoutMs ?? 60_000 });
  await Promise.all(loggedIn.map(async (name, id) => {
    try {
      await server.send({ [id]: { welcome: "欢迎使用XX系统", login: "登陆成功", name } });
    } catch {
      // That user already left: the "leave" event said so.
    }
  }));
  // Wait for everyone to leave: with count Infinity, a disconnect ends a client's stream.
  for await (const { id, value } of server.uploads({ count: Infinity })) {
    output.out(`"${loggedIn[id]}" says ${JSON.stringify(value)}`);
  }
  output.out(`all users left`);
  return loggedIn;
}

/** Options for {@linkcode loginClient}. */
export interface LoginClientOptions {
  /** The server's TCP port. */
  port: number;
  /** The server's address (default `"127.0.0.1"`). */
  hostname?: string;
  /** The user name. */
  name: string;
  /** The user's secret. */
  secret: string;
  /** Milliseconds to log in, and to wait for the greeting (default 10,000). */
  timeoutMs?: number;
  /** Where the client reports (default: the console). */
  output?: Output;
}

/**
 * Logs in: connects with a name and a secret, prints the server's greeting, leaves.
 *
 * @param options The server's address, the name and the secret.
 * @returns The greeting.
 * @throws {AuthenticationError} If the server did not prove it knows the secret (a wrong
 * secret, an unknown name, or not the real server).
 * @throws {RejectedError} If the server refused the client (reason `auth`, `full`, …).
 * @throws {Deno.errors.ConnectionRefused} If nothing listens at the address.
 */
export async function loginClient(options: LoginClientOptions): Promise<unknown> {
  const output = options.output ?? CONSOLE;
  const timeout = options.timeoutMs ?? 10_000;
  await using client = await connect({
    port: options.port,
    hostname: options.hostname ?? "127.0.0.1",
    name: options.name,
    secret: options.secret,
    timeout,
  });
  output.out(
    `logged in as "${options.name}": client ${client.id} of ${client.clients}` +
      (client.authenticated ? ", both sides proved the secret" : ""),
  );
  let greeting: unknown;
  try {
    greeting = await client.recv({ timeout });
  } catch (error) {
    if (!(error instanceof TimeoutError)) throw error;
    throw new TimeoutError(
      `No greeting within ${timeout} ms: the server is still waiting for the other users`,
      { cause: error },
    );
  }
  output.out(`server: ${JSON.stringify(greeting)}`);
  return greeting;
}

/** Reads the client's secret: from a file, or from the environment. */
async function clientSecret(file: string | undefined): Promise<string> {
  if (file !== undefined) {
    try {
      return (await Deno.readTextFile(file)).trim();
    } catch (error) {
      throw new Error(`Cannot read ${file}: ${osReason(error)}`);
    }
  }
  const secret = Deno.env.get(SECRET_ENV);
  if (secret === undefined || secret === "") {
    throw new UsageError(`Missing secret: give --secret-file FILE or set ${SECRET_ENV}`);
  }
  return secret.trim();
}

/** Explains an authentication failure in one line. */
function explain(error: unknown): unknown {
  if (error instanceof AuthenticationError) {
    return new Error(`Login failed: ${error.message}`, { cause: error });
  }
  if (error instanceof RejectedError && error.reason === "auth") {
    return new Error(`Login refused: ${error.message}`, { cause: error });
  }
  return error;
}

const USAGE = `Usage: deno run -A examples/login.ts keygen --dir DIR NAME...
       deno run -A examples/login.ts server --port P --users FILE [--clients N] [--host H]
                                            [--timeout S]
       deno run -A examples/login.ts client --port P --name NAME [--secret-file FILE]
                                            [--host H] [--timeout S]

Seed 002's login, done right: each client proves a per-user secret with HMAC-SHA256
challenge-response (mutual, replay-proof); the secret never crosses the wire.

keygen: makes a random ${SECRET_BYTES}-byte secret per NAME: DIR/users.json and DIR/NAME.secret (0600).

server: admits the users of FILE (name → secret) who prove their secret, greets them,
        exits when all have left.
  --port P           TCP port (0: any free port, printed on the first line)
  --users FILE       the credentials file, e.g. DIR/users.json
  --clients N        how many users must log in (default: all in FILE)
  --host H           address to listen on (default 127.0.0.1)
  --timeout S        seconds to wait for the users (default 60)

client: logs in as NAME and prints the greeting.
  --port P           the server's port
  --name NAME        the user name
  --secret-file FILE the user's secret (default: the ${SECRET_ENV} environment variable)
  --host H           the server's address (default 127.0.0.1)
  --timeout S        seconds to log in and to wait for the greeting (default 10)

  -h, --help         show this help`;

/**
 * The example's command line: `keygen …`, `server …` or `client …`.
 *
 * @param args The arguments, without the program name.
 * @param output Where to write (default: the console).
 * @returns The exit code: 0 on success, 1 on failure, 2 for a bad command line.
 */
export async function main(args: string[], output: Output = CONSOLE): Promise<number> {
  const [mode, ...rest] = args;
  let address: Address | undefined;
  try {
    if (mode === undefined) throw new UsageError("Missing mode: keygen, server or client");
    if (mode === "--help" || mode === "-h") {
      output.out(USAGE);
      return 0;
    }
    const { values, positionals } = parseFlags({
      args: rest,
      allowPositionals: mode === "keygen",
      options: {
        dir: { type: "string" },
        port: { type: "string" },
        users: { type: "string" },
        clients: { type: "string" },
        name: { type: "string" },
        "secret-file": { type: "string" },
        host: { type: "string" },
        timeout: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
    if (values.help) {
      output.out(USAGE);
      return 0;
    }
    const allowed: Record<string, readonly string[]> = {
      keygen: ["dir"],
      server: ["port", "users", "clients", "host", "timeout"],
      client: ["port", "name", "secret-file", "host", "timeout"],
    };
    if (!(mode in allowed)) {
      throw new UsageError(`Unknown mode: "${mode}" (expected keygen, server or client)`);
    }
    for (const [flag, value] of Object.entries(values)) {
      if (value !== undefined && flag !== "help" && !allowed[mode].includes(flag)) {
        throw new UsageError(`Unknown flag for ${mode}: --${flag}`);
      }
    }
    if (mode === "keygen") {
      if (values.dir === undefined) throw new UsageError("Missing flag: --dir");
      if (positionals.length === 0) throw new UsageError("Missing NAME");
      const path = await keygen(values.dir, positionals);
      output.out(`wrote ${path} and ${positionals.map((n) => `${n}.secret`).join(", ")}`);
      return 0;
    }
    const port = portFlag(values.port, mode === "server" ? 0 : 1);
    address = { hostname: values.host ?? "127.0.0.1", port };
    if (mode === "server") {
      if (values.users === undefined) throw new UsageError("Missing flag: --users");
      const users = await readUsers(values.users);
      const count = Object.keys(users).length;
      if (count === 0) throw new Error(`Invalid users file ${values.users}: no users`);
      await loginServer({
        port,
        hostname: address.hostname,
        users,
        clients: integerFlag("clients", values.clients, count, 1, count),
        timeoutMs: secondsFlag("timeout", values.timeout, 60),
        output,
      });
      return 0;
    }
    if (values.name === undefined) throw new UsageError("Missing flag: --name");
    const secret = await clientSecret(values["secret-file"]);
    await loginClient({
      port,
      hostname: address.hostname,
      name: values.name,
      secret,
      timeoutMs: secondsFlag("timeout", values.timeout, 10),
      output,
    }).catch((error) => {
      throw explain(error);
    });
    return 0;
  } catch (error) {
    return reportFailure(error, output, "deno run -A examples/login.ts --help", address);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
