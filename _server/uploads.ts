/**
 * `Server.uploads()`: `count` answers from each listed client, yielded in
 * order of arrival across the clients, one at a time, so that a consumer
 * folds them as they come (the receive budget stays on, bounding what
 * waits). With `min`, a failing client is skipped while `min` clients can
 * still deliver all `count`; once `min` did, it goes on for `grace` ms and
 * ends; at the deadline it ends normally if `min` did.
 *
 * @module
 */

import { ArrivalHeap } from "./arrival_heap.ts";
import {
  checkQuorum,
  Grace,
  isDeadline,
  type LateHandler,
  peekAnswer,
  type Source,
  sourcesOf,
  watchInboxes,
} from "./answers.ts";
import type { Upload, UploadsOptions } from "../types.ts";

/**
 * Yields the uploads (see the module doc).
 *
 * @param connections The server's sessions by client id.
 * @param list The validated ids.
 * @param options How many from each, the quorum, cancellation and time limit.
 * @param onLate Told of each late reply dropped.
 * @returns The uploads.
 * @throws {TypeError} If `min` or `grace` is not a number.
 * @throws {RangeError} If `count` is not a positive integer or Infinity, `min` or `grace` is out
 * of range, or `min` comes with an infinite `count`.
 */
export async function* uploadsFrom(
  connections: ReadonlyMap<number, Source>,
  list: readonly number[],
  options: UploadsOptions | undefined,
  onLate: LateHandler,
): AsyncGenerator<Upload> {
  const count = uploadsCount(options);
  const { required, grace, given } = checkQuorum(options, list.length, "uploads");
  if (given && count === Infinity) {
    throw new RangeError(`Invalid min for uploads: a quorum needs a finite count, not "Infinity"`);
  }
  const state = new Owed(sourcesOf(connections, list), list, count, required, onLate);
  using watch = watchInboxes(state.sources, list, "uploads", options, () => state.ids(), true);
  using graceTimer = new Grace();
  for (const id of list) state.consider(id);
  while (state.owing && !graceTimer.over) {
    const id = state.ready.pop();
    if (id === undefined) {
      let changed: number[];
      try {
        changed = await watch.changed();
      } catch (error) {
        if (isDeadline(error, options) && state.complete >= required) return;
        throw error;
      }
      for (const changedId of changed) state.consider(changedId);
      continue;
    }
    const source = state.sources.get(id)!;
    const head = source.inbox.peek();
    // The server may have sent this client another message since: then it is late.
    if (peekAnswer(id, source, onLate) !== head) {
      state.consider(id);
      continue;
    }
    if (state.deliver(id)) graceTimer.start(grace, watch.wake);
    yield { id, value: source.inbox.take()!.value };
    state.consider(id); // its next message, or its disconnect, after the value is delivered
  }
}

/**
 * The count of `uploads()`: how many from each client (default 1).
 *
 * @param options The options.
 * @returns The count.
 * @throws {RangeError} If it is not a positive integer or Infinity.
 */
export function uploadsCount(options: UploadsOptions | undefined): number {
  const count = options?.count ?? 1;
  if (!(count === Infinity || Number.isSafeInteger(count) && count > 0)) {
    throw new RangeError(`Invalid count: "${count}" is not a positive integer or Infinity`);
  }
  return count;
}

/** What each client still owes, and who has an answer ready. */
class Owed {
  readonly sources: ReadonlyMap<number, Source>;
  /** Clients with a queued answer, ordered by the arrival of their oldest one. */
  readonly ready: ArrivalHeap = new ArrivalHeap();
  /** Clients that delivered all `count`. */
  complete = 0;
  readonly #owed: Map<number, number>;
  readonly #count: number;
  readonly #required: number;
  readonly #onLate: LateHandler;
  readonly #failures: Error[] = [];

  constructor(
    sources: ReadonlyMap<number, Source>,
    list: readonly number[],
    count: number,
    required: number,
    onLate: LateHandler,
  ) {
    this.sources = sources;
    this.#owed = new Map(list.map((id) => [id, count]));
    this.#count = count;
    this.#required = required;
    this.#onLate = onLate;
  }

  /** Whether a client still owes uploads. */
  get owing(): boolean {
    return this.#owed.size > 0;
  }

  /** The clients still owing, for a timeout's message. */
  ids(): number[] {
    return [...this.#owed.keys()];
  }

  /**
   * Looks at a client's inbox: a ready answer, or its end.
   *
   * @throws {Error} The first failure, once the quorum cannot be reached.
   */
  consider(id: number): void {
    if (!this.#owed.has(id) || this.ready.has(id)) return;
    const source = this.sources.get(id)!;
    const head = peekAnswer(id, source, this.#onLate);
    if (head !== undefined) this.ready.push(id, head.seq);
    else if (source.inbox.ended !== undefined) {
      this.#owed.delete(id);
      if (this.#count === Infinity) return; // its stream just ends
      this.#failures.push(source.inbox.ended);
      if (this.complete + this.#owed.size < this.#required) throw this.#failures[0];
    }
  }

  /**
   * Counts one upload of `id` as delivered.
   *
   * @returns Whether the quorum was just reached with clients still owing (the grace starts).
   */
  deliver(id: number): boolean {
    const left = this.#owed.get(id)! - 1;
    if (left > 0) {
      this.#owed.set(id, left);
      return false;
    }
    this.#owed.delete(id);
    return ++this.complete === this.#required && this.#owed.size > 0;
  }
}
