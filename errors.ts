/**
 * The error classes callers catch. Wrong types and shapes throw the built-in
 * `TypeError`, invalid options throw `RangeError`; the conditions below are
 * about a peer, so each carries the client id where it is known.
 *
 * | class | when |
 * | --- | --- |
 * | {@linkcode PeerDisconnectedError} | the peer closed or lost the connection, or went silent |
 * | {@linkcode ProtocolError} | the peer sent bytes that break the protocol |
 * | {@linkcode TruncatedFrameError} | the stream ended inside a frame (a `ProtocolError`; on a connection, a drop) |
 * | {@linkcode RejectedError} | the server refused this client in the handshake |
 * | {@linkcode AuthenticationError} | the server could not prove it knows the shared secret |
 * | {@linkcode TimeoutError} | a waiting call ran out of time |
 * | {@linkcode SendTimeoutError} | a send ran out of time (a `TimeoutError`): `queued` says whether to send again |
 * | {@linkcode FrameTooLargeError} | a frame over `maxFrameBytes`, received or to be sent (a `RangeError`) |
 *
 * @module
 */

/** What every fedcomm error may say about the peer concerned. */
export interface FedcommErrorOptions {
  /** The id of the client concerned, where known. */
  clientId?: number;
  /** The underlying error. */
  cause?: unknown;
}

/**
 * Base class of every condition error fedcomm raises about a peer.
 *
 * @example Catching any fedcomm condition
 * ```ts
 * import assert from "node:assert/strict";
 * import { FedcommError, PeerDisconnectedError } from "@fedcomm/fedcomm";
 *
 * const error: unknown = new PeerDisconnectedError('Client "3" disconnected', { clientId: 3 });
 * assert.ok(error instanceof FedcommError);
 * assert.equal(error.clientId, 3);
 * ```
 */
export class FedcommError extends Error {
  /** The id of the client concerned, or `undefined` where none is known (before the handshake). */
  readonly clientId: number | undefined;

  /**
   * Creates the error.
   *
   * @param message What happened, in sentence case.
   * @param options The client id concerned and the underlying cause.
   */
  constructor(message: string, options?: FedcommErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "FedcommError";
    this.clientId = options?.clientId;
  }
}

/**
 * The peer closed or lost the connection while a call needed it, or it was
 * declared dead after being silent for too long.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PeerDisconnectedError } from "@fedcomm/fedcomm";
 *
 * const error = new PeerDisconnectedError('Client "2" disconnected', { clientId: 2 });
 * assert.equal(error.name, "PeerDisconnectedError");
 * assert.equal(error.clientId, 2);
 * ```
 */
export class PeerDisconnectedError extends FedcommError {
  /**
   * Creates the error.
   *
   * @param message What happened.
   * @param options The client id concerned and the underlying cause.
   */
  constructor(message: string, options?: FedcommErrorOptions) {
    super(message, options);
    this.name = "PeerDisconnectedError";
  }
}

/**
 * The peer broke the protocol: a malformed frame or MessagePack value, a
 * wrong handshake, an unsupported protocol version.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FedcommError, ProtocolError } from "@fedcomm/fedcomm";
 *
 * const error = new ProtocolError("Malformed MessagePack: extra bytes", { clientId: 0 });
 * assert.ok(error instanceof FedcommError);
 * assert.equal(error.clientId, 0);
 * ```
 */
export class ProtocolError extends FedcommError {
  /**
   * Creates the error.
   *
   * @param message What was wrong.
   * @param options The client id concerned and the underlying cause.
   */
  constructor(message: string, options?: FedcommErrorOptions) {
    super(message, options);
    this.name = "ProtocolError";
  }
}

/**
 * The byte stream ended inside a frame: in its 4-byte header or its body. On
 * a connection this is how a dropped link looks, so a session resumes after
 * it as after any other drop.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ProtocolError, TruncatedFrameError } from "@fedcomm/fedcomm";
 *
 * const error = new TruncatedFrameError(10, 3, { clientId: 1 });
 * assert.ok(error instanceof ProtocolError);
 * assert.equal(error.message, "Truncated frame: expected 10 bytes, received 3");
 * assert.deepStrictEqual([error.expected, error.received, error.clientId], [10, 3, 1]);
 * ```
 */
