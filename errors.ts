/**
 * The error classes callers catch. Wrong types and shapes throw the built-in
 * `TypeError`, limits throw `RangeError`; the conditions below are about a
 * peer, so each carries the client id where it is known.
 *
 * @module
 */

/**
 * Base class of every condition error fedcomm raises about a peer.
 *
 * @example Catching any fedcomm condition
 * ```ts
 * import { FedcommError, PeerDisconnectedError } from "@fedcomm/fedcomm";
 *
 * const error: unknown = new PeerDisconnectedError("Client disconnected: id 3", { clientId: 3 });
 * if (error instanceof FedcommError) console.log(error.clientId); // 3
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
  constructor(message: string, options?: { clientId?: number; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "FedcommError";
    this.clientId = options?.clientId;
  }
}

/**
 * The peer closed or lost the connection while a call needed it.
 *
 * @example
 * ```ts
 * import { PeerDisconnectedError } from "@fedcomm/fedcomm";
 *
 * const error = new PeerDisconnectedError("Client disconnected: id 2", { clientId: 2 });
 * console.log(error.name, error.clientId); // PeerDisconnectedError 2
 * ```
 */
export class PeerDisconnectedError extends FedcommError {
  /**
   * Creates the error.
   *
   * @param message What happened.
   * @param options The client id concerned and the underlying cause.
   */
  constructor(message: string, options?: { clientId?: number; cause?: unknown }) {
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
 * import { ProtocolError } from "@fedcomm/fedcomm";
 *
 * const error = new ProtocolError("Malformed MessagePack: extra bytes", { clientId: 0 });
 * console.log(error instanceof Error); // true
 * ```
 */
export class ProtocolError extends FedcommError {
  /**
   * Creates the error.
   *
   * @param message What was wrong.
   * @param options The client id concerned and the underlying cause.
   */
  constructor(message: string, options?: { clientId?: number; cause?: unknown }) {
    super(message, options);
    this.name = "ProtocolError";
  }
}

/**
 * A waiting call ran out of time. `clientIds` lists the clients it was still
 * waiting for; `clientId` is the first of them.
 *
 * @example
 * ```ts
 * import { TimeoutError } from "@fedcomm/fedcomm";
 *
 * const error = new TimeoutError("Gather timed out after 50 ms: waiting for ids [1, 3]", {
 *   clientIds: [1, 3],
 * });
 * console.log(error.clientIds); // [ 1, 3 ]
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
