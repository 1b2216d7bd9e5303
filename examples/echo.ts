/**
 * A multi-connection echo server and its client, over fedcomm.
 *
 * ```sh
 * deno run -A examples/echo.ts server --port 5678 --clients 2
 * deno run -A examples/echo.ts client --port 5678 --message "Message from client" --count 2
 * deno run -A examples/echo.ts client --port 5678 --message "hello"
 * ```
 *
 * The server waits for `--clients` clients, then echoes every message back
 * to the client that sent it, each client in its own loop, and exits once all
 * have left. The client sends `--count` messages and prints each echo.
 *
 * **What the seeds did.** Seed 003's first `echo_server.py` calls `accept()`
 * and then `recv(1024)` in a loop: it serves one client at a time, and, as
 * the tutorial says, a second client waits until the first one quits. Seeds
 * 001 and 004 (the `multiconn-server.py` of the Real Python tutorial) fix that
 * with non-blocking sockets and a `selectors` event loop keeping an
 * input/output buffer per connection, and seed 002 §5 does the same with
 * `select.select`. But each "message" there is whatever one `recv(1024)`
 * returned: two quick sends come back as one ("you may see the server echo a
 * combined message", seed 003), a message over 1024 bytes comes back in
 * pieces, the client decides it is done by counting bytes, and every wait
 * (`sel.select(timeout=None)`, the client's `recv`) blocks forever: one
 * `time.sleep(5)` in the loop (seed 002 §5.2) stalls every client, and a
 * server that died leaves its clients hanging.
 *
 * **What fedcomm does better.**
 *
 * - Every message is one MessagePack value in its own frame, so an echo is
 *   exactly the message sent, however the bytes were cut on the way, and it
 *   can be any value (a string, a map, a `Float32Array`) up to the frame limit.
 * - No hand-written event loop: one `for await` per client over
 *   `server.uploads({ ids: [id], count: Infinity })`. A client that is slow to read
 *   its echoes holds up only its own loop.
 * - A client that leaves ends only its own loop (with `count: Infinity`, a
 *   disconnect ends the iteration instead of failing it): the server keeps
 *   serving the others and says who left.
 * - Every wait has a time limit: the server waits `--timeout` seconds for its
 *   clients to join, the client `--timeout` seconds to connect and for each
 *   echo, and each gives a one-line error (exit code 1) instead of hanging.
 *
 * fedcomm serves a fixed set of clients (the participants of a federated
 * round): ids are given in order of arrival, and echoing starts once all
 * `--clients` have joined, so start the clients within `--timeout` of each
 * other. `fedcomm echo server …` and `fedcomm echo client …` (`cli.ts`) run
 * the same code.
 *
 * @module
 */

import { connect, listen, TimeoutError } from "../mod.ts";
import {
  type Address,
  CONSOLE,
  formatAddress,
  integerFlag,
  type Output,
  parseFlags,
  portFlag,
  reportFailure,
  secondsFlag,
  show,
  UsageError,
} from "./command_line.ts";

/** Options for {@linkcode echoServer}. */
export interface EchoServerOptions {
  /** The TCP port; 0 lets the system choose (it is printed). */
  port: number;
  /** How many clients to serve. */
  clients: number;
  /** The address to listen on (default `"127.0.0.1"`; `"0.0.0.0"` for every interface). */
  hostname?: string;
  /** Milliseconds to wait for every client to join, and for each echo to be written (default 60,000). */
  timeoutMs?: number;
  /** Where the server reports (default: the console). */
  output?: Output;
}

/** What an echo server did, once every client has left. */
export interface EchoServerSummary {
  /** How many messages it echoed. */
  readonly echoed: number;
  /** How many echoes could not be delivered (their client had left). */
  readonly undelivered: number;
}

/**
 * Runs the echo server: waits for the clients, echoes each message back to
 * its sender, and returns when every client has left.
 *
 * @param options The port, the number of clients and the time limit.
 * @returns How many messages were echoed.
 * @throws {TimeoutError} If not every client joined in time.
 * @throws {Deno.errors.AddrInUse} If the port is taken.
 */
export async function echoServer(options: EchoServerOptions): Promise<EchoServerSummary> {
  const output = options.output ?? CONSOLE;
  const timeout = options.timeoutMs ?? 60_000;
  await using server = listen({
    clients: options.clients,
    port: options.port,
    hostname: options.hostname ?? "127.0.0.1",
  });
  const address = formatAddress({ hostname: server.hostname, port: server.port });
  output.out(`listening on ${address} for ${server.clients} client(s)`);
  await server.ready({ timeout });
  output.out(`all ${server.clients} client(s) joined`);
  let echoed = 0;
  let undelivered = 0;
  const serve = async (id: number): Promise<void> => {
    // One loop per client: a client that is slow to read its echoes delays only itself.
    for await (const { value } of server.uploads({ ids: [id], count: Infinity })) {
      output.out(`client ${id} sent ${show(value)}`);
      try {
        await server.send(new Map([[id, value]]), { timeout });
        echoed++;
      } catch (error) {
        undelivered++;
        output.out(`client ${id}: echo not delivered: ${(error as Error).message}`);
      }
    }
    output.out(`client ${id} left`);
  };
  await Promise.all(Array.from({ length: server.clients }, (_, id) => serve(id)));
  output.out(`all clients left: ${echoed} message(s) echoed`);
  return { echoed, undelivered };
}

