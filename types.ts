/**
 * The public option and result types of the library, and its public
 * constants, in one place: what `connect()`, `listen()`, the codec and the
 * frame streams take and return. Re-exported by `mod.ts` and the other
 * entry points; defined here so that every layer can use them.
 *
 * @module
 */

import type { Logger } from "./events.ts";

/** How long a waiting call may take, and a signal to cancel it. */
export interface WaitOptions {
  /** Cancels the call: it rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * The most milliseconds the call may take (default: no limit). It then
   * rejects with a `TimeoutError` that names the clients it still awaited.
   */
  timeout?: number;
}

/** The default largest frame body accepted and sent: 512 MiB. */
export const DEFAULT_MAX_FRAME_BYTES: number = 512 * 1024 * 1024;

/** Options of the frame streams and the reader. */
export interface FrameOptions {
  /**
   * The largest frame body accepted, in bytes (default 512 MiB, at most
   * 2³²−1). A longer announced length fails at once with a
   * `FrameTooLargeError` (a `RangeError`), before any of its body is buffered.
   */
  maxFrameBytes?: number;
}

/** The default largest long message accepted and sent: 16 GiB. */
export const DEFAULT_MAX_MESSAGE_BYTES: number = 16 * 1024 ** 3;

/** The limit on long messages (PROTOCOL.md §8.8), of `listen()` and `connect()`. */
export interface MessageOptions {
  /**
   * The largest long message accepted, and sent, in bytes (default 16 GiB,
   * at most 2⁵³−1; 0 turns long messages off). A value whose frame would
   * exceed `maxFrameBytes`, or that holds a binary of 4 GiB or more, travels
   * as a long message: a header frame, then its large binaries in parts,
   * each received straight into an array of its own. A peer's header that
   * announces more fails its connection with a `MessageTooLargeError` (a
   * `RangeError`) before anything is allocated for it.
   */
  maxMessageBytes?: number;
}

/** A shared secret: a string (its UTF-8 bytes) or bytes. */
export type Secret = string | Uint8Array;

/** The protocol version this library speaks. */
export const PROTOCOL_VERSION = 3;

/** Client metadata sent in the hello: a few small values by name. */
export type Props = Readonly<Record<string, string | number | boolean | null>>;

/** What the client learns from the server's welcome. */
export interface Welcome {
  /**
   * This client's id: `0 … clients − 1` with fixed membership; with open
   * membership ids are never reused, so they grow past `clients`.
   */
  readonly id: number;
  /** How many clients the server serves. */
  readonly clients: number;
  /** The largest frame body the server accepts. */
  readonly maxFrameBytes: number;
  /** Whether both sides proved they know the shared secret. */
  readonly authenticated: boolean;
  /** The session's resume token (absent when the server offers no resume). */
  readonly token: Uint8Array | undefined;
  /** How long the server waits for a resume after a drop, in ms (0: no resume). */
  readonly grace: number;
  /** How many of the client's messages the server received (a resume). */
  readonly received: number;
  /** Whether this welcome resumed the session asked for. */
  readonly resumed: boolean;
  /** The largest long message the server accepts (0: it takes none, PROTOCOL.md §8.8). */
  readonly maxMessageBytes: number;
}

/** A value encoded as a list of chunks whose concatenation is one MessagePack value. */
export interface EncodedChunks {
  /**
   * The chunks, in order. The first starts with `reserve` zero bytes for the
   * caller (a frame header, say). Chunks made by the encoder are owned by the
   * caller; the others are views of binaries inside the value.
   */
  readonly chunks: Uint8Array[];
  /** Total bytes of the MessagePack value, without the reserved bytes. */
  readonly byteLength: number;
  /** Whether any chunk is a view of the caller's memory rather than a copy. */
  readonly borrowed: boolean;
  /** Whether the last chunk is the encoder's scratch memory (with `transient: true`). */
  readonly transient: boolean;
}

