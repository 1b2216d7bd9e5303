/**
 * The client: connects to the coordinator, learns its id, then receives and sends.
 *
 * @module
 */

import { type Secret, secretBytes } from "./_auth.ts";
import { Connection, DEFAULT_HEARTBEAT_MS, DEFAULT_IDLE_TIMEOUT_MS } from "./_connection.ts";
import { checkMaxFrameBytes, type FrameOptions } from "./_frame.ts";
import { greetServer, HANDSHAKE_FRAME_BYTES, MAX_NAME_BYTES } from "./_handshake.ts";
import { checkTimeout, type Deadline, startDeadline, type WaitOptions, within } from "./_wait.ts";
import { PeerDisconnectedError, TimeoutError } from "./errors.ts";
import { type ClientEventMap, TransferEvent } from "./events.ts";

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
  /** Send a ping when nothing was written for this many ms (default 15,000; 0: never). */
  heartbeatMs?: number;
  /**
   * Declare the server dead after this many ms without a byte from it
   * (default 60,000; 0: never). The server answers pings, so a live server
   * is never silent that long, however long this client trains.
   */
  idleTimeout?: number;
  /** This client's name (at most 128 UTF-8 bytes): with per-client secrets, the name to prove. */
  name?: string;
  /**
   * The secret shared with the server (at least 16 bytes), for a server that
   * requires authentication. The client then also requires the server to
   * prove it knows the secret.
   */
  secret?: Secret;
  /** Connect over TLS: the CA certificates to trust and the name to check. */
  tls?: ConnectTlsOptions;
  /**
   * Keep retrying, every 100 ms within `timeout`, while nothing listens at the
   * address yet (default false): for clients started before their server.
   */
  waitForServer?: boolean;
}

/** TLS options of {@linkcode connect}. */
export interface ConnectTlsOptions {
  /** PEM CA certificates to trust, in addition to the system's (for a private CA). */
  caCerts?: string[];
  /** The name the server's certificate must carry (default: `hostname`). */
  hostname?: string;
}

/**
 * Connects to a fedcomm server and completes the handshake.
 *
 * @param options The server's address and the limits.
 * @returns The client, with its `id`.
 * @throws {RejectedError} If the server refuses the client (`reason`: full, version, auth, …).
 * @throws {AuthenticationError} If the server cannot prove it knows `secret`.
 * @throws {ProtocolError} If the server answers nonsense.
 * @throws {TimeoutError} If the server does not answer in time.
 * @throws {Deno.errors.ConnectionRefused} If nothing listens there (unless `waitForServer`).
 * @throws {Deno.errors.InvalidData} If the server's TLS certificate is not trusted.
 * @throws {RangeError} If `secret` is shorter than 16 bytes, `name` is not 1–128 bytes, or a
 * limit is invalid.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { connect, listen } from "@fedcomm/fedcomm";
 *
 * await using server = listen({ clients: 1 });
 * await using client = await connect({ port: server.port });
 * assert.equal(client.id, 0);
 * assert.equal(client.clients, 1);
 * ```
 *
 * @example Authenticated, over TLS
 * ```ts ignore
 * const client = await connect({
 *   hostname: "coordinator.example.org",
 *   port: 7000,
 *   tls: { caCerts: [await Deno.readTextFile("ca.pem")] },
 *   name: "site-a",
 *   secret: Deno.env.get("FEDCOMM_SECRET"),
 * });
 * ```
 */
