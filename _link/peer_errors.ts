/**
 * The errors a link's failures become, naming the peer: `client "3"`,
 * `server` or (before a client has an id) `peer`. The handshake and the
 * session word them the same way.
 *
 * @module
 */

import {
  FrameTooLargeError,
  MessageTooLargeError,
  PeerDisconnectedError,
  ProtocolError,
  TruncatedFrameError,
} from "../errors.ts";

/**
 * Whether an error means the connection dropped (the peer vanished, the
 * network cut it, even inside a frame), which a resume mends, rather than a
 * peer breaking the protocol.
 *
 * @param error The error.
 * @returns Whether it is a drop.
 */
export function isDrop(error: unknown): boolean {
  return error instanceof PeerDisconnectedError || error instanceof TruncatedFrameError;
}

/** Who is at the other end of a link, for messages. */
export class Peer {
  /** The client id, once known: errors name it. */
  clientId: number | undefined;
  readonly #isServer: boolean;

  /**
   * @param isServer Whether the other end is the server (this is a client's link).
   * @param clientId The client's id, if known.
   */
  constructor(isServer: boolean, clientId?: number) {
    this.#isServer = isServer;
    this.clientId = clientId;
  }

  /** Whether the other end is the server. */
  get isServer(): boolean {
    return this.#isServer;
  }

  /** `client "3"`, `server` or `peer`. */
  get label(): string {
    if (this.#isServer) return "server";
    return this.clientId === undefined ? "peer" : `client "${this.clientId}"`;
  }

  /** {@linkcode Peer.label}, capitalised to start a message. */
  get Label(): string {
    const who = this.label;
    return `${who[0].toUpperCase()}${who.slice(1)}`;
  }

  /**
   * The peer is gone (or we closed).
   *
   * @param closing Whether `close()` was called here.
   * @param cause The I/O error, if any.
   * @returns The error.
   */
  disconnected(closing: boolean, cause?: unknown): PeerDisconnectedError {
    return new PeerDisconnectedError(
      closing ? "Connection closed: close() was called" : `${this.Label} disconnected`,
      { clientId: this.clientId, cause },
    );
  }

  /**
   * The peer was silent for the idle timeout.
   *
   * @param ms The idle timeout.
   * @returns The error.
   */
  silent(ms: number): PeerDisconnectedError {
    return new PeerDisconnectedError(`${this.Label} silent for ${ms} ms: declared dead`, {
      clientId: this.clientId,
    });
  }

  /**
   * Names the peer in an error from the frame reader; I/O errors mean the peer is gone.
   *
   * @param error What the reader threw.
   * @param closing Whether `close()` was called here.
   * @returns The error to report.
   */
  describe(error: unknown, closing: boolean): Error {
    if (
      error instanceof FrameTooLargeError || error instanceof MessageTooLargeError ||
      error instanceof ProtocolError
    ) {
      (error as { clientId?: number }).clientId ??= this.clientId;
      error.message = `${error.message}: from ${this.label}`;
      return error;
    }
    return this.disconnected(closing, error);
  }
}
