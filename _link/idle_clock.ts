/**
 * One timer for every connection: {@linkcode IdleClock} keeps the watched
 * connections in a list ordered by when each was last moved to its end,
 * and a single interval per idle period looks only at the head of the
 * list: the connections whose period has passed, and no other. A server
 * with 10,000 connections has two such timers (silence and write idleness),
 * not 20,000, and each tick costs O(1) plus one step per connection due.
 *
 * A touch only records the time, and moves the connection to the end once
 * a tick's length (`slack`) has passed since its last move (so a busy
 * connection costs a comparison per read or write, not a list move). A
 * watch is thus never more than `slack` older than its last touch in the
 * list's order, and it comes due between `ms` and `ms + 2 × tick` after its
 * last touch: never early.
 *
 * Connections that joined together come due together. A tick tells at most
 * {@linkcode DUE_PER_TURN} of them and leaves the rest to the next turns of
 * the event loop, so that the pings of 10,000 connections go out in bursts
 * whose writes finish (and whose memory dies young) before the next burst:
 * all in one turn held every write's promise at once, and the heap grew by
 * 50 MB at each heartbeat.
 *
 * @module
 */

/** What a {@linkcode Watch} tells when it is due: a method, so that a connection holds no closure for it. */
export interface WatchOwner {
  /** Not touched for the clock's period (the watch has left the list). */
  due(): void;
}

/** A connection watched by an {@linkcode IdleClock}. */
export class Watch {
  /** When it was last touched (`performance.now()`). */
  at = 0;
  /** When it was last moved to the end of its clock's list. */
  movedAt = 0;
  /** Neighbours in its clock's list, while it is in one. */
  prev: Watch | undefined;
  next: Watch | undefined;
  /** The clock it is on, while it is on one. */
  clock: IdleClock | undefined;
  /** Told when it was not touched for its clock's period. */
  readonly owner: WatchOwner;

  /**
   * @param owner Told once the period passed without a touch.
   */
  constructor(owner: WatchOwner) {
    this.owner = owner;
  }
}

/** The clocks of the process, by period: every connection with the same period shares one. */
const clocks = new Map<number, IdleClock>();
/** The most watches one turn of the event loop tells that they are due. */
export const DUE_PER_TURN = 256;

/** See the module doc. */
export class IdleClock {
  /** The period, in ms. */
  readonly ms: number;
  readonly #tickMs: number;
  #head: Watch | undefined;
  #tail: Watch | undefined;
  #size = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  /** The latest tick's limit: watches moved before it are due. */
  #limit = -Infinity;
  /** The next turn's telling, while more are due than one turn tells. */
  #more: ReturnType<typeof setTimeout> | undefined;

  /**
   * The process's clock for a period, made at first use.
   *
   * @param ms The period (more than 0).
   * @returns The clock.
   */
  static of(ms: number): IdleClock {
    let clock = clocks.get(ms);
    if (clock === undefined) clocks.set(ms, clock = new IdleClock(ms));
    return clock;
  }

  /**
   * @param ms The period.
   */
  private constructor(ms: number) {
    this.ms = ms;
    // A due connection is seen between `ms` and `ms + tick` after its last touch.
    this.#tickMs = Math.max(10, Math.min(ms / 4, 5_000));
  }

  /** How many connections are on the clock. */
  get size(): number {
    return this.#size;
  }

  /**
   * Puts `watch` at the end of the list, touched now (moving it if it is on a clock).
   *
   * @param watch The connection.
   * @param now The time, if the caller has it.
   */
  touch(watch: Watch, now: number = performance.now()): void {
    watch.at = now;
    if (watch.clock === this) {
      // At the end already: moving it is free. Moved within a tick: it may wait.
      if (this.#tail === watch) watch.movedAt = now;
      if (this.#tail === watch || now - watch.movedAt < this.#tickMs) return;
    }
    watch.movedAt = now;
    if (watch.clock !== undefined) watch.clock.remove(watch);
    watch.clock = this;
    watch.prev = this.#tail;
    if (this.#tail === undefined) this.#head = watch;
    else this.#tail.next = watch;
    this.#tail = watch;
    if (this.#size++ === 0) this.#start();
  }

  /**
   * Takes `watch` off the clock (a no-op if it is not on it).
   *
   * @param watch The connection.
   */
  remove(watch: Watch): void {
    if (watch.clock !== this) return;
    if (watch.prev === undefined) this.#head = watch.next;
    else watch.prev.next = watch.next;
    if (watch.next === undefined) this.#tail = watch.prev;
    else watch.next.prev = watch.prev;
    watch.prev = watch.next = watch.clock = undefined;
    if (--this.#size === 0) this.#stop();
  }

  /** Calls `due` of every connection not touched for the period, oldest first. */
  #tick(): void {
    // Moved before `limit`, so touched (at most a tick after that move) a period ago or more.
    this.#limit = performance.now() - this.ms - this.#tickMs;
    if (this.#more === undefined) this.#tell();
  }

  /** Tells up to {@linkcode DUE_PER_TURN} due watches; the next turn tells more. */
  #tell(): void {
    const limit = this.#limit;
    // Only those taken off now: one that a `due` puts back was moved after
    // `limit` and is not seen again for this tick.
    let watch = this.#head;
    const due: Watch[] = [];
    while (watch !== undefined && watch.movedAt <= limit && due.length < DUE_PER_TURN) {
      due.push(watch);
      watch = watch.next;
    }
    for (const w of due) {
      // An earlier `due` may have touched it (or taken it off) meanwhile.
      if (w.clock !== this || w.movedAt > limit) continue;
      this.remove(w);
      w.owner.due();
    }
    const head = this.#head;
    if (head === undefined || head.movedAt > limit || this.#timer === undefined) return;
    this.#more = setTimeout(() => {
      this.#more = undefined;
      this.#tell();
    }, 0);
    Deno.unrefTimer(this.#more);
  }

  #start(): void {
    this.#timer = setInterval(() => this.#tick(), this.#tickMs);
    Deno.unrefTimer(this.#timer);
  }

  #stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    clearTimeout(this.#more);
    this.#more = undefined;
  }
}
