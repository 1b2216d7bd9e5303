/**
 * A long message being received (PROTOCOL.md §8.8): its header's skeleton
 * decoded into the value, each reference allocated at its exact length (a
 * numpy array's own memory), then filled by the parts that follow, large
 * ones read straight into place by the frame reader.
 *
 * @module
 */

import { decodeSkeleton } from "../_codec/decoder.ts";
import { LONG_PREFIX_BYTES } from "../_wire/control.ts";
import { MessageTooLargeError, ProtocolError } from "../errors.ts";
import type { Reservation } from "./budget.ts";

/** See the module doc. */
export class Assembly {
  /** The value, complete once every reference is filled. */
  readonly value: unknown;
  /** The message it answers (a reply), or 0. */
  readonly request: number;
  /** The message's size: header body plus references. */
  readonly size: number;
  /** Bytes of the references in all. */
  readonly referenceBytes: number;
  /** Its share of the receive budget, once reserved (at the first large part). */
  reservation: Reservation | undefined;
  readonly #refs: Uint8Array[] = [];
  readonly #clientId: number | undefined;
  /** The reference being filled, and how much of it is. */
  #index = 0;
  #offset = 0;
  /** Reference bytes received so far. */
  #filled = 0;

  /**
   * Decodes a header and allocates its references.
   *
   * @param body The header's body (`c1 07`, the request, the skeleton).
   * @param request The message it answers, or 0 (checked by the caller).
   * @param maxMessageBytes The largest message accepted.
   * @param clientId The client, for errors.
   * @param allocate The memory of a reference (default: fresh).
   * @throws {MessageTooLargeError} If the references take it past `maxMessageBytes`.
   * @throws {ProtocolError} If the skeleton is malformed.
   */
  constructor(
    body: Uint8Array,
    request: number,
    maxMessageBytes: number,
    clientId?: number,
    allocate: (length: number) => Uint8Array = (length) => new Uint8Array(length),
  ) {
    this.request = request;
    this.#clientId = clientId;
    let size = body.byteLength;
    this.value = decodeSkeleton(body.subarray(LONG_PREFIX_BYTES), { clientId }, (length) => {
      // Checked before each allocation: nothing is allocated past the limit.
      size += length;
      if (size > maxMessageBytes) {
        throw new MessageTooLargeError(size, maxMessageBytes, { clientId });
      }
      const buffer = allocate(length);
      this.#refs.push(buffer);
      return buffer;
    });
    this.size = size;
    this.referenceBytes = size - body.byteLength;
  }

  /** Whether every reference is filled. */
  get complete(): boolean {
    return this.#index === this.#refs.length;
  }

  /** Reference bytes received so far. */
  get filled(): number {
    return this.#filled;
  }

  /**
   * Where a large part's data goes: the next `length` bytes of the current reference.
   *
   * @param length The part's data bytes.
   * @returns The memory to read them into.
   * @throws {ProtocolError} If the reference has fewer bytes left.
   */
  target(length: number): Uint8Array {
    const ref = this.#current(length);
    return ref.subarray(this.#offset, this.#offset + length);
  }

  /**
   * A part's data arrived: in place (`data` is a count, read into
   * {@linkcode Assembly.target}) or as bytes to copy.
   *
   * @param data The data, or how many bytes went into the target.
   * @throws {ProtocolError} If the part is empty or too long for its reference.
   */
  part(data: Uint8Array | number): void {
    const length = typeof data === "number" ? data : data.byteLength;
    const ref = this.#current(length);
    if (typeof data !== "number") ref.set(data, this.#offset);
    this.#offset += length;
    this.#filled += length;
    if (this.#offset === ref.byteLength) {
      this.#index++;
      this.#offset = 0;
    }
  }

  /** The reference the next `length` bytes belong to; checks they fit. */
  #current(length: number): Uint8Array {
    const ref = this.#refs[this.#index];
    const left = ref === undefined ? 0 : ref.byteLength - this.#offset;
    if (length === 0 || length > left) {
      throw new ProtocolError(
        `Invalid long message: a part of ${length} bytes, but reference ${this.#index + 1} ` +
          `of ${this.#refs.length} has ${left} left`,
        { clientId: this.#clientId },
      );
    }
    return ref;
  }

  /** A frame that is no part came while the message was incomplete. */
  interrupted(what: string): ProtocolError {
    return new ProtocolError(
      `Invalid long message: ${what} before reference ${this.#index + 1} of ` +
        `${this.#refs.length} arrived`,
      { clientId: this.#clientId },
    );
  }

  /** The message is abandoned (the link dropped): its budget share goes back. */
  discard(): void {
    this.reservation?.release();
    this.reservation = undefined;
  }
}