/** Options for {@linkcode echoClient}. */
export interface EchoClientOptions {
  /** The server's TCP port. */
  port: number;
  /** The server's address (default `"127.0.0.1"`). */
  hostname?: string;
  /** The text to send (default `"hello"`). */
  message?: string;
  /** How many messages to send, each waiting for its echo (default 1; 0 joins and leaves). */
  count?: number;
  /** Milliseconds to connect, and to wait for each echo (default 10,000). */
  timeoutMs?: number;
  /** Where the client reports (default: the console). */
  output?: Output;
}

/**
 * Runs the echo client: connects, sends `count` messages one at a time and
 * prints each echo.
 *
 * @param options The server's address, the message and the time limit.
 * @returns The echoes received, in order.
 * @throws {Deno.errors.ConnectionRefused} If nothing listens at the address.
 * @throws {TimeoutError} If the server did not welcome the client or echo a message in time.
 * @throws {PeerDisconnectedError} If the server closed the connection.
 */
export async function echoClient(options: EchoClientOptions): Promise<unknown[]> {
  const output = options.output ?? CONSOLE;
  const timeout = options.timeoutMs ?? 10_000;
  const message = options.message ?? "hello";
  const count = options.count ?? 1;
  await using client = await connect({
    port: options.port,
    hostname: options.hostname ?? "127.0.0.1",
    timeout,
  });
  output.out(`connected as client ${client.id} of ${client.clients}`);
  const echoes: unknown[] = [];
  for (let i = 1; i <= count; i++) {
    const text = count === 1 ? message : `${message} #${i}`;
    await client.send(text);
    try {
      echoes.push(await client.recv({ timeout }));
    } catch (error) {
      if (!(error instanceof TimeoutError)) throw error;
      throw new TimeoutError(
        `No echo within ${timeout} ms: the server is still waiting for its other clients, ` +
          `or is stuck`,
        { cause: error },
      );
    }
    output.out(`echo: ${show(echoes.at(-1))}`);
  }
  return echoes;
}

const USAGE =
  `Usage: deno run -A examples/echo.ts server --port P --clients N [--host H] [--timeout S]
       deno run -A examples/echo.ts client --port P [--host H] [--message TEXT] [--count K]
                                           [--timeout S]

A multi-connection echo server over fedcomm, and its client.

server: waits for N clients, echoes each message back to its sender, exits when all have left.
  --port P       TCP port (0: any free port, printed on the first line)
  --clients N    how many clients to serve
  --host H       address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)
  --timeout S    seconds to wait for the clients to join (default 60)

client: sends K messages, one at a time, and prints each echo.
  --port P       the server's port
  --host H       the server's address (default 127.0.0.1)
  --message TEXT what to send (default "hello"; numbered "TEXT #i" when K > 1)
  --count K      how many messages (default 1; 0 joins and leaves at once)
  --timeout S    seconds to connect and to wait for each echo (default 10)

  -h, --help     show this help`;

/**
 * The example's command line: `server …` or `client …`.
 *
 * @param args The arguments, without the program name.
 * @param output Where to write (default: the console).
 * @returns The exit code: 0 on success, 1 on failure, 2 for a bad command line.
 */
export async function main(args: string[], output: Output = CONSOLE): Promise<number> {
  const [mode, ...rest] = args;
  let address: Address | undefined;
  try {
    if (mode === undefined || mode === "--help" || mode === "-h") {
      if (mode === undefined) throw new UsageError("Missing mode: server or client");
      output.out(USAGE);
      return 0;
    }
    const { values } = parseFlags({
      args: rest,
      options: {
        port: { type: "string" },
        host: { type: "string" },
        clients: { type: "string" },
        message: { type: "string" },
        count: { type: "string" },
        timeout: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
    if (values.help) {
      output.out(USAGE);
      return 0;
    }
    if (mode === "server") {
      for (const flag of ["message", "count"] as const) {
        if (values[flag] !== undefined) throw new UsageError(`Unknown flag for server: --${flag}`);
      }
      if (values.clients === undefined) throw new UsageError("Missing flag: --clients");
      const port = portFlag(values.port, 0);
      address = { hostname: values.host ?? "127.0.0.1", port };
      await echoServer({
        port,
        hostname: address.hostname,
        clients: integerFlag("clients", values.clients, 1, 1),
        timeoutMs: secondsFlag("timeout", values.timeout, 60),
        output,
      });
    } else if (mode === "client") {
      if (values.clients !== undefined) throw new UsageError("Unknown flag for client: --clients");
      const port = portFlag(values.port, 1);
      address = { hostname: values.host ?? "127.0.0.1", port };
      await echoClient({
        port,
        hostname: address.hostname,
        message: values.message,
        count: integerFlag("count", values.count, 1, 0),
        timeoutMs: secondsFlag("timeout", values.timeout, 10),
        output,
      });
    } else {
      throw new UsageError(`Unknown mode: "${mode}" (expected server or client)`);
    }
    return 0;
  } catch (error) {
    return reportFailure(error, output, "deno run -A examples/echo.ts --help", address);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
