/**
 * A UDP echo server and client, as in seed 002 §2.2, with a time limit on
 * every receive.
 *
 * ```sh
 * deno run -A --unstable-net examples/udp_echo.ts server --port 8001
 * deno run -A --unstable-net examples/udp_echo.ts client --port 8001 --message hello --count 3
 * deno run -A --unstable-net examples/udp_echo.ts server --port 8001 --lose 2   # drop every 2nd
 * ```
 *
 * **`--unstable-net` is required.** `Deno.listenDatagram` is still an
 * unstable API in Deno 2.9.6: without the flag, `Deno.listenDatagram` is
 * `undefined` at run time, and calling it throws `TypeError:
 * Deno.listenDatagram is not a function` (type checking passes, so the
 * mistake shows only when the program runs). This example checks first and
 * exits with `error: Deno.listenDatagram is unstable: run with --unstable-net`
 * and exit code 1. (A project can set `"unstable": ["net"]` in `deno.json`
 * instead of passing the flag.)
 *
 * **What the seed did.** Its server loops on `recvfrom(1024)` and answers
 * "已收到" to each sender; its client `sendto`s a line and then blocks in
 * `recvfrom` until a reply comes, forever if the datagram or the reply was
 * lost. The server reads at most 1024 bytes of each datagram and silently
 * drops the rest.
 *
 * **What this version does.** The server echoes each datagram whole (up to
 * 65,507 bytes, the most an IPv4 UDP datagram can carry). The client waits
 * `--timeout` seconds for each echo and reports a lost one instead of hanging,
 * then goes on with the next message, as a UDP program must: nothing resends
 * it. `--lose K` makes the server ignore every K-th datagram, to show what the
 * client does when the network loses one.
 *
 * **When datagrams are the wrong choice: model weights.** A datagram carries
 * at most 65,507 bytes (64 KiB minus the headers), so a 100 MiB model is
 * 1,601 full datagrams, each crossing a 1,500-byte-MTU link as 45 IP
 * fragments, and losing any one fragment loses the whole datagram. UDP does
 * not retransmit, does not keep order (datagrams can arrive reordered or
 * twice), and has no congestion or flow control: a sender that bursts 1,601
 * datagrams overflows the receiver's socket buffer and the routers' queues,
 * and the kernel drops the excess without telling anyone. Making that
 * reliable means numbering, acknowledging, resending and pacing: rebuilding
 * TCP. That is why fedcomm runs on TCP. Datagrams fit small, frequent,
 * loss-tolerant messages where a stale one is worthless anyway: heartbeats,
 * service discovery, live metrics.
 *
 * @module
 */

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
  UsageError,
} from "./command_line.ts";

/** The largest UDP payload over IPv4: 65,535 − 8 (UDP header) − 20 (IP header). */
export const MAX_DATAGRAM_BYTES = 65_507;

/** Fails with a clear message where `Deno.listenDatagram` is missing (no `--unstable-net`). */
function requireDatagrams(): void {
  if (typeof Deno.listenDatagram !== "function") {
    throw new Error("Deno.listenDatagram is unstable: run with --unstable-net");
  }
}

/** Options for {@linkcode udpEchoServer}. */
export interface UdpEchoServerOptions {
  /** The UDP port; 0 lets the system choose (it is printed). */
  port: number;
  /** The address to listen on (default `"127.0.0.1"`). */
  hostname?: string;
  /** Stop after this many datagrams (default: run until interrupted). */
  count?: number;
  /** Ignore every `lose`-th datagram, as a lossy network would (default 0: none). */
  lose?: number;
  /** Where the server reports (default: the console). */
  output?: Output;
}

/**
 * Runs the UDP echo server: sends each datagram back to its sender.
 *
 * @param options The port, how many datagrams to serve, and the simulated loss.
 * @returns How many datagrams were echoed.
 * @throws {Error} Without `--unstable-net`.
 * @throws {Deno.errors.AddrInUse} If the port is taken.
 */