export class TruncatedFrameError extends ProtocolError {
  /** The bytes the frame needed: its body length, or 4 for a header. */
  readonly expected: number;
  /** The bytes of it that arrived. */
  readonly received: number;
  /** Whether the stream ended inside the header. */
  readonly inHeader: boolean;

  /**
   * Creates the error.
   *
   * @param expected The bytes the frame needed.
   * @param received The bytes of it that arrived.
   * @param options The client id concerned, and `inHeader` when the header was cut.
   */
  constructor(
    expected: number,
    received: number,
    options?: FedcommErrorOptions & { inHeader?: boolean },
  ) {
    const inHeader = options?.inHeader ?? false;
    super(
      `Truncated frame: expected ${expected} ${
        inHeader ? "header " : ""
      }bytes, received ${received}`,
      options,
    );
    this.name = "TruncatedFrameError";
    this.expected = expected;
    this.received = received;
    this.inHeader = inHeader;
  }
}

/** Why a server refuses a client in the handshake (PROTOCOL.md §6.3). */
export type RejectReason =
  | "version"
  | "full"
  | "malformed"
  | "closed"
  | "auth"
  | "busy"
  | "resume"
  | "live"
  | "duplicate";

/**
 * The server refused this client in the handshake; `reason` says why.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ProtocolError, RejectedError } from "@fedcomm/fedcomm";
 *
 * const error = new RejectedError("full", "Server full: all 2 clients have joined");
 * assert.ok(error instanceof ProtocolError);
 * assert.equal(error.reason, "full");
 * assert.equal(error.message, "Server rejected the connection: full: Server full: all 2 clients have joined");
 * ```
 */
export class RejectedError extends ProtocolError {
  /** The machine-readable reason, as the server sent it. */
  readonly reason: RejectReason | string;
  /** The server's explanation, as it sent it. */
  readonly detail: string;

  /**
   * Creates the error.
   *
   * @param reason The reason from the reject message.
   * @param detail The server's explanation.
   */
  constructor(reason: RejectReason | string, detail: string) {
    super(`Server rejected the connection: ${reason}: ${detail}`);
    this.name = "RejectedError";
    this.reason = reason;
    this.detail = detail;
  }
}

/**
 * The server did not prove that it knows the shared secret: its proof did
 * not match, or it welcomed this client without authenticating. The
 * connection is closed before anything is sent.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AuthenticationError, FedcommError } from "@fedcomm/fedcomm";
 *
 * const error = new AuthenticationError("Server failed authentication: its proof does not match");
 * assert.ok(error instanceof FedcommError);
 * ```
 */
export class AuthenticationError extends FedcommError {
  /**
   * Creates the error.
   *
   * @param message What failed.
   * @param options The client id concerned and the underlying cause.
   */
  constructor(message: string, options?: FedcommErrorOptions) {
    super(message, options);
    this.name = "AuthenticationError";
  }
}

/**
 * A waiting call ran out of time. `clientIds` lists the clients it was still
 * waiting for; `clientId` is the first of them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TimeoutError } from "@fedcomm/fedcomm";
 *
 * const error = new TimeoutError("Gather timed out after 50 ms: waiting for clients [1, 3]", {
 *   clientIds: [1, 3],
 * });
 * assert.deepStrictEqual(error.clientIds, [1, 3]);
 * assert.equal(error.clientId, 1);
 * ```
 */
export class TimeoutError extends FedcommError {
  /** Every client the call was still waiting for. */
  readonly clientIds: readonly number[];

  /**
   * Creates the error.
   *
   * @param message What timed out and after how long.
   * @param options The clients still awaited.
   */
  constructor(message: string, options?: { clientIds?: readonly number[]; cause?: unknown }) {
    const clientIds = options?.clientIds ?? [];
    super(message, { clientId: clientIds[0], cause: options?.cause });
    this.name = "TimeoutError";
    this.clientIds = clientIds;
  }
}

