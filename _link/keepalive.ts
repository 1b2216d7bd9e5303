/**
 * Liveness of a connection: pings, their round trip, and the verdict on a
 * peer that went silent.
 *
 * Each side pings when it has written nothing for a while (the write
 * queue's idle callback) and answers every ping with a pong, so a live peer
 * is never silent for long, even while its application computes for hours.
 * A peer from which no byte arrived for `idleTimeout` ms (a vanished machine,
 * a stopped process, a proxy that stopped forwarding) is declared dead.
 *
 * @module
 */

import { IdleClock, Watch, type WatchOwner } from "./idle_clock.ts";

/** The default heartbeat interval: below the idle cut-offs of load balancers and NATs. */
export const DEFAULT_HEARTBEAT_MS = 15_000;
/** The default time without a byte from the peer after which it is declared dead. */
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;

/** Who is told that the peer was silent too long. */
export interface SilenceListener {
  /** The peer was silent for the idle timeout (called once). */
  onSilent(): void;
}

/** Tracks what was heard from the peer and the ping under way. */
export class Keepalive implements WatchOwner {
  /** The last ping's round trip in ms, or `undefined` before the first pong. */
  rtt: number | undefined;
  #lastHeard = performance.now();
  #ping: Uint8Array | undefined;
  #pingSent = 0;
  #pings = 0;
  /** On the process's clock for `idleTimeout` while listening (undefined: never judged, or stopped). */
  #watch: Watch | undefined;
  #clock: IdleClock | undefined;
  /** While above 0, we are not reading (TCP pushes back on the peer): silence proves nothing. */
  #paused = 0;
  readonly #listener: SilenceListener;

  /**
   * Starts watching.
   *
   * @param idleTimeout Milliseconds of silence after which the listener is told (0: never).
   * @param listener Told once the peer was silent too long.
   */
  constructor(idleTimeout: number, listener: SilenceListener) {
    this.#listener = listener;
    if (idleTimeout > 0) {
      // One timer for every connection of this period (`idle_clock.ts`).
      this.#clock = IdleClock.of(idleTimeout);
      this.#watch = new Watch(this);
      this.#clock.touch(this.#watch, this.#lastHeard);
    }
  }

  /** The idle clock's call: the peer was silent for the idle timeout. */
  due(): void {
    this.#listener.onSilent();
  }

  /** Records that bytes arrived. */
  heard(): void {
    const now = this.#lastHeard = performance.now();
    if (this.#watch !== undefined && this.#paused === 0) this.#clock!.touch(this.#watch, now);
  }

  /** Milliseconds since the last byte from the peer (0 while reading is paused). */
  get silentFor(): number {
    return this.#paused > 0 ? 0 : performance.now() - this.#lastHeard;
  }

  /**
   * Stops judging silence while reading is paused (a full inbox, a wait for
   * the receive budget): the peer cannot be heard then, however alive it is.
   * Each call is matched by a {@linkcode Keepalive.resume}.
   */
  pause(): void {
    if (this.#paused++ === 0 && this.#watch !== undefined) this.#clock!.remove(this.#watch);
  }

  /**
   * Waits for `promise` with the silence clock stopped.
   *
   * @param promise What reading waits for.
   * @returns What it resolves to.
   */
  async during<T>(promise: Promise<T>): Promise<T> {
    this.pause();
    try {
      return await promise;
    } finally {
      this.resume();
    }
  }

  /** Judges silence again, counting it from now. */
  resume(): void {
    this.#paused--;
    this.heard();
  }

  /**
   * The payload of a new ping. A ping is sent even while an earlier one
   * awaits its pong (which may be stuck behind the peer's own writes): the
   * pings are what the peer hears of us. Only the latest one is timed.
   *
   * @returns 8 bytes to send in a ping.
   */
  nextPing(): Uint8Array {
    const payload = new Uint8Array(8);
    new DataView(payload.buffer).setFloat64(0, ++this.#pings);
    this.#ping = payload;
    this.#pingSent = performance.now();
    return payload;
  }

  /**
   * Records a pong; one that answers the ping under way sets `rtt`.
   *
   * @param payload The pong's 8 bytes.
   */
  pong(payload: Uint8Array): void {
    const ping = this.#ping;
    if (ping === undefined || payload.byteLength !== 8) return;
    for (let i = 0; i < 8; i++) if (ping[i] !== payload[i]) return;
    this.rtt = performance.now() - this.#pingSent;
    this.#ping = undefined;
  }

  /** Stops judging silence, for good. */
  stop(): void {
    if (this.#watch !== undefined) this.#clock!.remove(this.#watch);
    this.#watch = undefined;
  }
}
