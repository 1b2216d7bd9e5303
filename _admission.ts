/**
 * Admission: the server's accept loop and the handshake of each new
 * connection, up to the moment the server gives it an id.
 *
 * Before a connection is admitted it holds little: it must hold one of the
 * `maxPendingHandshakes` places (`_pending.ts` says who gets one when they
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

import { keyLookup } from "./_auth.ts";
import type { ByteBudget } from "./_budget.ts";
import { Connection, DEFAULT_HEARTBEAT_MS, DEFAULT_IDLE_TIMEOUT_MS } from "./_connection.ts";
import { handshakeFrame } from "./_control.ts";
import type { Members } from "./_members.ts";
import type { ListenOptions } from "./_server_types.ts";
import {
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  greetClient,
  HANDSHAKE_FRAME_BYTES,
  type KeyLookup,
  PROTOCOL_VERSION,
  type Refusal,
  reject,
  welcome,
  welcomeFrame,
} from "./_handshake.ts";
import {
  EVICTABLE_AFTER_MS,
  type NoPlace,
  PendingHandshakes,
  type PendingPlace,
} from "./_pending.ts";
import { spokeTls } from "./_tls.ts";
import { NO_DEADLINE, Notifier, pause, startDeadline, within } from "./_wait.ts";
import { PeerDisconnectedError, TimeoutError } from "./errors.ts";
import { formatAddress, type Logger } from "./events.ts";

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

/** What admission needs from the server besides its options. */
export interface AdmissionDeps {
  /** The largest frame body accepted once a client joined (validated). */
  maxFrameBytes: number;
  /** The receive budget, given to a client once it joined. */
  budget: ByteBudget;
  /** Who may join, and the members' list. */
  members: Members;
  /** Called when a connection is turned away: the reject's reason, or "timeout"/"error". */
  refused: (reason: string, message: string, address: Deno.Addr | undefined, name?: string) => void;
}

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
  readonly #deps: AdmissionDeps;
  readonly #keys: KeyLookup | undefined;
  readonly #logger: Logger | undefined;
  readonly #heartbeatMs: number;
  readonly #idleTimeout: number;
  readonly #handshakeTimeout: number;
  readonly #helloTimeout: number;
  readonly #pending: PendingHandshakes;
  readonly #clients: number;
  readonly #retainBytes: number | undefined;
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
    this.#deps = deps;
    this.#keys = keyLookup(options.auth);
    this.#logger = options.logger;
    this.#clients = options.clients;
    this.#retainBytes = options.retainBytes;
    this.#heartbeatMs = options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    this.#idleTimeout = options.idleTimeout ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.#handshakeTimeout = options.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    this.#helloTimeout = Math.min(
      options.helloTimeout ?? DEFAULT_HELLO_TIMEOUT_MS,
      this.#handshakeTimeout,
    );
    const maxPending = options.maxPendingHandshakes ?? DEFAULT_MAX_PENDING_HANDSHAKES;
    this.#pending = new PendingHandshakes(
      maxPending,
      options.maxPendingPerAddress ?? Math.max(1, Math.floor(maxPending / 2)),
    );
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
        this.#logger?.error?.("Accept failed: retrying", {
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
      const handshake = this.#admit(conn, place).finally(() => {
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
    this.#deps.refused(
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

  async #admit(conn: Deno.Conn, place: PendingPlace): Promise<void> {
    place.evicted.addEventListener("abort", () => this.#draining++, { once: true });
    const deps = this.#deps;
    const logger = this.#logger;
    const connection = new Connection(conn, {
      maxFrameBytes: deps.maxFrameBytes,
      handshakeFrameBytes: Math.min(HANDSHAKE_FRAME_BYTES, deps.maxFrameBytes),
      heartbeatMs: this.#heartbeatMs,
      idleTimeout: this.#idleTimeout,
      retainBytes: this.#retainBytes,
    });
    let address: Deno.Addr | undefined;
    try {
      address = conn.remoteAddr;
    } catch {
      // A socket that is already gone.
    }
    logger?.debug?.("Connection accepted", { address: formatAddress(address) });
    let joined = false;
    let name: string | undefined;
    /** Tells the refused peer why (or, where it cannot read a reject, nothing), then closes. */
    const refuse = async (refusal: Refusal | { reason: "tls"; message: string }) => {
      const claimed = "name" in refusal ? refusal.name ?? name : name;
      deps.refused(refusal.reason, refusal.message, address, claimed);
      logger?.warn?.("Handshake refused", {
        address: formatAddress(address),
        name: claimed,
        reason: refusal.reason,
        message: refusal.message,
      });
      if (refusal.reason === "tls") await connection.close();
      else await reject(connection, refusal);
    };
    const signal = AbortSignal.any([this.#abort.signal, place.evicted]);
    // Waiting for a place: the hello must come soon, or the spot goes.
    const waitTimer = place.waiting
      ? setTimeout(() => {
        if (place.waiting) {
          place.evict(
            new PeerDisconnectedError(
              `Server busy: every handshake place was taken, and no hello came within ` +
                `${EVICTABLE_AFTER_MS} ms`,
            ),
          );
        }
      }, EVICTABLE_AFTER_MS)
      : undefined;
    // A TLS peer can read nothing before its TLS handshake: plain TCP can.
    let readable = !("handshake" in conn);
    try {
      using deadline = startDeadline(
        { timeout: this.#handshakeTimeout, signal },
        () => ({ what: "Handshake", detail: formatAddress(address), clientIds: [] }),
      );
      using helloDeadline = startDeadline(
        { timeout: this.#helloTimeout, signal },
        () => ({ what: "Hello", detail: formatAddress(address), clientIds: [] }),
      );
      if ("handshake" in conn) {
        // A TLS server: the TLS handshake first, so that its failure is told as itself.
        try {
          await within((conn as Deno.TlsConn).handshake(), helloDeadline);
          readable = true;
        } catch (error) {
          if (error instanceof TimeoutError) throw error;
          return await refuse({
            reason: "tls",
            message: `TLS handshake failed: ${error instanceof Error ? error.message : error}: ` +
              "the client may not speak TLS, or may not trust this server's certificate",
          });
        }
      }
      const hello = await greetClient(connection, deadline, this.#keys, helloDeadline, () => {
        const placed = this.#pending.greet(place, (victim) =>
          victim.evict(
            new PeerDisconnectedError(
              "Server busy: every handshake place was taken, and this connection had not said " +
                "hello: it gave its place to one that did",
            ),
          ));
        if (!placed) {
          place.evict(
            new PeerDisconnectedError(
              "Server busy: every handshake place is taken by a connection that said hello",
            ),
          );
          throw place.evicted.reason;
        }
      });
      if ("reason" in hello) return await refuse(hello);
      name = hello.name;
      const { members } = deps;
      const fields = {
        clients: this.#clients,
        maxFrameBytes: connection.maxFrameBytes,
        grace: members.grace,
      };
      if (hello.resume !== undefined) {
        const found = members.resume(connection, hello);
        if ("reason" in found) return await refuse(found);
        // The session takes over this connection: the welcome, then what the
        // client has not received, then reading goes on for the session.
        joined = true;
        const { session, id } = found;
        session.adopt(
          connection,
          hello.resume.received,
          welcomeFrame(id, {
            ...fields,
            token: hello.resume.token,
            received: session.messagesReceived,
            resumed: true,
          }),
        );
        members.resumed(id);
        return;
      }
      const joining = members.join(connection, hello);
      if ("reason" in joining) return await refuse(joining);
      joined = true;
      connection.meter.budget = deps.budget;
      await welcome(connection, joining.id, {
        ...fields,
        token: joining.token,
        received: 0,
        resumed: false,
      });
      connection.allowResume(members.grace);
      members.welcomed(connection);
    } catch (error) {
      // The peer timed out, left, or sent garbage before it had an id: drop it.
      if (!joined && place.evicted.aborted) {
        const message = (place.evicted.reason as Error).message;
        if (readable) await refuse({ reason: "busy", message });
        else {
          deps.refused("busy", message, address, name);
          await connection.close();
        }
      } else if (!joined && spokeTls(error)) {
        await refuse({
          reason: "tls",
          message: "Client speaks TLS, this server does not: start the server with tls, " +
            "or connect without tls",
        });
      } else if (!joined) {
        const reason = error instanceof TimeoutError ? "timeout" : "error";
        deps.refused(reason, String(error), address, name);
        logger?.debug?.("Handshake failed", {
          address: formatAddress(address),
          error: String(error),
        });
        await connection.close();
      }
    } finally {
      clearTimeout(waitTimer);
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
