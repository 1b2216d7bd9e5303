/**
 * The connections in their handshake, and who gets a place among them when
 * they are many: what keeps a flood of silent or slow handshakes, even one
 * renewed as fast as the server turns it away, from locking legitimate
 * clients out. A client says hello at once; a flood does not.
 *
 * - At most `max` connections hold a **place** (they are in their handshake),
 *   and at most `max` more **wait** for one; at most `maxPerAddress` of all of
 *   them come from one address.
 * - A newcomer takes a free place; else the place of the oldest connection
 *   without a hello after `EVICTABLE_AFTER_MS`, of the address holding the
 *   most places; else it waits, for `EVICTABLE_AFTER_MS` at most, for its
 *   hello (a full waiting room gives it the spot of the oldest waiting
 *   connection of the address waiting the most).
 * - A waiting connection that says hello takes the place of the oldest one
 *   without a hello, whatever its age, of the address holding the most: a
 *   hello beats silence. A connection that said hello keeps its place, so a
 *   resume, which proves its token right after, is never pushed out.
 * - Who loses a place or a spot gets a `busy` reject; a newcomer from an
 *   address over its share may only take a place or spot of that address.
 *
 * No I/O here: the caller closes what is evicted or turned away.
 *
 * @module
 */

/** How long a connection keeps its place without a hello, whatever comes after it. */
export const EVICTABLE_AFTER_MS = 500;

/** One connection's place or waiting spot. */
export class PendingPlace {
  /** The peer's address (its host). */
  readonly host: string;
  /** When it was accepted (`performance.now()`). */
  readonly since: number;
  /** Whether it waits for a place (it must say hello within `EVICTABLE_AFTER_MS`). */
  waiting: boolean;
  /** Whether its hello arrived (it then keeps its place). */
  greeted = false;
  readonly #evicted = new AbortController();

  /**
   * Creates a place.
   *
   * @param host The peer's host.
   * @param since When it was accepted.
   * @param waiting Whether it waits for a place.
   */
  constructor(host: string, since: number, waiting: boolean) {
    this.host = host;
    this.since = since;
    this.waiting = waiting;
  }

  /** Aborts when the place (or the spot) was given to another connection. */
  get evicted(): AbortSignal {
    return this.#evicted.signal;
  }

  /**
   * Takes the place away.
   *
   * @param reason The abort reason the handshake's waits reject with.
   */
  evict(reason: Error): void {
    this.#evicted.abort(reason);
  }
}

/** Why a newcomer got no place. */
export type NoPlace = "address" | "full";

/** One tier: places, or waiting spots. */
class Tier {
  readonly max: number;
  /** In order of acceptance: the oldest first. */
  readonly entries = new Set<PendingPlace>();
  readonly byHost = new Map<string, number>();

  constructor(max: number) {
    this.max = max;
  }

  add(place: PendingPlace): void {
    this.entries.add(place);
    this.byHost.set(place.host, (this.byHost.get(place.host) ?? 0) + 1);
  }

  delete(place: PendingPlace): boolean {
    if (!this.entries.delete(place)) return false;
    const left = this.byHost.get(place.host)! - 1;
    if (left > 0) this.byHost.set(place.host, left);
    else this.byHost.delete(place.host);
    return true;
  }

  /**
   * The oldest entry that `may` lose its place, of `host` or else of the host
   * that `holds` the most (places and spots).
   */
  victim(
    may: (place: PendingPlace) => boolean,
    holds: (host: string) => number,
    host?: string,
  ): PendingPlace | undefined {
    let victim: PendingPlace | undefined;
    let most = 0;
    for (const place of this.entries) {
      if (!may(place) || host !== undefined && place.host !== host) continue;
      const held = holds(place.host);
      if (held > most) {
        victim = place; // the oldest of that host: entries are in order of acceptance
        most = held;
      }
    }
    return victim;
  }
}

