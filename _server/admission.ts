/**
 * Admission: the server's accept loop and the handshake of each new
 * connection, up to the moment the server gives it an id.
 *
 * Before a connection is admitted it holds little: it must hold one of the
 * `maxPendingHandshakes` places (`pending.ts` says who gets one when they
 * are taken; a connection without one gets a `busy` reject and is closed),
 * its frames are limited to 64 KiB and never draw on the receive budget, its
 * hello must arrive within `helloTimeout` and the whole handshake finish
 * within `handshakeTimeout`. Every connection turned away gets its `busy`
 * reject: the accept loop waits while a few are being written, so that a
 * flood waits in the kernel's backlog instead of holding descriptors here.
 * The accept loop survives every accept error (out of file descriptors,
 * say): it logs it, backs off and goes on.
 *
 * @module
 */

import { keyLookup } from "../_handshake/auth.ts";
import { DEFAULT_HANDSHAKE_TIMEOUT_MS, handshakeFrame } from "../_handshake/messages.ts";
import { DEFAULT_HEARTBEAT_MS, DEFAULT_IDLE_TIMEOUT_MS } from "../_link/keepalive.ts";
import { type AdmissionDeps, admit, type AdmitContext } from "./admit.ts";
import { type NoPlace, PendingHandshakes } from "./pending.ts";
import { NO_DEADLINE, Notifier, pause } from "../_util/wait.ts";
import { PeerDisconnectedError } from "../errors.ts";
import { type ListenOptions, PROTOCOL_VERSION } from "../types.ts";

/** The default cap on connections in their handshake at once. */
export const DEFAULT_MAX_PENDING_HANDSHAKES = 64;
/** The default time from the accept to the end of the hello. */
export const DEFAULT_HELLO_TIMEOUT_MS = 3_000;
/** At most this many `busy` rejects are written at once; accepting waits meanwhile. */
const MAX_TURNING_AWAY = 8;
/**
 * At most this many connections that lost their place may be closing at
 * once; accepting waits meanwhile, so that descriptors stay bounded however
 * fast a flood is renewed.
 */
const MAX_DRAINING = 64;
/** The longest pause of the accept loop after an accept error. */
const MAX_BACKOFF_MS = 1_000;

/** The reject sent, without a handshake, to a connection over the cap. */
const BUSY_FRAME = handshakeFrame({
  fedcomm: PROTOCOL_VERSION,
  type: "reject",
  reason: "busy",
  message: "Server busy: too many connections are in their handshake; try again later",
});

/** Accepts connections and runs their handshakes; see the module doc. */
export class Admission {
  readonly #listener: Deno.Listener;
  readonly #pending: PendingHandshakes;
  readonly #context: AdmitContext;
  readonly #handshaking = new Set<Promise<void>>();
  /** Connections turned away whose `busy` reject is still being written. */
  #turningAway = 0;
  /** Connections that lost their place and are not closed yet. */
  #draining = 0;
  /** Notified when one of those is done. */
  readonly #turnedAway = new Notifier();
  readonly #abort = new AbortController();
  readonly #accepting: Promise<void>;

