/**
 * The client: connects to the coordinator, learns its id, then receives and sends.
 *
 * @module
 */

import { type Secret, secretBytes } from "./_auth.ts";
import {
  Connection,
  DEFAULT_HEARTBEAT_MS,
  DEFAULT_IDLE_TIMEOUT_MS,
  isDrop,
} from "./_connection.ts";
import { checkMaxFrameBytes, type FrameOptions } from "./_frame.ts";
import { clientTlsError, serverSpeaksTls, spokeTls } from "./_tls.ts";
import {
  greetServer,
  HANDSHAKE_FRAME_BYTES,
  MAX_NAME_BYTES,
  type Props,
  propsProblem,
  type Welcome,
} from "./_handshake.ts";
import {
  Backoff,
  checkTimeout,
  type Deadline,
  pause,
  startDeadline,
  type WaitOptions,
  within,
} from "./_wait.ts";
import {
  AuthenticationError,
  PeerDisconnectedError,
  ProtocolError,
  RejectedError,
  TimeoutError,
} from "./errors.ts";
import { ClientEvent, type ClientEventMap, TransferEvent } from "./events.ts";

export type { Props, Welcome } from "./_handshake.ts";

const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** How often `waitForServer` tries again. */
const RETRY_MS = 100;
/** Connecting to a busy server: the first pause, doubled each try up to the last. */
const BUSY_FIRST_PAUSE_MS = 50;
const BUSY_MAX_PAUSE_MS = 2_000;
/** Reconnecting after a drop: the first pause, doubled each try up to the last. */
const RESUME_FIRST_PAUSE_MS = 100;
const RESUME_MAX_PAUSE_MS = 5_000;

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
   * Metadata the server reads per client (`server.stats()`, events): at most
   * 16 entries; keys of 1–64 bytes; values strings of at most 256 bytes,
   * numbers, booleans or `null`.
   */
  props?: Props;
  /**
   * Reconnect on its own when the connection drops, and resume the session
   * with the same id and nothing lost, within the time the server allows
   * (default true).
   */
  resume?: boolean;
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
 * @throws {RejectedError} If the server refuses the client (`reason`: full, version, auth, …;
 * a `busy` server is tried again, after pauses from 50 ms doubling to 2 s, until the timeout).
 * @throws {AuthenticationError} If the server cannot prove it knows `secret`, or its TLS
 * certificate is not trusted (pass its CA in `tls.caCerts`) or not for the name checked.
 * @throws {ProtocolError} If the server answers nonsense, or speaks TLS to a client without `tls`.
 * @throws {PeerDisconnectedError} If the server closes the connection first (with `tls`: a
 * server that does not speak TLS).
 * @throws {TimeoutError} If the server does not answer in time.
 * @throws {Deno.errors.ConnectionRefused} If nothing listens there (unless `waitForServer`).
 * @throws {RangeError} If `secret` is shorter than 16 bytes, `name` is not 1–128 bytes, `props`
 * break their limits, or a limit is invalid.
 * @throws {TypeError} If `props` is not a map of strings, numbers, booleans or `null`.
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
  checkProps(options.props);
  const timeout = options.timeout ?? DEFAULT_CONNECT_TIMEOUT_MS;
  checkTimeout(timeout);
  const end = performance.now() + timeout;
  // A busy server (too many connections in their handshake) is tried again,
  // after pauses that double, until the timeout.
  const backoff = new Backoff(BUSY_FIRST_PAUSE_MS, BUSY_MAX_PAUSE_MS);
  while (true) {
    try {
      const { connection, welcome } = await handshake(
        { ...options, maxFrameBytes },
        Math.max(0, end - performance.now()),
        options.signal,
        options.waitForServer ?? false,
      );
      connection.allowResume(options.resume === false ? 0 : welcome.grace);
      return new Client(connection, welcome, { ...options, maxFrameBytes });
    } catch (error) {
      const pauseMs = backoff.next();
      const busy = error instanceof RejectedError && error.reason === "busy";
      if (!busy || performance.now() + pauseMs >= end || options.signal?.aborted) throw error;
      await pause(pauseMs, options.signal ?? NEVER);
    }
  }
}

/** A signal that never aborts. */
const NEVER = new AbortController().signal;

/**
 * Opens a connection and runs the handshake, as a new session or as the
 * resume of `resume`.
 */
