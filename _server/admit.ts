/**
 * One accepted connection's way in: its TLS handshake (on a TLS server),
 * its fedcomm handshake (`_handshake/`), then its session: a new one with
 * an id and a welcome, or the one it resumes. Or a reject saying why not.
 *
 * @module
 */

import { Greeting } from "../_handshake/greeting.ts";
import { greetClient, reject } from "../_handshake/greet_client.ts";
import type { KeyLookup } from "../_handshake/auth.ts";
import {
  HANDSHAKE_FRAME_BYTES,
  type Hello,
  type Refusal,
  welcomeFrame,
} from "../_handshake/messages.ts";
import { Session } from "../_session/session.ts";
import type { ByteBudget } from "../_session/budget.ts";
import type { BufferPool } from "../_session/pool.ts";
import type { Members } from "./members.ts";
import { EVICTABLE_AFTER_MS, type PendingHandshakes, type PendingPlace } from "./pending.ts";
import { spokeTls } from "../_link/tls.ts";
import { type Deadline, startDeadline, within } from "../_util/wait.ts";
import { PeerDisconnectedError, TimeoutError } from "../errors.ts";
import { formatAddress, type Logger } from "../events.ts";

/** What admission needs from the server besides its options. */
export interface AdmissionDeps {
  /** The largest frame body accepted once a client joined (validated). */
  maxFrameBytes: number;
  /** The largest long message accepted and sent (validated; 0: none). */
  maxMessageBytes: number;
  /** The receive budget, given to a client once it joined. */
  budget: ByteBudget;
  /** Recycled memory for large bodies, shared by every session. */
  pool: BufferPool;
  /** Who may join, and the members' list. */
  members: Members;
  /** Called when a connection is turned away: the reject's reason, or "timeout"/"error". */
  refused: (reason: string, message: string, address: Deno.Addr | undefined, name?: string) => void;
}

/** What every admission shares: the server's settings and state. */
export interface AdmitContext {
  readonly deps: AdmissionDeps;
  readonly keys: KeyLookup | undefined;
  readonly logger: Logger | undefined;
  readonly heartbeatMs: number;
  readonly idleTimeout: number;
  readonly handshakeTimeout: number;
  readonly helloTimeout: number;
  readonly clients: number;
  readonly retainBytes: number | undefined;
  readonly pending: PendingHandshakes;
  /** Aborts when the server closes. */
  readonly closing: AbortSignal;
}

/** A refusal before the fedcomm handshake: its TLS failed, or was missing. */
type TlsRefusal = { reason: "tls"; message: string };

/**
 * Runs one connection's handshake to its session, or turns it away. Never throws.
 *
 * @param conn The accepted connection.
 * @param place Its handshake place.
 * @param context The server's settings and state.
 * @returns Resolves when the connection has a session or is closed.
 */
export async function admit(
  conn: Deno.Conn,
  place: PendingPlace,
  context: AdmitContext,
): Promise<void> {
  await new Admit(conn, place, context).run();
}

/** One connection's admission; see the module doc. */
class Admit {
  readonly #conn: Deno.Conn;
  readonly #place: PendingPlace;
  readonly #context: AdmitContext;
  readonly #greeting: Greeting;
  readonly #address: Deno.Addr | undefined;
  /** The name its hello claimed, once known. */
  #name: string | undefined;
  /** It got a session: from now on the session reports what happens to it. */
  #joined = false;
  /** A TLS peer can read nothing before its TLS handshake: plain TCP can. */
  #readable: boolean;

