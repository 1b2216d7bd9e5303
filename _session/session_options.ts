/**
 * What a session (`session.ts`) is made with: the peer's id, both sides'
 * limits, the shared receive budget, and its first frame.
 *
 * @module
 */

import type { ByteBudget } from "./budget.ts";
import type { BufferPool } from "./pool.ts";

/** Options for a `Session` (`session.ts`). */
export interface SessionOptions {
  /** The id of the client at the other end (or of this client). */
  clientId: number;
  /** The largest frame body accepted and sent. */
  maxFrameBytes: number;
  /** The largest body the peer accepts, if it said: larger values are refused when sending. */
  peerMaxFrameBytes?: number;
  /** The largest long message accepted and sent (PROTOCOL.md §8.8; default 0: none). */
  maxMessageBytes?: number;
  /** The largest long message the peer accepts (default 0: it takes none). */
  peerMaxMessageBytes?: number;
  /** A budget shared with other sessions for large received frames not yet taken. */
  budget?: ByteBudget;
  /** Recycled memory for large received bodies, shared with other sessions (default: its own). */
  pool?: BufferPool;
  /** Whether the other end is the server (this is a client's session), for messages. */
  peerIsServer?: boolean;
  /** Bytes of unacknowledged messages at which sending waits (default 64 MiB). */
  retainBytes?: number;
  /** A frame to write before anything else (the server's welcome). */
  first?: Uint8Array;
  /** Bytes the handshake read, counted in {@linkcode Session.bytesReceived}. */
  bytesReceived?: number;
  /**
   * What a send does when the outbox is full while the peer is away: wait
   * for the resume (a client), or (a server: a dead site must not stall a
   * round or grow memory) hold the message up to twice `retainBytes` and
   * end the session past that.
   */
  fullWhileAway?: "wait" | "end";
}