export async function udpEchoServer(options: UdpEchoServerOptions): Promise<number> {
  requireDatagrams();
  const output = options.output ?? CONSOLE;
  const count = options.count ?? Infinity;
  const lose = options.lose ?? 0;
  const socket = Deno.listenDatagram({
    transport: "udp",
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port,
  });
  const local = socket.addr as Deno.NetAddr;
  output.out(`listening on udp ${formatAddress(local)}`);
  const decoder = new TextDecoder();
  let received = 0;
  let echoed = 0;
  try {
    while (received < count) {
      const [data, from] = await socket.receive();
      received++;
      const sender = formatAddress(from as Deno.NetAddr);
      const text = JSON.stringify(decoder.decode(data.subarray(0, 60)));
      const shown = data.byteLength > 60 ? `${data.byteLength} bytes` : text;
      if (lose > 0 && received % lose === 0) {
        output.out(`from ${sender}: ${shown} (dropped: --lose ${lose})`);
        continue;
      }
      await socket.send(data, from);
      echoed++;
      output.out(`from ${sender}: ${shown} (echoed)`);
    }
  } finally {
    socket.close();
  }
  return echoed;
}

/** Options for {@linkcode udpEchoClient}. */
export interface UdpEchoClientOptions {
  /** The server's UDP port. */
  port: number;
  /** The server's address (default `"127.0.0.1"`). */
  hostname?: string;
  /** The text to send (default `"hello"`; numbered `"TEXT #i"` when `count` > 1). */
  message?: string;
  /** Send a payload of this many bytes instead of the message. */
  size?: number;
  /** How many datagrams to send, one at a time (default 1). */
  count?: number;
  /** Milliseconds to wait for each echo (default 1,000). */
  timeoutMs?: number;
  /** Where the client reports (default: the console). */
  output?: Output;
}

/** What {@linkcode udpEchoClient} got back. */
export interface UdpEchoResult {
  /** How many datagrams were sent. */
  readonly sent: number;
  /** How many came back in time. */
  readonly echoed: number;
}

/**
 * Runs the UDP echo client: sends each datagram and waits up to `timeoutMs`
 * for its echo; a lost one is reported and the client goes on.
 *
 * @param options The server's address, what to send and the time limit.
 * @returns How many datagrams were sent and echoed.
 * @throws {RangeError} If a datagram would exceed {@linkcode MAX_DATAGRAM_BYTES}.
 * @throws {Error} Without `--unstable-net`.
 */
export async function udpEchoClient(options: UdpEchoClientOptions): Promise<UdpEchoResult> {
  requireDatagrams();
  const output = options.output ?? CONSOLE;
  const count = options.count ?? 1;
  const timeout = options.timeoutMs ?? 1000;
  const message = options.message ?? "hello";
  if (options.size !== undefined && options.size > MAX_DATAGRAM_BYTES) {
    throw new RangeError(
      `Datagram too large: ${options.size} bytes exceeds the UDP limit of ` +
        `${MAX_DATAGRAM_BYTES} bytes; send large values over TCP (a fedcomm frame holds up to 512 MiB by default)`,
    );
  }
  const server: Deno.NetAddr = {
    transport: "udp",
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port,
  };
  const socket = Deno.listenDatagram({ transport: "udp", hostname: localFor(server), port: 0 });
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  // A receive cannot be cancelled: one that timed out stays pending for the next datagram.
  let pending: Promise<[Uint8Array, Deno.Addr]> | undefined;
  let echoed = 0;
  try {
    for (let i = 1; i <= count; i++) {
      const text = count === 1 ? message : `${message} #${i}`;
      const payload = options.size === undefined
        ? encoder.encode(text)
        : new Uint8Array(options.size).fill(0x61);
      const label = options.size === undefined ? JSON.stringify(text) : `${options.size} bytes`;
      await socket.send(payload, server);
      const deadline = Date.now() + timeout;
      let answered = false;
      while (!answered) {
        pending ??= socket.receive();
        const reply = await within(pending, deadline - Date.now());
        if (reply === undefined) break;
        pending = undefined;
        const [data] = reply;
        answered = data.byteLength === payload.byteLength &&
          data.every((byte, j) => byte === payload[j]);
        if (!answered) output.out(`stale reply ignored: ${JSON.stringify(decoder.decode(data))}`);
      }
      if (answered) {
        echoed++;
        output.out(`echo: ${label}`);
      } else {
        output.err(`no echo for ${label} within ${timeout} ms: lost (UDP does not resend)`);
      }
    }
  } finally {
    socket.close();
    pending?.catch(() => {}); // closing the socket interrupts it
  }
  return { sent: count, echoed };
}