  /**
   * Binds the listening socket and starts accepting.
   *
   * @param options The server's options.
   * @param deps The budget, the members and the server's callbacks.
   * @throws {RangeError} If a limit is invalid.
   * @throws {TypeError} If `auth` is malformed.
   * @throws {Deno.errors.AddrInUse} If the port is taken.
   */
  constructor(options: ListenOptions, deps: AdmissionDeps) {
    const maxPending = options.maxPendingHandshakes ?? DEFAULT_MAX_PENDING_HANDSHAKES;
    this.#pending = new PendingHandshakes(
      maxPending,
      options.maxPendingPerAddress ?? Math.max(1, Math.floor(maxPending / 2)),
    );
    const handshakeTimeout = options.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    this.#context = {
      deps,
      keys: keyLookup(options.auth),
      logger: options.logger,
      heartbeatMs: options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS,
      idleTimeout: options.idleTimeout ?? DEFAULT_IDLE_TIMEOUT_MS,
      handshakeTimeout,
      helloTimeout: Math.min(options.helloTimeout ?? DEFAULT_HELLO_TIMEOUT_MS, handshakeTimeout),
      clients: options.clients,
      retainBytes: options.retainBytes,
      pending: this.#pending,
      closing: this.#abort.signal,
    };
    const address = { hostname: options.hostname ?? "127.0.0.1", port: options.port ?? 0 };
    this.#listener = options.tls === undefined
      ? Deno.listen(address)
      : Deno.listenTls({ ...address, cert: options.tls.cert, key: options.tls.key });
    this.#accepting = this.#accept();
  }

  /** The address the server listens on. */
  get addr(): Deno.NetAddr {
    return this.#listener.addr as Deno.NetAddr;
  }

  /** How many connections are in their handshake now. */
  get pending(): number {
    return this.#pending.size + this.#pending.waiting;
  }

  async #accept(): Promise<void> {
    let backoff = 0;
    while (!this.#abort.signal.aborted) {
      // A flood waits in the backlog while its busy rejects are written.
      while (this.#turningAway >= MAX_TURNING_AWAY || this.#draining >= MAX_DRAINING) {
        await this.#turnedAway.changed(NO_DEADLINE);
      }
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
        backoff = 0;
      } catch (error) {
        if (this.#abort.signal.aborted || error instanceof Deno.errors.BadResource) return;
        // Out of descriptors (EMFILE/ENFILE) or a connection reset before it
        // was accepted: keep serving the clients already there, retry soon.
        backoff = Math.min(MAX_BACKOFF_MS, backoff === 0 ? 10 : backoff * 2);
        this.#context.logger?.error?.("Accept failed: retrying", {
          error: String(error),
          retryInMs: backoff,
        });
        await pause(backoff, this.#abort.signal);
        continue;
      }
      let host = "";
      try {
        host = (conn.remoteAddr as Deno.NetAddr).hostname;
      } catch {
        // Already gone: it is turned away or fails at once.
      }
      const place = this.#pending.place(host, performance.now(), (victim) =>
        victim.evict(
          new PeerDisconnectedError(
            `Server busy: every handshake place was taken, and this connection had not said ` +
              `hello: it gave its place to another one`,
          ),
        ));
      if (typeof place === "string") {
        this.#turnAway(conn, place, host);
        continue;
      }
      place.evicted.addEventListener("abort", () => this.#draining++, { once: true });
      const handshake = admit(conn, place, this.#context).finally(() => {
        this.#pending.remove(place);
        this.#handshaking.delete(handshake);
        if (place.evicted.aborted) {
          this.#draining--;
          this.#turnedAway.notify();
        }
      });
      this.#handshaking.add(handshake);
    }
  }

  /**
   * Writes the `busy` reject to a connection that got no place, then closes
   * it. One small write into an empty socket buffer, so it never waits for
   * the peer; the accept loop waits while `MAX_TURNING_AWAY` are written.
   */
  #turnAway(conn: Deno.Conn, why: NoPlace, host: string): void {
    let address: Deno.Addr | undefined;
    try {
      address = conn.remoteAddr;
    } catch {
      // Already gone.
    }
    this.#context.deps.refused(
      "busy",
      why === "address"
        ? `Too many connections in their handshake from "${host}"`
        : "Too many connections in their handshake, all of them past their hello or new",
      address,
    );
    const close = () => {
      try {
        conn.close();
      } catch {
        // Already closed.
      }
    };
    this.#turningAway++;
    const timer = setTimeout(close, 1_000);
    conn.write(BUSY_FRAME).catch(() => {}).finally(() => {
      this.#turningAway--;
      this.#turnedAway.notify();
      clearTimeout(timer);
      close();
    });
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
