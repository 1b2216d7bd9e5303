/**
 * The types of the server's options and results, re-exported by `server.ts`.
 *
 * @module
 */

import type { Secret } from "./_auth.ts";
import type { FrameOptions } from "./_frame.ts";
import type { WaitOptions } from "./_wait.ts";
import type { Logger } from "./events.ts";

/** Options for {@linkcode listen}. */
export interface ListenOptions extends FrameOptions {
  /** How many clients to wait for; they get ids `0 … clients − 1` in order of arrival. */
  clients: number;
  /** The address to listen on (default `"127.0.0.1"`; `"0.0.0.0"` for every interface). */
  hostname?: string;
  /** The TCP port (default 0: the system picks a free one; read it from `server.port`). */
  port?: number;
  /** Milliseconds a connecting client has for its whole handshake: TLS, hello, auth (default 10,000). */
  handshakeTimeout?: number;
  /** Send a ping on a connection that wrote nothing for this many ms (default 15,000; 0: never). */
  heartbeatMs?: number;
  /**
   * How many bytes of large received messages may wait in memory, not yet
   * taken by `uploads()` or a later receive, across all clients (default
   * 128 MiB). Past it, further large uploads wait in the kernel and TCP slows
   * their senders; one message larger than this is still admitted on its own.
   * A `gather()` reads its clients without this limit, since it returns all
   * their answers at once anyway.
   */
  receiveBufferBytes?: number;
  /**
   * Declare a client dead after this many ms without a byte from it (default
   * 60,000; 0: never). Clients answer the server's pings and ping when idle,
   * so a live client, even one training for hours, is never silent that long.
   */
  idleTimeout?: number;
  /**
   * How many connections may be in their handshake at once (default 64):
   * further ones get a `busy` reject at once. Keeps a flood of connections
   * far from the file-descriptor limit.
   */
  maxPendingHandshakes?: number;
  /** Require clients to prove they know a shared secret (PROTOCOL.md §7). */
  auth?: AuthOptions;
  /** Serve over TLS with this certificate and key (PEM). */
  tls?: TlsOptions;
  /** Where diagnostics go (default: nowhere); `console` works. */
  logger?: Logger;
}

/**
 * The secrets clients must prove they know: one for the whole cohort, or
 * one per client name (the client passes `name` and `secret` to `connect`).
 * Each secret is at least 16 bytes: a random key (`openssl rand -hex 32`),
 * not a password.
 */
export interface AuthOptions {
  /** One secret for every client. */
  secret?: Secret;
  /** A secret per client name; a client must give one of these names. */
  clients?: Readonly<Record<string, Secret>> | ReadonlyMap<string, Secret>;
}

/** The server's certificate chain and private key, both PEM. */
export interface TlsOptions {
  /** The certificate chain (PEM). */
  cert: string;
  /** The private key (PEM). */
  key: string;
}

/** One client as {@linkcode Server.stats} sees it. */
export interface ClientStats {
  /** Its id. */
  readonly id: number;
  /** The name from its hello, if any. */
  readonly name: string | undefined;
  /** Its address, `host:port`. */
  readonly address: string;
  /** Whether its connection is up, and if not, why it ended. */
  readonly state: "connected" | "disconnected";
  /** Why its connection ended, if it did. */
  readonly error: Error | undefined;
  /** Bytes sent to it and received from it, frame headers included. */
  readonly bytesSent: number;
  /** Bytes received from it. */
  readonly bytesReceived: number;
  /** Application messages queued for it. */
  readonly messagesSent: number;
  /** Application messages received from it. */
  readonly messagesReceived: number;
  /** Milliseconds since the last byte from it. */
  readonly silentMs: number;
  /** The round trip of the last ping in ms, or `undefined` before the first pong. */
  readonly rttMs: number | undefined;
  /** Messages received from it and not yet taken. */
  readonly queued: number;
}

/** One client's message, as {@linkcode Server.uploads} yields it. */
export interface Upload {
  /** The client's id. */
  readonly id: number;
  /** The decoded value. */
  readonly value: unknown;
}

/** What {@linkcode Server.gatherSettled} returns. */
export interface GatherResult {
  /** The answers, by client id, in the order of the ids asked for. */
  readonly received: Map<number, unknown>;
  /**
   * The clients that gave no answer, with why: `PeerDisconnectedError`,
   * `ProtocolError`, a `FrameTooLargeError` or `TimeoutError`.
   */
  readonly failed: Map<number, Error>;
}

/** Which clients a call addresses, and how long it may wait. */
export interface TargetOptions extends WaitOptions {
  /** The clients (default: all), each at most once. */
  ids?: Iterable<number>;
}

/** Options for {@linkcode Server.broadcast}. */
export type BroadcastOptions = TargetOptions;

/** Options for {@linkcode Server.gather} and {@linkcode Server.gatherSettled}. */
export type GatherOptions = TargetOptions;

/** Options for {@linkcode Server.uploads}. */
export interface UploadsOptions extends TargetOptions {
  /**
   * How many messages to take from each client (default 1: one round).
   * `Infinity` streams until the clients disconnect, which then ends the
   * iteration instead of failing it.
   */
  count?: number;
}