/** The local address to send from: loopback for a loopback server, every interface otherwise. */
function localFor(server: Deno.NetAddr): string {
  const ipv6 = server.hostname.includes(":");
  if (/^(127\.|localhost$)/.test(server.hostname)) return "127.0.0.1";
  if (server.hostname === "::1") return "::1";
  return ipv6 ? "::" : "0.0.0.0";
}

/** Resolves with `promise`'s value, or `undefined` after `ms`. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<undefined>((resolve) => {
    timer = setTimeout(resolve, Math.max(0, ms), undefined);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

const USAGE =
  `Usage: deno run -A --unstable-net examples/udp_echo.ts server --port P [--host H] [--count N]
                                                        [--lose K]
       deno run -A --unstable-net examples/udp_echo.ts client --port P [--host H] [--message TEXT]
                                                        [--size BYTES] [--count K] [--timeout S]

A UDP echo server and client (Deno.listenDatagram needs --unstable-net).

server: sends every datagram back to its sender.
  --port P        UDP port (0: any free port, printed on the first line)
  --host H        address to listen on (default 127.0.0.1)
  --count N       stop after N datagrams (default: run until interrupted)
  --lose K        ignore every K-th datagram, as a lossy network would

client: sends K datagrams, one at a time, and waits for each echo.
  --port P        the server's port
  --host H        the server's address (default 127.0.0.1)
  --message TEXT  what to send (default "hello"; numbered "TEXT #i" when K > 1)
  --size BYTES    send BYTES bytes instead (at most ${MAX_DATAGRAM_BYTES})
  --count K       how many datagrams (default 1)
  --timeout S     seconds to wait for each echo (default 1); a lost echo is reported
                  and the exit code is 1

  -h, --help      show this help`;

/**
 * The example's command line: `server …` or `client …`.
 *
 * @param args The arguments, without the program name.
 * @param output Where to write (default: the console).
 * @returns The exit code: 0 if every echo came back, 1 on failure or loss, 2 for a bad command line.
 */
export async function main(args: string[], output: Output = CONSOLE): Promise<number> {
  const [mode, ...rest] = args;
  let address: Address | undefined;
  try {
    if (mode === undefined) throw new UsageError("Missing mode: server or client");
    if (mode === "--help" || mode === "-h") {
      output.out(USAGE);
      return 0;
    }
    const { values } = parseFlags({
      args: rest,
      options: {
        port: { type: "string" },
        host: { type: "string" },
        count: { type: "string" },
        lose: { type: "string" },
        message: { type: "string" },
        size: { type: "string" },
        timeout: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
    if (values.help) {
      output.out(USAGE);
      return 0;
    }
    const forbid = (flags: readonly (keyof typeof values)[]) => {
      for (const flag of flags) {
        if (values[flag] !== undefined) throw new UsageError(`Unknown flag for ${mode}: --${flag}`);
      }
    };
    if (mode === "server") {
      forbid(["message", "size", "timeout"]);
      const port = portFlag(values.port, 0);
      address = { hostname: values.host ?? "127.0.0.1", port };
      await udpEchoServer({
        port,
        hostname: address.hostname,
        count: values.count === undefined ? undefined : integerFlag("count", values.count, 1, 1),
        lose: integerFlag("lose", values.lose, 0, 2),
        output,
      });
      return 0;
    }
    if (mode === "client") {
      forbid(["lose"]);
      const port = portFlag(values.port, 1);
      address = { hostname: values.host ?? "127.0.0.1", port };
      const { sent, echoed } = await udpEchoClient({
        port,
        hostname: address.hostname,
        message: values.message,
        size: values.size === undefined ? undefined : integerFlag("size", values.size, 0, 0),
        count: integerFlag("count", values.count, 1, 1),
        timeoutMs: secondsFlag("timeout", values.timeout, 1),
        output,
      });
      if (echoed === sent) return 0;
      output.err(`error: ${sent - echoed} of ${sent} datagram(s) got no echo`);
      return 1;
    }
    throw new UsageError(`Unknown mode: "${mode}" (expected server or client)`);
  } catch (error) {
    return reportFailure(
      error,
      output,
      "deno run -A --unstable-net examples/udp_echo.ts --help",
      address,
    );
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