/** The places of the connections in their handshake; see the module doc. */
export class PendingHandshakes {
  readonly #maxPerAddress: number;
  readonly #places: Tier;
  readonly #waiting: Tier;

  /**
   * Creates the places.
   *
   * @param max How many connections may be in their handshake at once (and wait for a place).
   * @param maxPerAddress How many of them may come from one address.
   * @throws {RangeError} If either is not a positive integer.
   */
  constructor(max: number, maxPerAddress: number) {
    for (
      const [name, value] of [["maxPendingHandshakes", max], [
        "maxPendingPerAddress",
        maxPerAddress,
      ]] as const
    ) {
      if (!Number.isSafeInteger(value) || value < 1) {
        throw new RangeError(`Invalid ${name}: "${value}" is not a positive integer`);
      }
    }
    this.#maxPerAddress = maxPerAddress;
    this.#places = new Tier(max);
    this.#waiting = new Tier(max);
  }

  /** How many connections hold a place. */
  get size(): number {
    return this.#places.entries.size;
  }

  /** How many connections wait for a place. */
  get waiting(): number {
    return this.#waiting.entries.size;
  }

  /**
   * Finds a place (or a waiting spot) for a new connection, evicting one if need be.
   *
   * @param host The newcomer's host.
   * @param now The time (`performance.now()`).
   * @param evicted Called with what was taken away, before the newcomer gets it.
   * @returns The newcomer's place, or why it gets none.
   */
  place(host: string, now: number, evicted: (place: PendingPlace) => void): PendingPlace | NoPlace {
    const own = this.#holds(host) >= this.#maxPerAddress ? host : undefined;
    const stale = (place: PendingPlace) =>
      !place.greeted && now - place.since >= EVICTABLE_AFTER_MS;
    const anyWaiting = () => true;
    if (own === undefined && this.#places.entries.size < this.#places.max) {
      return this.#add(this.#places, host, now, false);
    }
    const victim = this.#places.victim(stale, this.#holds, own);
    if (victim !== undefined) {
      this.remove(victim);
      evicted(victim);
      return this.#add(this.#places, host, now, false);
    }
    if (own === undefined && this.#waiting.entries.size < this.#waiting.max) {
      return this.#add(this.#waiting, host, now, true);
    }
    const waiter = this.#waiting.victim(anyWaiting, this.#holds, own);
    if (waiter === undefined) return own === undefined ? "full" : "address";
    this.remove(waiter);
    evicted(waiter);
    return this.#add(this.#waiting, host, now, true);
  }

  /**
   * The connection's hello arrived: it keeps its place, and a waiting one
   * takes the place of the oldest one without a hello (of the host holding
   * the most).
   *
   * @param place The connection's place.
   * @param evicted Called with the place taken away for it.
   * @returns Whether it holds a place now (`false`: every place said hello; it must go).
   */
  greet(place: PendingPlace, evicted: (place: PendingPlace) => void): boolean {
    place.greeted = true;
    if (!place.waiting) return true;
    if (this.#places.entries.size >= this.#places.max) {
      const victim = this.#places.victim((other) => !other.greeted, this.#holds);
      if (victim === undefined) return false;
      this.remove(victim);
      evicted(victim);
    }
    this.#waiting.delete(place);
    place.waiting = false;
    this.#places.add(place);
    return true;
  }

  /**
   * Frees a place or a spot (its handshake ended); later calls do nothing.
   *
   * @param place The place.
   */
  remove(place: PendingPlace): void {
    if (!this.#places.delete(place)) this.#waiting.delete(place);
  }

  /** Places and spots held by a host. */
  readonly #holds = (host: string): number =>
    (this.#places.byHost.get(host) ?? 0) + (this.#waiting.byHost.get(host) ?? 0);

  #add(tier: Tier, host: string, now: number, waiting: boolean): PendingPlace {
    const place = new PendingPlace(host, now, waiting);
    tier.add(place);
    return place;
  }
}
