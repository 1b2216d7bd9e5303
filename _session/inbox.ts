/**
 * The read side's queue: messages received from one peer and not yet taken,
 * in order, with the one listener told of every arrival and of the end.
 *
 * The inbox is full at 64 MiB or 65,536 messages; the reader then waits in
 * {@linkcode Inbox.space} and TCP pushes back on the peer. A message's
 * receive-budget reservation travels with it and is released when it is
 * taken.
 *
 * @module
 */

import type { Reservation } from "./budget.ts";
import { type Deadline, NO_DEADLINE, Notifier } from "../_util/wait.ts";

/** A message in an inbox. */
export interface Arrival {
  /** The decoded value. */
  readonly value: unknown;
  /** Increases across all inboxes of the process, in order of arrival. */
  readonly seq: number;
  /** The size of the frame body it came in. */
  readonly bytes: number;
  /**
   * Which of our messages it answers: 0 for an unsolicited message (a plain
   * frame); k ≥ 1 for a reply to the k-th application message we sent the
   * peer on this session.
   */
  readonly replyTo: number;
  /** The bytes of the receive budget it held when it arrived (0 for none). */
  readonly reserved: number;
  /** What it holds of the receive budget, released when it is taken. */
  reservation: Reservation | undefined;
}

/** Limits of an {@linkcode Inbox}. */
export interface InboxLimits {
  /** Bytes of bodies at which the inbox is full (default 64 MiB). */
  maxBytes?: number;
  /** Messages at which the inbox is full (default 65,536). */
  maxMessages?: number;
}

let nextSeq = 0;

/** See the module doc. */
export class Inbox {
  readonly #items: (Arrival | undefined)[] = [];
  #head = 0;
  #bytes = 0;
  readonly #maxBytes: number;
  readonly #maxMessages: number;
  #ended: Error | undefined;
  /** The one consumer watching this inbox. */
  #listener: (() => void) | undefined;
  /** Wakes the reader waiting for space. */
  readonly #space = new Notifier();
  /** Wakes {@linkcode Inbox.next}. */
  readonly #arrivals = new Notifier();

  /**
   * Creates an empty inbox.
   *
   * @param limits When it is full.
   */
  constructor(limits?: InboxLimits) {
    this.#maxBytes = limits?.maxBytes ?? 64 * 1024 * 1024;
    this.#maxMessages = limits?.maxMessages ?? 65_536;
  }

  /** How many messages wait. */
  get size(): number {
    return this.#items.length - this.#head;
  }

  /** Whether the reader should wait before adding more. */
  get full(): boolean {
    return this.#bytes >= this.#maxBytes || this.size >= this.#maxMessages;
  }

  /** Why the peer will send no more (it left, broke the protocol, or we closed), or `undefined`. */
  get ended(): Error | undefined {
    return this.#ended;
  }

  /**
   * Adds a received message and tells the listener.
   *
   * @param value The decoded value.
   * @param bytes Its body size.
   * @param reservation What it holds of the receive budget.
   * @param replyTo The number of our message it replies to (0: unsolicited).
   */
  push(value: unknown, bytes: number, reservation?: Reservation, replyTo = 0): void {
    this.#items.push({
      value,
      seq: nextSeq++,
      bytes,
      replyTo,
      reserved: reservation?.bytes ?? 0,
      reservation,
    });
    this.#bytes += bytes;
    this.#changed();
  }

  /** The next message without taking it, or `undefined`. */
  peek(): Arrival | undefined {
    return this.#items[this.#head];
  }

  /**
   * Takes the next message and releases its reservation.
   *
   * @returns The message, or `undefined` if none waits.
   */
  take(): Arrival | undefined {
    const arrival = this.#items[this.#head];
    if (arrival === undefined) return undefined;
    this.#items[this.#head++] = undefined;
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items.splice(0, this.#head);
      this.#head = 0;
    }
    this.#bytes -= arrival.bytes;
    arrival.reservation?.release();
    arrival.reservation = undefined;
    this.#space.notify();
    return arrival;
  }

  /**
   * Puts back a message taken by {@linkcode Inbox.take}, at the front, for a
   * receive that failed after taking it.
   *
   * @param arrival The message, as taken.
   * @param reservation What it holds of the receive budget again.
   */
  putBack(arrival: Arrival, reservation?: Reservation): void {
    arrival.reservation = reservation;
    if (this.#head > 0) this.#items[--this.#head] = arrival;
    else this.#items.unshift(arrival);
    this.#bytes += arrival.bytes;
  }

  /**
   * Records that no more messages will come, and tells the listener.
   *
   * @param reason Why.
   */
  end(reason: Error): void {
    this.#ended ??= reason;
    this.#space.notify();
    this.#changed();
  }

  /**
   * Registers the one consumer told of every arrival and of the end.
   *
   * @param listener The function.
   * @returns A function that unregisters it.
   * @throws {Deno.errors.Busy} If another consumer is registered.
   */
  listen(listener: () => void): () => void {
    if (this.#listener !== undefined) {
      throw new Deno.errors.Busy("Concurrent receive: this connection is already being read from");
    }
    this.#listener = listener;
    return () => {
      if (this.#listener === listener) this.#listener = undefined;
    };
  }

  /**
   * Waits while the reader must not add more (the reader's backpressure).
   *
   * @param mustWait Whether to wait, given whether the inbox is full; checked on every change.
   * @returns Resolves when `mustWait` says no or the inbox ended.
   */
  async space(mustWait: (full: boolean) => boolean): Promise<void> {
    while (this.#ended === undefined && mustWait(this.full)) {
      await this.#space.changed(NO_DEADLINE);
    }
  }

  /** Wakes a reader waiting in {@linkcode Inbox.space} (when limits no longer apply). */
  wakeReader(): void {
    this.#space.notify();
  }

  /**
   * Waits for and takes the next message.
   *
   * @param deadline The caller's deadline.
   * @returns The value.
   * @throws {Deno.errors.Busy} If another consumer is waiting.
   * @throws {Error} The end reason once nothing is left, or the deadline's error.
   */
  async next(deadline: Deadline): Promise<unknown> {
    const first = this.take();
    if (first !== undefined) return first.value;
    if (this.#ended !== undefined) throw this.#ended;
    const stop = this.listen(() => this.#arrivals.notify());
    try {
      while (true) {
        await this.#arrivals.changed(deadline);
        const arrival = this.take();
        if (arrival !== undefined) return arrival.value;
        if (this.#ended !== undefined) throw this.#ended;
      }
    } finally {
      stop();
    }
  }

  #changed(): void {
    this.#listener?.();
  }
}

/**
 * The late replies of one session that were dropped (on arrival, or when a
 * receiving call met them first): all of them, and those dropped since the
 * last message sent to the peer, which are late for the round it opened.
 */
export class LateReplies {
  /** All late replies dropped. */
  total = 0;
  /** The number of the last message sent when {@linkcode LateReplies.sinceLatest} were dropped. */
  latest = 0;
  /** How many were dropped while message `latest` was the last one sent. */
  sinceLatest = 0;

  /**
   * Counts a late reply dropped while message `latest` was the last one sent.
   *
   * @param latest The number of the last message sent to the peer.
   */
  count(latest: number): void {
    this.total++;
    if (this.latest !== latest) {
      this.latest = latest;
      this.sinceLatest = 0;
    }
    this.sinceLatest++;
  }
}
