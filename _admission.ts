/**
 * Admission: the server's accept loop and the handshake of each new
 * connection, up to the moment the server gives it an id.
 *
 * @module
 */

import type { ByteBudget } from "./_budget.ts";
import { Connection } from "./_connection.ts";
import { awaitHello, HANDSHAKE_FRAME_BYTES, type Refusal, reject, welcome } from "./_handshake.ts";
import { PeerDisconnectedError } from "./errors.ts";

/** What admission needs from the server. */
export interface AdmissionOptions {
  /** The largest frame body accepted once a client joined. */
  maxFrameBytes: number;
  /** The heartbeat interval of the connections. */
  heartbeatMs: number;
  /** Milliseconds a new connection has for its handshake. */
  handshakeTimeout: number;
  /** The receive budget shared by the joined clients. */
  budget: ByteBudget;
  /** How many clients the server serves (sent in the welcome). */
  clients: number;
  /** Gives a client that completed its handshake an id, or says why not. */
  join: (connection: Connection) => number | Refusal;
  /** Called once the welcome of a client that joined is sent. */
  joined: (connection: Connection) => void;
}

/** Accepts connections and runs their handshakes; see the module doc. */
export class Admission {
  readonly #listener: Deno.Listener;
  readonly #options: AdmissionOptions;
  readonly #handshaking = new Set<Promise<void>>();
  readonly #abort = new AbortController();
  readonly #accepting: Promise<void>;

  /**
   * Starts accepting.
   *
   * @param listener The bound listener; closed by {@linkcode Admission.close}.
   * @param options Limits and the server's callbacks.
   */
  constructor(listener: Deno.Listener, options: AdmissionOptions) {
    this.#listener = listener;
    this.#options = options;
    this.#accepting = this.#accept();
  }

  async #accept(): Promise<void> {
    while (true) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return; // the listener was closed
      }
      const handshake = this.#admit(conn).finally(() => this.#handshaking.delete(handshake));
      this.#handshaking.add(handshake);
    }
  }

  async #admit(conn: Deno.Conn): Promise<void> {
    const options = this.#options;
    const connection = new Connection(conn, {
      maxFrameBytes: options.maxFrameBytes,
      handshakeFrameBytes: HANDSHAKE_FRAME_BYTES,
      heartbeatMs: options.heartbeatMs,
      budget: options.budget,
    });
    let joined = false;
    try {
      const refusal = await awaitHello(connection, options.handshakeTimeout, this.#abort.signal);
      if (refusal !== undefined) return await reject(connection, refusal.reason, refusal.message);
      const id = options.join(connection);
      if (typeof id !== "number") return await reject(connection, id.reason, id.message);
      joined = true;
      await welcome(connection, id, options.clients);
      options.joined(connection);
    } catch {
      // The peer timed out, left, or sent garbage before it had an id: drop it.
      if (!joined) await connection.close();
    }
  }

  /**
   * Stops accepting, ends the handshakes under way and waits for them.
   *
   * @returns Resolves when no handshake is left.
   */
  async close(): Promise<void> {
    this.#abort.abort(new PeerDisconnectedError("Server closing"));
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    await this.#accepting;
    await Promise.all([...this.#handshaking]);
  }
}
