/**
 * The send side of a session: every application message sent, numbered
 * 1, 2, 3, … and kept until the peer acknowledges it (PROTOCOL.md §8.2), so
 * that a session that resumes on a new connection sends again exactly what
 * the peer had not received, in order.
 *
 * Memory: retained messages are kept by reference (a broadcast's frame is
 * shared by every client's outbox); small chunks built in transient scratch
 * memory are copied into the shared slabs of `slab.ts`. While `retainBytes` or more are
 * retained, senders wait for room ({@linkcode Outbox.room}): at most
 * `retainBytes` plus one message is held per session (a server's session
 * whose peer is away holds up to twice `retainBytes` instead of waiting:
 * see `sender.ts`). Nothing unacknowledged is ever dropped.
 *
 * A message that lends the caller's memory (a broadcast's tensors) is kept
 * by reference while its sender waits for the acknowledgement. If the peer
 * drops first, the sender stops waiting for it (a dead peer must not stall a
 * round) and {@linkcode Outbox.keep} replaces the reference with a copy,
 * made once per frame and shared by every session that needs it.
 *
 * @module
 */

import { currentSlab, own, ownAt, SLAB_MAX_BODY_BYTES } from "./slab.ts";
import { type Deadline, within } from "../_util/wait.ts";
import { ProtocolError } from "../errors.ts";

/** The default bound of retained bytes per session. */
export const DEFAULT_RETAIN_BYTES = 64 * 1024 * 1024;
/** Transient chunks under this size are copied (`own`); larger ones are never scratch memory. */
const COPY_BYTES = 64 * 1024;

interface Waiter {
  seq: number;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** See the module doc. */
export class Outbox {
  /** Application messages sent so far: the number of the latest. */
  sent = 0;
  /** The peer acknowledged messages 1 … `acked`. */
  acked = 0;
  /** The frames of messages `acked + 1` … `sent`, in order. */
  /** A frame's chunks, or, for a small frame copied into a slab, that slab. */
  #frames: (readonly Uint8Array[] | Uint8Array)[] = [];
  /** Where a frame starts in its slab (−1: `#frames` holds its chunks). */
  #offsets: number[] = [];
  #sizes: number[] = [];
  #head = 0;
  #bytes = 0;
  readonly #limit: number;
  #waiters: Waiter[] = [];
  /** Wakes every caller waiting for room. */
  #roomWaiters: (() => void)[] = [];
  #error: Error | undefined;

  /**
   * Creates an empty outbox.
   *
   * @param retainBytes Bytes retained at which senders wait for room.
   */
  constructor(retainBytes: number = DEFAULT_RETAIN_BYTES) {
    this.#limit = retainBytes;
  }

  /** Bytes retained, frame headers included. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Bytes of unacknowledged messages at which sending waits (`retainBytes`). */
  get limit(): number {
    return this.#limit;
  }

  /** Whether senders should wait for room. */
  get full(): boolean {
    return this.#bytes >= this.#limit;
  }

  /** Messages sent and not yet acknowledged. */
  get unacked(): number {
    return this.sent - this.acked;
  }

  /** Why the session ended, or `undefined`. */
  get error(): Error | undefined {
    return this.#error;
  }

  /**
   * Numbers and retains one message.
   *
   * @param chunks Its frame, header included.
   * @param transient Whether small chunks are scratch memory to copy.
   * @returns Its number.
   * @throws {Error} The session's error if it ended.
   */
  add(chunks: readonly Uint8Array[], transient: boolean): number {
    if (this.#error !== undefined) throw this.#error;
    let size = 0;
    for (const chunk of chunks) size += chunk.byteLength;
    if (transient && chunks.length === 1 && size <= SLAB_MAX_BODY_BYTES) {
      // The common small message: copied into the shared slab, no view made.
      const at = ownAt(chunks[0]);
      this.#frames.push(currentSlab());
      this.#offsets.push(at);
    } else {
      this.#frames.push(
        transient ? chunks.map((c) => c.byteLength < COPY_BYTES ? own(c) : c) : chunks,
      );
      this.#offsets.push(-1);
    }
    this.#sizes.push(size);
    this.#bytes += size;
    return ++this.sent;
  }