async function handshake(
  options: ConnectOptions & { maxFrameBytes: number },
  timeout: number,
  cancel: AbortSignal | undefined,
  waitForServer: boolean,
  resume?: { id: number; token: Uint8Array; received: number },
): Promise<{ connection: Connection; welcome: Welcome }> {
  const hostname = options.hostname ?? "127.0.0.1";
  const timer = new AbortController();
  const timeoutId = setTimeout(() =>
    timer.abort(
      new TimeoutError(
        `Connect timed out after ${options.timeout ?? DEFAULT_CONNECT_TIMEOUT_MS} ms: ` +
          `${hostname}:${options.port}`,
      ),
    ), timeout);
  const signal = cancel ? AbortSignal.any([timer.signal, cancel]) : timer.signal;
  try {
    const where = `${hostname}:${options.port}`;
    const tcp = await dial(hostname, options.port, signal, waitForServer);
    let conn: Deno.Conn = tcp;
    if (options.tls !== undefined) {
      tcp.setNoDelay(true);
      let tls: Deno.TlsConn | undefined;
      try {
        tls = await Deno.startTls(tcp, {
          hostname: options.tls.hostname ?? hostname,
          caCerts: options.tls.caCerts,
        });
        conn = tls;
        // Complete the TLS handshake now, so an untrusted certificate fails here, as itself.
        using deadline = deadlineOf(signal);
        await within(tls.handshake(), deadline);
      } catch (error) {
        try {
          (tls ?? tcp).close(); // startTls took over the TCP connection
        } catch {
          // Closed already.
        }
        throw clientTlsError(error, where, options.tls.hostname ?? hostname);
      }
    }
    const connection = new Connection(conn, {
      peerIsServer: true,
      maxFrameBytes: options.maxFrameBytes,
      handshakeFrameBytes: Math.min(HANDSHAKE_FRAME_BYTES, options.maxFrameBytes),
      heartbeatMs: options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS,
      idleTimeout: options.idleTimeout ?? DEFAULT_IDLE_TIMEOUT_MS,
    });
    try {
      const welcome = await greetServer(connection, signal, {
        name: options.name,
        secret: options.secret,
        props: options.props,
        resume,
      });
      return { connection, welcome };
    } catch (error) {
      await connection.close();
      throw options.tls === undefined && spokeTls(error) ? serverSpeaksTls(where, error) : error;
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
    await pause(RETRY_MS, signal);
    if (signal.aborted) throw signal.reason;
  }
}

/**
 * A connected client. Create it with {@linkcode connect}.
 *
 * Iterate it to receive every message until the server closes:
 * `for await (const message of client) { … }`, or use its web streams
 * {@linkcode Client.readable} and {@linkcode Client.writable}. It is an
 * `EventTarget` of the events in {@linkcode ClientEventMap}: `progress`,
 * and `disconnect`/`resume` as it reconnects on its own after a drop.
 *
 * Answer the server's messages with {@linkcode Client.reply}: a reply is
 * tied to the message it answers, so one that comes too late for its round
 * is never taken for an answer to the next.
 */
export class Client extends EventTarget implements AsyncDisposable, AsyncIterable<unknown> {
  readonly #connection: Connection;
  readonly #options: ConnectOptions & { maxFrameBytes: number };
  readonly #token: Uint8Array | undefined;
  /** Messages taken by recv() or iteration: the number of the last one. */
  #taken = 0;
  /** Stops reconnecting when the client closes. */
  readonly #closing = new AbortController();
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
  /** The metadata this client gave in its hello. */
  readonly props: Props;

  /**
   * Prefer {@linkcode connect}.
   *
   * @param connection The connection, after the handshake.
   * @param welcome What the server's welcome said.
   * @param options The options of `connect`, to reconnect with.
   */
  constructor(
    connection: Connection,
    welcome: Welcome,
    options: ConnectOptions & { maxFrameBytes: number },
  ) {
    super();
    this.#connection = connection;
    this.#options = options;
    this.#token = welcome.token;
    this.id = welcome.id;
    this.clients = welcome.clients;
    this.name = options.name;
    this.props = options.props ?? {};
    this.authenticated = welcome.authenticated;
    connection.onDrop = (error) => {
      this.dispatchEvent(
        new ClientEvent("disconnect", { clientId: this.id, name: this.name, error }),
      );
      this.#reconnect(error);
    };
  }

  /** Tries to resume the session on new connections until it resumes or the server's grace is over. */
  async #reconnect(cause: Error): Promise<void> {
    const connection = this.#connection;
    const closing = this.#closing.signal;
    // The first try at once, then pauses from RESUME_FIRST_PAUSE_MS.
    const backoff = new Backoff(RESUME_FIRST_PAUSE_MS, RESUME_MAX_PAUSE_MS);
    let first = true;
    while (connection.state === "resuming" && !closing.aborted) {
      if (!first) await pause(backoff.next(), closing);
      first = false;
      if (connection.state !== "resuming" || closing.aborted) return;
      let attempt: { connection: Connection; welcome: Welcome };
      try {
        attempt = await handshake(
          this.#options,
          this.#options.timeout ?? DEFAULT_CONNECT_TIMEOUT_MS,
          closing,
          false,
          { id: this.id, token: this.#token!, received: connection.messagesReceived },
        );
      } catch (error) {
        // "busy", "live" (the server has not noticed yet that the old
        // connection is dead), no answer, no server, a connection cut again
        // (even inside the welcome): try again. A refusal, a failed
        // authentication or a server speaking nonsense: give up.
        const refused = error instanceof RejectedError
          ? error.reason !== "busy" && error.reason !== "live"
          : error instanceof ProtocolError && !isDrop(error) ||
            error instanceof AuthenticationError;
        if (refused) {
          connection.end(
            new PeerDisconnectedError(
              `Server disconnected: resume refused: ${(error as Error).message}`,
              {
                clientId: this.id,
                cause: error,
              },
            ),
          );
          return;
        }
        continue; // not reachable, busy, timed out: try again
      }
      const fresh = attempt.connection;
      const problem = connection.cannotResume(attempt.welcome.received);
      if (problem !== undefined || closing.aborted) {
        await fresh.close();
        if (problem !== undefined) {
          connection.end(
            new PeerDisconnectedError(`Server disconnected: cannot resume: ${problem}`, {
              clientId: this.id,
              cause,
            }),
          );
        }
        return;
      }
      connection.adopt(fresh, attempt.welcome.received);
      this.dispatchEvent(new ClientEvent("resume", { clientId: this.id, name: this.name }));
      return;
    }
  }

  /** How many times the session resumed on a new connection. */
  get resumes(): number {
    return this.#connection.resumes;
  }

  /** Whether the client is connected, reconnecting after a drop, or done. */
  get state(): "connected" | "resuming" | "gone" {
    return this.#connection.state;
  }

  /**
   * The number of the last message taken by `recv()` or iteration: messages
   * from the server are numbered 1, 2, 3, … for the whole session. It is what
   * {@linkcode Client.reply} answers by default.
   */
  get lastReceived(): number {
    return this.#taken;
  }

  /** Bytes received from the server, frame headers included. */
  get bytesReceived(): number {
    return this.#connection.bytesReceived;
  }

  /** Bytes sent to the server, frame headers included. */
  get bytesSent(): number {
    return this.#connection.bytesSent;
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
   * Sends one value to the server, on its own account (to answer a message
   * of the server, use {@linkcode Client.reply}). Small values are copied
   * and the promise resolves as soon as they are queued (while less than
   * 1 MiB waits unwritten and less than 64 MiB unacknowledged), so a
   * stream of small sends is coalesced into few socket writes; a value with
   * large binaries resolves once the server acknowledged it (it is kept, not
   * copied, until then, so that a resume can send it again), after which you
   * may change it. While the client is reconnecting, sends wait for room
   * the same way and go out when the session resumes.
   *
   * @param value The value (see `codec.ts` for the types).
   * @param options Cancellation and time limit of the wait for room or acknowledgement.
   * @returns Resolves when the value is queued or acknowledged, as above.
   * @throws {TypeError} If the value has no MessagePack form.
   * @throws {FrameTooLargeError} If it encodes to more than the frame limit (the smaller
   * of this client's `maxFrameBytes` and the server's, from its welcome).
   * @throws {PeerDisconnectedError} If the session is over.
   * @throws {SendTimeoutError} If time ran out: `queued` says whether the value
   * was queued (it will be delivered: do not send it again) or not (send it again).
   */
  send(value: unknown, options?: WaitOptions): Promise<void> {
    return this.#send(value, 0, options);
  }

  /** Sends with progress events (when listened to) within the caller's deadline. */
  #send(value: unknown, to: number, options: WaitOptions | undefined): Promise<void> {
    const connection = this.#connection;
    const progress = this.#progress ? this.#sendProgress : undefined;
    // Without a deadline (the common small send), nothing more is allocated.
    if (options?.signal === undefined && options?.timeout === undefined) {
      return connection.send(value, progress, to);
    }
    const deadline = startDeadline(options, () => ({
      what: to > 0 ? "Reply" : "Send",
      detail: `${connection.outbox.unacked} earlier messages not acknowledged`,
      clientIds: [this.id],
    }));
    return connection.send(value, progress, to, deadline).finally(() => deadline[Symbol.dispose]());
  }

  readonly #sendProgress = (loaded: number, total: number): void => {
    this.dispatchEvent(new TransferEvent({ clientId: this.id, direction: "send", loaded, total }));
  };

  /**
   * Answers a message from the server: by default the last one taken by
   * `recv()` or iteration. The server counts a reply to an earlier message
   * than the last one it sent this client as late: not an answer to its
   * current round (see the server's `late` event). Otherwise like
   * {@linkcode Client.send}.
   *
   * @param value The answer.
   * @param options `to`: the number of the message answered (default
   * {@linkcode Client.lastReceived}); cancellation and time limit, as for `send`.
   * @returns Resolves when the value is queued or acknowledged, as for `send`.
   * @throws {RangeError} If no message was received yet, or `to` is not a received message's number.
   * @throws {TypeError} If the value has no MessagePack form.
   * @throws {FrameTooLargeError} If it encodes to more than the frame limit.
   * @throws {PeerDisconnectedError} If the session is over.
   * @throws {SendTimeoutError} If time ran out, as for `send`.
   *
   * @example One round: take the model, answer with the update
   * ```ts
   * import assert from "node:assert/strict";
   * import { connect, listen } from "@fedcomm/fedcomm";
   *
   * await using server = listen({ clients: 1 });
   * await using client = await connect({ port: server.port });
   * await server.ready();
   * await server.broadcast({ round: 1, weights: new Float32Array([1, 2]) });
   * const { weights } = await client.recv() as { weights: Float32Array };
   * await client.reply(weights.map((w) => w * 2));
   * const answers = await server.gather({ timeout: 10_000 });
   * assert.deepStrictEqual(answers.get(0), new Float32Array([2, 4]));
   * ```
   */
  reply(value: unknown, options?: { to?: number } & WaitOptions): Promise<void> {
    const to = options?.to ?? this.#taken;
    const received = this.#connection.messagesReceived;
    if (!Number.isSafeInteger(to) || to < 1 || to > received) {
      throw new RangeError(
        received === 0
          ? "Invalid reply: no message was received yet"
          : `Invalid reply: "${to}" is not the number of a received message (1 to ${received})`,
      );
    }
    return this.#send(value, to, options);
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
  async recv(options?: WaitOptions): Promise<unknown> {
    const value = await receive(this.#connection, options);
    this.#taken++;
    return value;
  }

  /**
   * Yields every message until the server closes the connection.
   *
   * @returns The async iterator.
   */
  async *[Symbol.asyncIterator](): AsyncIterator<unknown> {
    const connection = this.#connection;
    while (true) {
      // The iteration ends when the server closed the session (or this client
      // did); a session lost for good is an error.
      if (
        connection.inbox.size === 0 && connection.ended !== undefined && connection.closedCleanly
      ) {
        return;
      }
      try {
        const value = await receive(connection);
        this.#taken++;
        yield value;
      } catch (error) {
        if (connection.ended === error && connection.closedCleanly) return;
        throw error;
      }
    }
  }

  /**
   * Waits until the server acknowledged everything sent so far.
   *
   * @param options Cancellation and time limit.
   * @returns Resolves when acknowledged.
   * @throws {PeerDisconnectedError} If the session ended first.
   * @throws {TimeoutError} If time ran out.
   */
  async flush(options?: WaitOptions): Promise<void> {
    using deadline = startDeadline(options, () => ({
      what: "Flush",
      detail: `${this.#connection.outbox.unacked} messages not acknowledged`,
      clientIds: [this.id],
    }));
    await this.#connection.delivered(this.#connection.messagesSent, deadline);
  }

  /**
   * Ends the session: waits (at most 5 s) until the server acknowledged what
   * was sent, tells it the session is over (so it does not wait for a
   * resume), then closes the connection.
   *
   * @returns Resolves when closed.
   */
  close(): Promise<void> {
    this.#closing.abort();
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

/** Validates `props` (PROTOCOL.md §6.1). */
function checkProps(props: unknown): void {
  if (props === undefined) return;
  const problem = propsProblem(props);
  if (problem === undefined) return;
  const message = `Invalid props: ${problem}`;
  throw problem.includes("not a") ? new TypeError(message) : new RangeError(message);
}

/** A deadline that fires when `signal` aborts. */
function deadlineOf(signal: AbortSignal): Deadline {
  return startDeadline({ signal }, () => ({ what: "Connect", detail: "", clientIds: [] }));
}