/** Options for {@linkcode encodeChunks}. */
export interface EncodeChunksOptions {
  /** Zero bytes to leave at the start of the first chunk (default 0). */
  reserve?: number;
  /**
   * Return the last chunk as a view of the encoder's scratch memory instead
   * of a copy (default false). It is valid only until the next encode: for a
   * caller that copies it at once. Saves an allocation per small message.
   */
  transient?: boolean;
}

/** Options for {@linkcode decode}: the client to blame, and the limits of PROTOCOL.md §4.5. */
export interface DecodeOptions {
  /** The client the bytes came from, named in the `ProtocolError`. */
  clientId?: number;
  /**
   * How many arrays and maps may nest: an integer from 1 to 1000 (default
   * 100, the encoder's limit). A typed array counts two levels, its map and
   * its `shape` array.
   */
  maxDepth?: number;
  /**
   * Cost units a body may spend per byte of its length: a non-negative number
   * (default 2). A unit is about 8 bytes of memory; see {@linkcode decode}.
   * `Infinity` lifts the bound.
   */
  costPerByte?: number;
  /**
   * Cost units any body may spend whatever its length: a non-negative number
   * (default 2²², 4,194,304, about 32 MiB), so that small bodies are never
   * refused for their cost.
   */
  costFloor?: number;
  /**
   * Cost units no body may exceed, whatever its length: a non-negative
   * number (default 2²⁴, 16,777,216, about 128 MiB of heap and a second of
   * work at most), so that no body stalls the event loop for long. Values
   * with millions of plain array elements or map entries are refused: send
   * numbers in bulk as typed arrays (tensors), which cost 13 units each.
   * `Infinity` lifts it.
   */
  costLimit?: number;
}