/**
 * A send ran out of time; `queued` says whether to send again. Not queued:
 * nothing was sent (earlier messages fill the retention, or the session is
 * resuming), so send it again. Queued: it is in the session and will be
 * delivered (sent again on a resume) though not acknowledged yet, so do not.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SendTimeoutError, TimeoutError } from "@fedcomm/fedcomm";
 *
 * const error = new SendTimeoutError("Send timed out after 50 ms: not queued", {
 *   queued: false,
 *   clientIds: [2],
 * });
 * assert.ok(error instanceof TimeoutError);
 * assert.equal(error.queued, false);
 * assert.equal(error.clientId, 2);
 * ```
 */
export class SendTimeoutError extends TimeoutError {
  /** Whether the message was queued (it will be delivered: do not send it again). */
  readonly queued: boolean;

  /**
   * Creates the error.
   *
   * @param message What timed out, and whether it was queued.
   * @param options Whether it was queued, the client concerned and the deadline's error.
   */
  constructor(
    message: string,
    options: { queued: boolean; clientIds?: readonly number[]; cause?: unknown },
  ) {
    super(message, options);
    this.name = "SendTimeoutError";
    this.queued = options.queued;
  }

  /**
   * The error of a send whose deadline fired, from the deadline's error.
   *
   * @param error The deadline's `TimeoutError` (anything else is returned as it is).
   * @param queued Whether the message was queued when it fired.
   * @returns The `SendTimeoutError`, or `error`.
   */
  static from(error: unknown, queued: boolean): unknown {
    if (!(error instanceof TimeoutError) || error instanceof SendTimeoutError) return error;
    const what = queued
      ? "queued, not acknowledged yet: it will be delivered, do not send it again"
      : "not queued: nothing was sent, send it again";
    return new SendTimeoutError(`${error.message}: ${what}`, {
      queued,
      clientIds: error.clientIds,
      cause: error,
    });
  }
}

/**
 * A frame longer than `maxFrameBytes`: announced by a peer (the connection
 * then fails, before any of the body is read) or about to be sent (nothing
 * is sent). A `RangeError`, since it is a limit.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FrameTooLargeError } from "@fedcomm/fedcomm";
 *
 * const error = new FrameTooLargeError(1025, 1024, { clientId: 1 });
 * assert.ok(error instanceof RangeError);
 * assert.equal(error.message, "Frame too large: 1025 bytes exceeds maxFrameBytes 1024");
 * assert.equal(error.clientId, 1);
 * ```
 */
export class FrameTooLargeError extends RangeError {
  /** The id of the client concerned, where known. */
  clientId: number | undefined;
  /** The frame body's length. */
  readonly length: number;
  /** The limit it exceeds. */
  readonly limit: number;

  /**
   * Creates the error.
   *
   * @param length The body length.
   * @param limit The limit.
   * @param options The client concerned.
   */
  constructor(length: number, limit: number, options?: FedcommErrorOptions) {
    super(
      `Frame too large: ${length} bytes exceeds maxFrameBytes ${limit}`,
      options?.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "FrameTooLargeError";
    this.clientId = options?.clientId;
    this.length = length;
    this.limit = limit;
  }
}

/**
 * A long message (PROTOCOL.md §8.8) larger than `maxMessageBytes`: announced
 * by a peer's header (the connection then fails, before the references are
 * allocated) or about to be sent (nothing is sent). A `RangeError`, since it
 * is a limit.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MessageTooLargeError } from "@fedcomm/fedcomm";
 *
 * const error = new MessageTooLargeError(2 ** 33, 2 ** 32, { clientId: 2 });
 * assert.ok(error instanceof RangeError);
 * assert.equal(error.message, "Message too large: 8589934592 bytes exceeds maxMessageBytes 4294967296");
 * assert.equal(error.clientId, 2);
 * ```
 */
export class MessageTooLargeError extends RangeError {
  /** The id of the client concerned, where known. */
  clientId: number | undefined;
  /** The message's size: its header body plus the lengths of its references. */
  readonly length: number;
  /** The limit it exceeds. */
  readonly limit: number;

  /**
   * Creates the error.
   *
   * @param length The message's size.
   * @param limit The limit.
   * @param options The client concerned.
   */
  constructor(length: number, limit: number, options?: FedcommErrorOptions) {
    super(
      `Message too large: ${length} bytes exceeds maxMessageBytes ${limit}`,
      options?.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "MessageTooLargeError";
    this.clientId = options?.clientId;
    this.length = length;
    this.limit = limit;
  }
}
