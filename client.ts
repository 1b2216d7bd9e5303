/**
 * The client: connects to the coordinator, learns its id, then receives and sends.
 *
 * @module
 */

import { Connection, DEFAULT_HEARTBEAT_MS } from "./_connection.ts";
import { checkMaxFrameBytes, type FrameOptions } from "./_frame.ts";
import { greetServer, HANDSHAKE_FRAME_BYTES } from "./_handshake.ts";
import { checkTimeout, type WaitOptions } from "./_wait.ts";
import { PeerDisconnectedError, TimeoutError } from "./errors.ts";

const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** How often `waitForServer` tries again. */
const RETRY_MS = 100;

/** Options for {@linkcode connect}. */
export interface ConnectOptions extends FrameOptions {
  /** The server's TCP port. */
  port: number;
  /** The server's address (default `"127.0.0.1"`). */
  hostname?: string;
  /** Milliseconds for connecting and the handshake (default 10,000). */
  timeout?: number;
  /** Cancels connecting. */
  signal?: AbortSignal;
  /** Send a heartbeat frame when idle this many ms (default 15,000; 0: never). */
  heartbeatMs?: number;
  /**
   * Keep retrying, every 100 ms within `timeout`, while nothing listens at the
   * address yet (default false): for clients started before their server.
   */
  waitForServer?: boolean;
}

/**
 * Connects to a fedcomm server and completes the handshake.
 *
 * @param options The server's address and the limits.
 * @returns The client, with its `id`.
 * @throws {ProtocolError} If the server rejects the client (full, wrong version).
 * @throws {TimeoutError} If the server does not answer in time.
 * @throws {Deno.errors.ConnectionRefused} If nothing listens there (unless `waitForServer`).
 *
 * @example
 * ```ts
 * import { connect, listen } from "@fedcomm/fedcomm";
 *
 * await using server = listen({ clients: 1 });
 * await using client = await connect({ port: server.port });
 * console.log(client.id, client.clients); // 0 1
 * ```
 */
export async function connect(options: ConnectOptions): Promise<Client> {
  const maxFrameBytes = checkMaxFrameBytes(options.maxFrameBytes);
  const timeout = options.timeout ?? DEFAULT_CONNECT_TIMEOUT_MS;
  checkTimeout(timeout);
  const hostname = options.hostname ?? "127.0.0.1";
  const timer = new AbortController();
  const timeoutId = setTimeout(() =>
    timer.abort(
      new TimeoutError(`Connect timed out after ${timeout} ms: ${hostname}:${options.port}`),
    ), timeout);
  const signal = options.signal ? AbortSignal.any([timer.signal, options.signal]) : timer.signal;
  try {
    const conn = await dial(hostname, options.port, signal, options.waitForServer ?? false);
    const connection = new Connection(conn, {
      peerIsServer: true,
      maxFrameBytes,
      handshakeFrameBytes: HANDSHAKE_FRAME_BYTES,
      heartbeatMs: options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS,
    });
    try {
      const { id, clients } = await greetServer(connection, signal);
      return new Client(connection, id, clients);
    } catch (error) {
      await connection.close();
      throw error;
    }
  } finally {
    clearTimeout(timeoutId);
  }
}

/** Opens the TCP connection, retrying refused attempts until `signal` aborts if `retry`. */
async function dial(
  hostname: string,
  port: number,
  signal: AbortSignal,
  retry: boolean,
): Promise<Deno.TcpConn> {
  while (true) {
    try {
      return await Deno.connect({ hostname, port, transport: "tcp", signal });
    } catch (error) {
      if (!retry || !(error instanceof Deno.errors.ConnectionRefused)) throw error;
    }
    await new Promise<void>((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal.reason);
      };
      const timer = setTimeout(() => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      }, RETRY_MS);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }
}

/**
 * A connected client. Create it with {@linkcode connect}.
 *
 * Iterate it to receive every message until the server closes:
 * `for await (const message of client) { … }`.
 */
export class Client implements AsyncDisposable, AsyncIterable<unknown> {
  readonly #connection: Connection;
  /** This client's id, assigned by the server in order of arrival. */
  readonly id: number;
  /** How many clients the server serves. */
  readonly clients: number;

  /**
   * Prefer {@linkcode connect}.
   *
   * @param connection The connection, after the handshake.
   * @param id The id the server assigned.
   * @param clients The number of clients.
   */
  constructor(connection: Connection, id: number, clients: number) {
    this.#connection = connection;
    this.id = id;
    this.clients = clients;
  }

  /** Bytes received from the server, frame headers included. */
  get bytesReceived(): number {
    return this.#connection.bytesReceived;
  }

  /** Bytes sent to the server, frame headers included. */
  get bytesSent(): number {
    return this.#connection.queue.bytesSent;
  }

  /**
   * Sends one value to the server. Small values are copied and the promise
   * resolves as soon as they are queued (while less than 1 MiB waits), so a
   * stream of small sends is coalesced into few socket writes; a value with
   * large binaries resolves once the socket has taken them, after which you
   * may change them.
   *
   * @param value The value (see `codec.ts` for the types).
   * @returns Resolves when the value is queued or written, as above.
   * @throws {TypeError} If the value has no MessagePack form.
   * @throws {RangeError} If it encodes to more than the frame limit (the smaller of this
   * client's `maxFrameBytes` and the server's, from its welcome).
   * @throws {PeerDisconnectedError} If the connection is gone.
   */
  send(value: unknown): Promise<void> {
    return this.#connection.send(value);
  }

  /**
   * Waits for the next message from the server.
   *
   * @param options Cancellation and time limit.
   * @returns The value.
   * @throws {PeerDisconnectedError} If the server closed the connection and nothing is left.
   * @throws {ProtocolError} If the server sent a malformed frame.
   * @throws {TimeoutError} If time ran out.
   * @throws {Deno.errors.Busy} If another `recv()` (or a `for await`) is already waiting.
   */
  recv(options?: WaitOptions): Promise<unknown> {
    return this.#connection.next(options);
  }

  /**
   * Yields every message until the server closes the connection.
   *
   * @returns The async iterator.
   */
  async *[Symbol.asyncIterator](): AsyncIterator<unknown> {
    const connection = this.#connection;
    while (true) {
      if (connection.inbox.size === 0 && connection.ended instanceof PeerDisconnectedError) return;
      try {
        yield await connection.next();
      } catch (error) {
        if (error instanceof PeerDisconnectedError && connection.ended === error) return;
        throw error;
      }
    }
  }

  /**
   * Waits until everything sent has been written to the socket.
   *
   * @returns Resolves when written.
   * @throws {PeerDisconnectedError} If writing failed.
   */
  flush(): Promise<void> {
    return this.#connection.queue.flush();
  }

  /**
   * Writes what is queued (waiting at most 5 s if the server stopped reading), then
   * closes the connection.
   *
   * @returns Resolves when closed.
   */
  close(): Promise<void> {
    return this.#connection.close();
  }

  /** Closes the client: `await using client = await connect(...)`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