  constructor(conn: Deno.Conn, place: PendingPlace, context: AdmitContext) {
    this.#conn = conn;
    this.#place = place;
    this.#context = context;
    this.#greeting = new Greeting(conn, {
      handshakeFrameBytes: Math.min(HANDSHAKE_FRAME_BYTES, context.deps.maxFrameBytes),
      heartbeatMs: context.heartbeatMs,
      idleTimeout: context.idleTimeout,
    });
    let address: Deno.Addr | undefined;
    try {
      address = conn.remoteAddr;
    } catch {
      // A socket that is already gone.
    }
    this.#address = address;
    this.#readable = !("handshake" in conn);
  }

  async run(): Promise<void> {
    const context = this.#context;
    const place = this.#place;
    context.logger?.debug?.("Connection accepted", { address: formatAddress(this.#address) });
    const signal = AbortSignal.any([context.closing, place.evicted]);
    // Waiting for a place: the hello must come soon, or the spot goes.
    const waitTimer = place.waiting
      ? setTimeout(() => {
        if (!place.waiting) return;
        place.evict(
          new PeerDisconnectedError(
            `Server busy: every handshake place was taken, and no hello came within ` +
              `${EVICTABLE_AFTER_MS} ms`,
          ),
        );
      }, EVICTABLE_AFTER_MS)
      : undefined;
    try {
      const detail = () => formatAddress(this.#address);
      using deadline = startDeadline(
        { timeout: context.handshakeTimeout, signal },
        () => ({ what: "Handshake", detail: detail(), clientIds: [] }),
      );
      using helloDeadline = startDeadline(
        { timeout: context.helloTimeout, signal },
        () => ({ what: "Hello", detail: detail(), clientIds: [] }),
      );
      const tls = await this.#tls(helloDeadline);
      if (tls !== undefined) return await this.#refuse(tls);
      const hello = await greetClient(
        this.#greeting,
        deadline,
        context.keys,
        helloDeadline,
        () => this.#helloArrived(),
      );
      if ("reason" in hello) return await this.#refuse(hello);
      this.#name = hello.name;
      await this.#enter(hello);
    } catch (error) {
      await this.#failed(error);
    } finally {
      clearTimeout(waitTimer);
    }
  }

  /** A TLS server: the TLS handshake first, so that its failure is told as itself. */
  async #tls(deadline: Deadline): Promise<TlsRefusal | undefined> {
    if (!("handshake" in this.#conn)) return undefined;
    try {
      await within((this.#conn as Deno.TlsConn).handshake(), deadline);
      this.#readable = true;
      return undefined;
    } catch (error) {
      if (error instanceof TimeoutError) throw error;
      return {
        reason: "tls",
        message: `TLS handshake failed: ${error instanceof Error ? error.message : error}: ` +
          "the client may not speak TLS, or may not trust this server's certificate",
      };
    }
  }

  /** The hello came: the connection keeps a place among those that said hello, or goes. */
  #helloArrived(): void {
    const place = this.#place;
    const placed = this.#context.pending.greet(place, (victim) =>
      victim.evict(
        new PeerDisconnectedError(
          "Server busy: every handshake place was taken, and this connection had not said " +
            "hello: it gave its place to one that did",
        ),
      ));
    if (placed) return;
    place.evict(
      new PeerDisconnectedError(
        "Server busy: every handshake place is taken by a connection that said hello",
      ),
    );
    throw place.evicted.reason;
  }

  /** The handshake succeeded: the session it resumes, or a new one. */
  async #enter(hello: Hello): Promise<void> {
    const { deps, clients, retainBytes } = this.#context;
    const { members } = deps;
    // The server's limit on long messages answers a hello that gave its own (§6.2).
    const fields = {
      clients,
      maxFrameBytes: deps.maxFrameBytes,
      grace: members.grace,
      maxMessageBytes: hello.maxMessageBytes === undefined ? undefined : deps.maxMessageBytes,
    };
    const greeting = this.#greeting;
    if (hello.resume !== undefined) {
      const found = members.resume(hello);
      if ("reason" in found) return await this.#refuse(found);
      // The session takes over this link: the welcome, then what the client
      // has not received, then reading goes on for the session.
      this.#joined = true;
      const { session, id } = found;
      const first = welcomeFrame(id, {
        ...fields,
        token: hello.resume.token,
        received: session.messagesReceived,
        resumed: true,
      });
      session.resume(greeting.release(), hello.resume.received, first);
      members.resumed(id);
      return;
    }
    const joining = members.join(hello, (id, token) =>
      new Session(greeting.release(), {
        clientId: id,
        maxFrameBytes: deps.maxFrameBytes,
        maxMessageBytes: deps.maxMessageBytes,
        peerMaxMessageBytes: hello.maxMessageBytes ?? 0,
        budget: deps.budget,
        pool: deps.pool,
        retainBytes,
        fullWhileAway: "end",
        bytesReceived: greeting.bytesReceived,
        first: welcomeFrame(id, { ...fields, token, received: 0, resumed: false }),
      }));
    if ("reason" in joining) return await this.#refuse(joining);
    this.#joined = true;
    // Resumable once the client has its token; a session that failed before
    // (bytes that came with the hello, say) leaves at once, with a leave event.
    await joining.session.firstWritten().catch(() => {});
    joining.session.allowResume(members.grace);
    members.welcomed(joining.session);
  }

  /** Tells the refused peer why (or, where it cannot read a reject, nothing), then closes. */
  async #refuse(refusal: Refusal | TlsRefusal): Promise<void> {
    const claimed = "name" in refusal ? refusal.name ?? this.#name : this.#name;
    this.#context.deps.refused(refusal.reason, refusal.message, this.#address, claimed);
    this.#context.logger?.warn?.("Handshake refused", {
      address: formatAddress(this.#address),
      name: claimed,
      reason: refusal.reason,
      message: refusal.message,
    });
    if (refusal.reason === "tls") await this.#greeting.close();
    else await reject(this.#greeting, refusal, this.#context.deps.maxFrameBytes);
  }

  /** The peer timed out, left, or sent garbage before it had a session: drop it. */
  async #failed(error: unknown): Promise<void> {
    if (this.#joined) return;
    const place = this.#place;
    if (place.evicted.aborted) {
      const message = (place.evicted.reason as Error).message;
      if (this.#readable) return await this.#refuse({ reason: "busy", message });
      this.#context.deps.refused("busy", message, this.#address, this.#name);
    } else if (spokeTls(error)) {
      return await this.#refuse({
        reason: "tls",
        message: "Client speaks TLS, this server does not: start the server with tls, " +
          "or connect without tls",
      });
    } else {
      const reason = error instanceof TimeoutError ? "timeout" : "error";
      this.#context.deps.refused(reason, String(error), this.#address, this.#name);
      this.#context.logger?.debug?.("Handshake failed", {
        address: formatAddress(this.#address),
        error: String(error),
      });
    }
    await this.#greeting.close();
  }
}
