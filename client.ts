/** The client: connects to the coordinator, learns its id, then receives and sends. @module */

import type { DialOptions } from "./_client/dial.ts";
import { join } from "./_client/join.ts";
import { reconnect } from "./_client/reconnect.ts";
import type { Session } from "./_session/session.ts";
import { startDeadline } from "./_util/wait.ts";
import { ClientEvent, type ClientEventMap, FedcommEventTarget, TransferEvent } from "./events.ts";
import type { ConnectOptions, Props, WaitOptions, Welcome } from "./types.ts";

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
  const { session, welcome, options: checked } = await join(options);
  return new Client(session, welcome, checked);
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
export class Client extends FedcommEventTarget<ClientEventMap>
  implements AsyncDisposable, AsyncIterable<unknown> {
  readonly #connection: Session;
  readonly #options: DialOptions;
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
  /**
   * The largest long message (PROTOCOL.md §8.8) this client sends: the
   * smaller of its own `maxMessageBytes` and the server's, from its welcome
   * (0: none; a value must then fit one frame).
   */
  readonly maxMessageBytes: number;
  /** The metadata this client gave in its hello. */
  readonly props: Props;

  /**
   * Prefer {@linkcode connect}.
   *
   * @param connection The session, from the welcome on.
   * @param welcome What the server's welcome said.
   * @param options The options of `connect`, to reconnect with.
   */
  constructor(connection: Session, welcome: Welcome, options: DialOptions) {
    super();
    this.#connection = connection;
    this.#options = options;
    this.#token = welcome.token;
    this.id = welcome.id;
    this.clients = welcome.clients;
    this.name = options.name;
    this.props = options.props ?? {};
    this.authenticated = welcome.authenticated;
    this.maxMessageBytes = Math.min(options.maxMessageBytes, welcome.maxMessageBytes);
    connection.listener = { sessionDropped: (error) => this.#reconnect(error) };
  }

  /** The connection dropped: resumes the session on new ones, as `_client/reconnect.ts` says. */
  async #reconnect(cause: Error): Promise<void> {
    const disconnect = { clientId: this.id, name: this.name, error: cause };
    this.dispatchEvent(new ClientEvent("disconnect", disconnect));
    await reconnect(this.#connection, cause, {
      options: this.#options,
      id: this.id,
      token: this.#token!,
      closing: this.#closing.signal,
      resumed: () =>
        this.dispatchEvent(new ClientEvent("resume", { clientId: this.id, name: this.name })),
    });
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
   * Progress events are made once someone listens to them.
   *
   * @param type The event type a listener is added for.
   */
  protected override listening(type: string): void {
    if (type !== "progress" || this.#progress) return;
    this.#progress = true;
    this.#connection.onReceiveProgress = (loaded, total) =>
      this.dispatchEvent(
        new TransferEvent({ clientId: this.id, direction: "receive", loaded, total }),
      );
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
      return connection.sender.send(value, progress, to);
    }
    const deadline = startDeadline(options, () => ({
      what: to > 0 ? "Reply" : "Send",
      detail: `${connection.outbox.unacked} earlier messages not acknowledged`,
      clientIds: [this.id],
    }));
    return connection.sender.send(value, progress, to, deadline).finally(() =>
      deadline[Symbol.dispose]()
    );
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
    this.#connection.sender.askAcks(); // a ping: the server's ack comes before its pong
    await this.#connection.outbox.delivered(this.#connection.messagesSent, deadline);
  }

  /**
   * Gives a received value's memory back for later messages of the same size
   * (an echoing client then allocates nothing per round; at most 1 GiB is
   * kept). Use nothing of it afterwards, and only once its sends resolved.
   *
   * @param value A value this client received (anything else is left alone).
   * @returns The bytes taken back.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { connect, listen } from "@fedcomm/fedcomm";
   *
   * await using server = listen({ clients: 1 });
   * await using client = await connect({ port: server.port });
   * await server.broadcast(new Float32Array(1 << 16));
   * const first = await client.recv() as Float32Array;
   * assert.ok(client.recycle(first) >= first.byteLength); // its frame body
   * await server.broadcast(new Float32Array(1 << 16));
   * assert.equal((await client.recv() as Float32Array).buffer, first.buffer); // read into again
   * ```
   */
  recycle(value: unknown): number {
    return this.#connection.recycle(value);
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
async function receive(connection: Session, options?: WaitOptions): Promise<unknown> {
  using deadline = startDeadline(options, () => ({
    what: "Receive",
    detail: "waiting for server",
    clientIds: [connection.clientId],
  }));
  return await connection.inbox.next(deadline);
}