export async function connect(options: ConnectOptions): Promise<Client> {
  const maxFrameBytes = checkMaxFrameBytes(options.maxFrameBytes);
  if (options.secret !== undefined) secretBytes(options.secret, "secret");
  checkName(options.name);
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
    const tcp = await dial(hostname, options.port, signal, options.waitForServer ?? false);
    let conn: Deno.Conn = tcp;
    if (options.tls !== undefined) {
      tcp.setNoDelay(true);
      try {
        const tls = await Deno.startTls(tcp, {
          hostname: options.tls.hostname ?? hostname,
          caCerts: options.tls.caCerts,
        });
        conn = tls;
        // Complete the TLS handshake now, so an untrusted certificate fails here, as itself.
        using deadline = deadlineOf(signal);
        await within(tls.handshake(), deadline);
      } catch (error) {
        tcp.close();
        throw error;
      }
    }
    const connection = new Connection(conn, {
      peerIsServer: true,
      maxFrameBytes,
      handshakeFrameBytes: HANDSHAKE_FRAME_BYTES,
      heartbeatMs: options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS,
      idleTimeout: options.idleTimeout ?? DEFAULT_IDLE_TIMEOUT_MS,
    });
    try {
      const { id, clients, authenticated } = await greetServer(connection, signal, {
        name: options.name,
        secret: options.secret,
      });
      return new Client(connection, id, clients, { name: options.name, authenticated });
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

/** What the handshake said about a client, besides its id. */
export interface ClientInfo {
  /** The name it gave in its hello. */
  readonly name?: string;
  /** Whether both sides proved they know the shared secret. */
  readonly authenticated: boolean;
}

/**
 * A connected client. Create it with {@linkcode connect}.
 *
 * Iterate it to receive every message until the server closes:
 * `for await (const message of client) { … }`, or use its web streams
 * {@linkcode Client.readable} and {@linkcode Client.writable}. It is an
 * `EventTarget` of the events in {@linkcode ClientEventMap} (`progress`).
 */
export class Client extends EventTarget implements AsyncDisposable, AsyncIterable<unknown> {
  readonly #connection: Connection;
  #progress = false;
  #readable: ReadableStream<unknown> | undefined;
  #writable: WritableStream<unknown> | undefined;
  /** This client's id, assigned by the server in order of arrival. */
  readonly id: number;
  /** How many clients the server serves. */
  readonly clients: number;
  /** The name this client gave in its hello, if any. */
  readonly name: string | undefined;
  /** Whether this client and the server proved to each other that they know the secret. */
  readonly authenticated: boolean;

  /**
   * Prefer {@linkcode connect}.
   *
   * @param connection The connection, after the handshake.
   * @param id The id the server assigned.
   * @param clients The number of clients.
   * @param info The name and whether the handshake authenticated.
   */
  constructor(connection: Connection, id: number, clients: number, info: ClientInfo) {
    super();
    this.#connection = connection;
    this.id = id;
    this.clients = clients;
    this.name = info.name;
    this.authenticated = info.authenticated;
  }

  /** Bytes received from the server, frame headers included. */
  get bytesReceived(): number {
    return this.#connection.bytesReceived;
  }

  /** Bytes sent to the server, frame headers included. */
  get bytesSent(): number {
    return this.#connection.queue.bytesSent;
  }

  /** Application messages received from the server. */
  get messagesReceived(): number {
    return this.#connection.messagesReceived;
  }

  /** Application messages sent (queued) to the server. */
  get messagesSent(): number {
    return this.#connection.messagesSent;
  }

  /** The round trip of the last ping in ms, or `undefined` before the first pong. */
  get rttMs(): number | undefined {
    return this.#connection.rtt;
  }

  /**
   * Registers an event listener; see {@linkcode ClientEventMap} for the events.
   *
   * @param type The event type.
   * @param listener The listener.
   * @param options As for `EventTarget.addEventListener`.
   */
  override addEventListener<K extends keyof ClientEventMap>(
    type: K,
    listener: (this: Client, event: ClientEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /**
   * Registers a listener for any event type, as `EventTarget` does.
   *
   * @param type The event type.
   * @param listener The listener.
   * @param options As for `EventTarget.addEventListener`.
   */
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void {
    if (type === "progress" && !this.#progress) {
      this.#progress = true;
      this.#connection.onReceiveProgress = (loaded, total) =>
        this.dispatchEvent(
          new TransferEvent({ clientId: this.id, direction: "receive", loaded, total }),
        );
    }
    super.addEventListener(type, listener, options);
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
   * @throws {FrameTooLargeError} If it encodes to more than the frame limit (the smaller
   * of this client's `maxFrameBytes` and the server's, from its welcome).
   * @throws {PeerDisconnectedError} If the connection is gone.
   */
  send(value: unknown): Promise<void> {
    if (!this.#progress) return this.#connection.send(value);
    return this.#connection.send(value, (loaded, total) =>
      this.dispatchEvent(
        new TransferEvent({ clientId: this.id, direction: "send", loaded, total }),
      ));
  }

  /**
   * The server's messages as a web stream, until the server closes the
   * connection (then the stream closes) or the connection fails (then it
   * errors). The same stream on every access; it is one more reader of the
   * client, so do not also call `recv()` while it is being read.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { connect, listen } from "@fedcomm/fedcomm";
   *
   * const server = listen({ clients: 1 });
   * await using client = await connect({ port: server.port });
   * await server.ready();
   * await server.broadcast({ round: 1 });
   * await server.broadcast({ round: 2 });
   * await server.close();
   * assert.deepStrictEqual(await Array.fromAsync(client.readable), [{ round: 1 }, { round: 2 }]);
   * ```
   */
  get readable(): ReadableStream<unknown> {
    this.#readable ??= ReadableStream.from(this);
    return this.#readable;
  }

  /**
   * A web stream of values to send to the server: each chunk is one
   * `send()`. Closing the stream waits until everything was written (it
   * does not close the client); aborting it closes the client.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { connect, listen } from "@fedcomm/fedcomm";
   *
   * await using server = listen({ clients: 1 });
   * await using client = await connect({ port: server.port });
   * await server.ready();
   * await ReadableStream.from([1, 2, 3]).pipeTo(client.writable);
   * const got = await Array.fromAsync(server.uploads({ count: 3 }), (u) => u.value);
   * assert.deepStrictEqual(got, [1, 2, 3]);
   * ```
   */
  get writable(): WritableStream<unknown> {
    this.#writable ??= new WritableStream<unknown>({
      write: (value) => this.send(value),
      close: () => this.flush(),
      abort: () => this.close(),
    });
    return this.#writable;
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
    return receive(this.#connection, options);
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
        yield await receive(connection);
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

/** Waits for and takes the server's next message. */
async function receive(connection: Connection, options?: WaitOptions): Promise<unknown> {
  using deadline = startDeadline(options, () => ({
    what: "Receive",
    detail: "waiting for server",
    clientIds: connection.clientId === undefined ? [] : [connection.clientId],
  }));
  return await connection.inbox.next(deadline);
}

/** Validates a client name: 1 to 128 UTF-8 bytes (PROTOCOL.md §6.1). */
function checkName(name: unknown): void {
  if (name === undefined) return;
  if (typeof name !== "string") throw new TypeError("Invalid name: expected a string");
  const bytes = new TextEncoder().encode(name).byteLength;
  if (bytes < 1 || bytes > MAX_NAME_BYTES) {
    throw new RangeError(`Invalid name: "${name}" is ${bytes} bytes, not 1 to ${MAX_NAME_BYTES}`);
  }
}

/** A deadline that fires when `signal` aborts. */
function deadlineOf(signal: AbortSignal): Deadline {
  return startDeadline({ signal }, () => ({ what: "Connect", detail: "", clientIds: [] }));
}
