/**
 * When a session acknowledges what it received (PROTOCOL.md §8.3): at once
 * after a large message (64 KiB) or when 1 MiB or 1,024 messages are
 * unacknowledged, in front of a pong (a peer that waits for acks asks with
 * a ping), otherwise 0.5 to 1 s after the first unacknowledged one (the
 * protocol allows 2 s). Most acks ride in front of a frame the session
 * sends before then: one socket write for both. The delay is long enough
 * for a round of 10,000 clients to reach its next broadcast, which carries
 * the acks of the replies, instead of one more write per client.
 *
 * @module
 */

import { ackFrame, setAckCount } from "../_wire/control.ts";
import type { Links } from "./links.ts";

/** An ack goes out at once after a message body at least this large. */
const ACK_NOW_BYTES = 64 * 1024;
/** … or when this many bytes … */
export const ACK_BYTES = 1024 * 1024;
/** … or this many messages are unacknowledged; otherwise within 1 to 2 ticks. */
export const ACK_MESSAGES = 1024;
const ACK_TICK_MS = 500;
/**
 * The ack frame, rewritten for each ack of every session of the process:
 * the write queue copies a small frame when it is queued, so none holds it
 * past the call that took it (one frame each cost 300 B per idle session).
 */
const ackScratch = ackFrame(0);

/** One session's acknowledgements. */
export class Acks {
  /** Messages received so far: what the next ack says. */
  received = 0;
  /** The count last acknowledged, and the bytes that came since. */
  #sent = 0;
  #unackedBytes = 0;
  /** The session's links: an ack that no frame carried goes out on the current one. */
  readonly #links: Links;

  /**
   * @param links The session's links.
   */
  constructor(links: Links) {
    this.#links = links;
  }

  /**
   * Writes the ack of every message received so far, if one is due and the
   * link is up (also when a ping came: its pong goes after the ack).
   */
  flush(): void {
    const link = this.#links.current;
    const frame = this.take();
    if (frame !== undefined && link !== undefined && link.queue.error === undefined) {
      link.queue.push([frame]);
    }
  }

  /** Whether messages arrived since the last ack. */
  get due(): boolean {
    return this.received > this.#sent;
  }

  /**
   * Schedules the ack of one more application message (already counted in
   * {@linkcode Acks.received}).
   *
   * @param bytes Its body's size.
   */
  count(bytes: number): void {
    this.#unackedBytes += bytes;
    if (
      bytes >= ACK_NOW_BYTES || this.#unackedBytes >= ACK_BYTES ||
      this.received - this.#sent >= ACK_MESSAGES
    ) {
      this.flush();
      return;
    }
    // One timer for every session of the process: a timer per message would cost more.
    if (Acks.#younger.has(this) || Acks.#older.has(this)) return;
    Acks.#younger.add(this);
    if (Acks.#timer === undefined) {
      Acks.#timer = setInterval(Acks.#tick, ACK_TICK_MS);
      Deno.unrefTimer(Acks.#timer);
    }
  }

  /**
   * The ack of every message received so far, now counted as sent.
   *
   * @returns The frame (valid until the next call on any session: queue it
   * at once), or `undefined` if none is due.
   */
  take(): Uint8Array | undefined {
    Acks.#forget(this);
    if (!this.due) return undefined;
    this.#sent = this.received;
    this.#unackedBytes = 0;
    return setAckCount(ackScratch, this.#sent);
  }

  /** The peer learnt what we received from a resume handshake: that counts as acknowledged. */
  told(): void {
    this.#sent = this.received;
    this.#unackedBytes = 0;
  }

  /** The session ended: no ack is due any more (the process's timer stops when none is). */
  stop(): void {
    Acks.#forget(this);
    Acks.#stopWhenIdle();
  }

  /**
   * Sessions with an ack due, by age: `#younger` since the last tick,
   * `#older` since the one before, flushed at the next tick. Due within 1
   * to 2 ticks of the first unacknowledged message, and O(1) per message.
   */
  static #younger = new Set<Acks>();
  static #older = new Set<Acks>();
  static #timer: ReturnType<typeof setInterval> | undefined;
  static #forget(acks: Acks): void {
    Acks.#younger.delete(acks);
    Acks.#older.delete(acks);
  }
  static #tick = (): void => {
    const due = Acks.#older;
    Acks.#older = Acks.#younger;
    Acks.#younger = due.size === 0 ? due : new Set();
    for (const acks of due) acks.flush();
    Acks.#stopWhenIdle();
  };
  /** Stops the process's timer once no session has an ack due. */
  static #stopWhenIdle(): void {
    if (Acks.#older.size > 0 || Acks.#younger.size > 0 || Acks.#timer === undefined) return;
    clearInterval(Acks.#timer);
    Acks.#timer = undefined;
  }
}