  /**
   * Records the peer's acknowledgement of messages 1 … `count`.
   *
   * @param count The peer's cumulative count.
   * @param clientId The client, for errors.
   * @throws {ProtocolError} If `count` exceeds the messages sent.
   */
  ack(count: number, clientId: number | undefined): void {
    if (count > this.sent) {
      throw new ProtocolError(
        `Invalid acknowledgement: "${count}" messages, but ${this.sent} were sent`,
        { clientId },
      );
    }
    if (count <= this.acked) return;
    while (this.acked < count) {
      this.#bytes -= this.#sizes[this.#head];
      this.#frames[this.#head] = EMPTY;
      this.#head++;
      this.acked++;
    }
    if (this.#head > 1024 && this.#head * 2 > this.#frames.length) {
      this.#frames.splice(0, this.#head);
      this.#offsets.splice(0, this.#head);
      this.#sizes.splice(0, this.#head);
      this.#head = 0;
    }
    let done = 0;
    while (done < this.#waiters.length && this.#waiters[done].seq <= count) {
      this.#waiters[done++].resolve();
    }
    if (done > 0) this.#waiters.splice(0, done);
    this.#wakeRoom();
  }

  /**
   * The frames the peer has not received, to send again on a new connection.
   *
   * @param received How many messages the peer says it received.
   * @param clientId The client, for errors.
   * @returns The frames of messages `received + 1` … `sent`, in order.
   * @throws {ProtocolError} If `received` exceeds the messages sent.
   */
  resend(received: number, clientId: number | undefined): (readonly Uint8Array[])[] {
    this.ack(received, clientId);
    const frames: (readonly Uint8Array[])[] = [];
    for (let i = this.#head; i < this.#frames.length; i++) {
      const frame = this.#frames[i];
      const at = this.#offsets[i];
      frames.push(
        at < 0 ? frame as readonly Uint8Array[] : [
          (frame as Uint8Array).subarray(at, at + this.#sizes[i]),
        ],
      );
    }
    return frames;
  }

  /**
   * Makes message `seq`, if still retained, hold memory of its own instead of
   * the chunks it was given (which lend the sender's memory): one copy of the
   * whole frame, shared through `copies` with every session given the same
   * frame. The sender may then change its memory.
   *
   * @param seq The message's number.
   * @param copies Copies made so far, by the chunks they copy.
   */
  keep(seq: number, copies: WeakMap<readonly Uint8Array[], readonly Uint8Array[]>): void {
    if (seq <= this.acked || seq > this.sent) return;
    const i = this.#head + (seq - this.acked - 1);
    if (this.#offsets[i] >= 0) return; // already in a slab
    const chunks = this.#frames[i] as readonly Uint8Array[];
    let copy = copies.get(chunks);
    if (copy === undefined) {
      const whole = new Uint8Array(this.#sizes[i]);
      let at = 0;
      for (const chunk of chunks) {
        whole.set(chunk, at);
        at += chunk.byteLength;
      }
      copy = [whole];
      copies.set(chunks, copy);
    }
    this.#frames[i] = copy;
  }

  /**
   * Waits until message `seq` is acknowledged.
   *
   * @param seq Its number.
   * @param deadline The caller's deadline.
   * @returns Resolves once acknowledged.
   * @throws {Error} The session's error if it ends first, or the deadline's.
   */
  async delivered(seq: number, deadline: Deadline): Promise<void> {
    if (this.acked >= seq) return;
    if (this.#error !== undefined) throw this.#error;
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    let i = this.#waiters.length;
    while (i > 0 && this.#waiters[i - 1].seq > seq) i--;
    const waiter = { seq, resolve, reject };
    this.#waiters.splice(i, 0, waiter);
    try {
      await within(promise, deadline);
    } finally {
      const at = this.#waiters.indexOf(waiter);
      if (at >= 0) this.#waiters.splice(at, 1);
    }
  }

  /**
   * Waits while the outbox is full.
   *
   * @param deadline The caller's deadline.
   * @returns Resolves when there is room.
   * @throws {Error} The session's error if it ends first, or the deadline's.
   */
  async room(deadline: Deadline): Promise<void> {
    while (this.full) {
      if (this.#error !== undefined) throw this.#error;
      const { promise, resolve } = Promise.withResolvers<void>();
      this.#roomWaiters.push(resolve);
      try {
        await within(promise, deadline);
      } finally {
        const at = this.#roomWaiters.indexOf(resolve);
        if (at >= 0) this.#roomWaiters.splice(at, 1);
      }
    }
    if (this.#error !== undefined) throw this.#error;
  }

  #wakeRoom(): void {
    if (this.#roomWaiters.length === 0) return;
    const waiters = this.#roomWaiters;
    this.#roomWaiters = [];
    for (const wake of waiters) wake();
  }

  /**
   * Ends the session: waiting callers get `error`, nothing more is added.
   *
   * @param error Why.
   */
  fail(error: Error): void {
    this.#error ??= error;
    for (const waiter of this.#waiters) waiter.reject(error);
    this.#waiters = [];
    this.#frames = [];
    this.#offsets = [];
    this.#sizes = [];
    this.#head = 0;
    this.#bytes = 0;
    this.#wakeRoom();
  }
}

const EMPTY: readonly Uint8Array[] = Object.freeze([]);
