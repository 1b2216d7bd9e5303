/**
 * The NATS layer's error: NATS could not be reached, refused the
 * credentials, or did not do what was asked in time.
 *
 * @module
 */

import { FedcommError } from "../errors.ts";

/**
 * NATS could not be reached or refused the credentials, a NATS operation kept
 * failing until its deadline, or what came through NATS failed its checks (a
 * model whose bytes do not match its SHA-256 name).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FedcommError } from "@fedcomm/fedcomm";
 * import { NatsError } from "@fedcomm/fedcomm/nats";
 *
 * const error = new NatsError(`Could not connect to NATS at "127.0.0.1:4222": connection refused`);
 * assert.ok(error instanceof FedcommError);
 * assert.equal(error.name, "NatsError");
 * ```
 */
export class NatsError extends FedcommError {
  /**
   * Creates the error.
   *
   * @param message What failed, in sentence case.
   * @param options The underlying error.
   */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "NatsError";
  }
}

/** A {@linkcode NatsError} that trying again cannot fix (a missing or corrupt object). */
export class PermanentNatsError extends NatsError {
  /**
   * Creates the error.
   *
   * @param message What failed, in sentence case.
   * @param options The underlying error.
   */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "NatsError";
  }
}