/** Options for {@linkcode connect}. */
export interface ConnectOptions extends FrameOptions, MessageOptions {
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

/** Options for {@linkcode listen}. */
export interface ListenOptions extends FrameOptions, MessageOptions {
  /**
   * How many clients to wait for; they get ids `0 … clients − 1` in order of
   * arrival. With `open`, the most clients connected at once (ids then grow
   * past it, as they are never reused).
   */
  clients: number;
  /**
   * Let clients join at any time, up to `clients` at once (default false:
   * wait for exactly `clients`). Ids are never reused. Calls then address by
   * default the clients connected (or resuming) at the call.
   */
  open?: boolean;
  /**
   * Milliseconds a client whose connection dropped has to resume its session
   * on a new one, keeping its id, with nothing lost (default 300,000; 0: a
   * drop ends the session). Calls waiting on it keep waiting meanwhile,
   * within their own deadlines.
   */
  resumeTimeout?: number;
  /**
   * Bytes of messages sent to one client and not yet acknowledged, kept for
   * a resume (default 64 MiB): past it, sending to that client waits for its
   * acknowledgements. A single larger message is still sent on its own.
   */
  retainBytes?: number;
  /** The address to listen on (default `"127.0.0.1"`; `"0.0.0.0"` for every interface). */
  hostname?: string;
  /** The TCP port (default 0: the system picks a free one; read it from `server.port`). */
  port?: number;
  /** Milliseconds a connecting client has for its whole handshake: TLS, hello, auth (default 10,000). */
  handshakeTimeout?: number;
  /**
   * Milliseconds from the accept to the last byte of the client's hello (with
   * TLS, the TLS handshake too; default 3,000): a connection that says
   * nothing, or drips its hello, loses its place long before `handshakeTimeout`.
   */
  helloTimeout?: number;
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
   * so a live client, even one training for hours, is never silent that long
   * while its I/O runs (a Deno client that blocks its event loop longer is
   * declared dead, then resumes).
   */
  idleTimeout?: number;
  /**
   * How many connections may be in their handshake at once (default 64).
   * When all are taken, a newcomer takes the place of the oldest one that has
   * not said hello for 500 ms, from the address holding the most places, and
   * that one gets a `busy` reject; only when none can be freed is the
   * newcomer turned away with `busy`. Keeps a flood of connections far from
   * the file-descriptor limit, and from locking out the clients that say hello.
   */
  maxPendingHandshakes?: number;
  /**
   * How many of those may come from one address (default half of
   * `maxPendingHandshakes`); further ones from it get `busy` at once.
   */
  maxPendingPerAddress?: number;
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

/** Options for {@linkcode Server.ready}. */
export interface ReadyOptions extends WaitOptions {
  /** How many members to wait for (default: the `clients` of `listen`). */
  clients?: number;
}

/** One client as {@linkcode Server.stats} sees it. */
export interface ClientStats {
  /** Its id. */
  readonly id: number;
  /** The name from its hello, if any. */
  readonly name: string | undefined;
  /** The metadata from its hello (`connect({ props })`). */
  readonly props: Readonly<Record<string, string | number | boolean | null>>;
  /** Whether it proved it knows its secret. */
  readonly authenticated: boolean;
  /** Its address, `host:port` (the last one while it is resuming). */
  readonly address: string;
  /** Connected, waiting for its resume after a drop, or gone for good. */
  readonly state: "connected" | "resuming" | "gone";
  /** Why its session ended, if it did. */
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
  /** Messages sent to it that it has not acknowledged yet (kept for a resume). */
  readonly unacknowledged: number;
  /** How many times its session resumed on a new connection. */
  readonly resumes: number;
  /** Replies to earlier messages it sent after a newer one: dropped (`"late"` events). */
  readonly lateReplies: number;
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
   * The clients that gave no answer, with why: `PeerDisconnectedError` (it
   * left, or it is away: its connection dropped and it has not resumed yet,
   * the drop being the `cause`), `ProtocolError`, a `FrameTooLargeError`,
   * `TimeoutError` (at the deadline, or not answered within `grace` after the
   * quorum; the two messages differ), or a `FedcommError` saying it was not
   * waited for because the quorum could no longer be reached.
   */
  readonly failed: Map<number, Error>;
  /**
   * How many late replies (answers to an earlier message than the last one
   * sent to that client) were dropped since that last message was sent, by
   * client id: on arrival, or by this call; only clients that sent some are
   * listed. Each was also a `late` event.
   */
  readonly late: Map<number, number>;
  /** Whether `received.size` reached `min` (without `min`: every client asked answered). */
  readonly quorum: boolean;
}

/** Which clients a call addresses, and how long it may wait. */
export interface TargetOptions extends WaitOptions {
  /** The clients (default: all current members), each at most once. */
  ids?: Iterable<number>;
}

/** Options for {@linkcode Server.broadcast}. */
export type BroadcastOptions = TargetOptions;

/**
 * Options for {@linkcode Server.gather} and {@linkcode Server.gatherSettled}.
 *
 * With `min`, the call is done once `min` clients answered and `grace` ms
 * passed since the `min`-th answer (or every other client answered or
 * failed); the clients still silent then are not waited for. At the deadline
 * it is done too: with the quorum, `gather` returns what it has.
 */
export interface GatherOptions extends TargetOptions {
  /**
   * The quorum: how many answers are enough (a positive integer, at most the
   * number of clients asked; default: all of them). `gather` then fails only
   * once the quorum cannot be reached any more, or at the deadline without it.
   */
  min?: number;
  /**
   * Milliseconds to keep waiting for the other clients after the `min`-th
   * answer (default 0: stop at once). Only used with `min`.
   */
  grace?: number;
}

/** Options for {@linkcode Server.uploads}. */
export interface UploadsOptions extends TargetOptions {
  /**
   * How many messages to take from each client (default 1: one round).
   * `Infinity` streams until the clients disconnect, which then ends the
   * iteration instead of failing it.
   */
  count?: number;
  /**
   * The quorum: how many clients delivering all their `count` messages are
   * enough (a positive integer, at most the number of clients asked; needs a
   * finite `count`). A client that fails is then skipped while the quorum can
   * still be reached; at the deadline the iteration ends normally if the
   * quorum was reached. Default: every client asked must deliver.
   */
  min?: number;
  /**
   * Milliseconds to keep yielding after the `min`-th client delivered its
   * `count` (default 0: end at once); the iteration then ends. Only used with `min`.
   */
  grace?: number;
}
