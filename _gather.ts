/**
 * Receiving from many clients at once: the machinery behind
 * `Server.gather()`, `gatherSettled()` and `uploads()`.
 *
 * A call becomes the one consumer of its clients' inboxes (so two calls
 * never split one client's messages), is told by each inbox of every arrival
 * and end, and takes messages as they come.
 *
 * @module
 */

import { ArrivalHeap } from "./_arrival_heap.ts";
import type { Connection } from "./_connection.ts";
import type { Arrival } from "./_inbox.ts";
import { Notifier, startDeadline, type WaitOptions } from "./_wait.ts";
import { TimeoutError } from "./errors.ts";
import type { GatherResult, Upload } from "./server.ts";

/**
 * Collects one message per client, for `gather()` and `gatherSettled()`. With `strict`, the first client that
 * fails or the timeout fails the call and puts back what was taken;
 * otherwise failures are recorded and the call settles.
 */
export async function gatherFrom(
  connections: readonly Connection[],
  list: readonly number[],
  what: string,
  strict: boolean,
  options: WaitOptions | undefined,
): Promise<GatherResult> {
  const pending = new Set(list);
  // A gather holds every answer until it returns, so throttling its reads
  // with the receive budget would slow it without saving memory.
  using watch = watchInboxes(connections, list, what, options, () => [...pending], false);
  // Messages are taken as they arrive (freeing the receive budget for the
  // others) and put back at the front of their queues if the gather fails.
  const taken = new Map<number, Arrival>();
  const failed = new Map<number, Error>();
  const collect = (id: number): void => {
    const { inbox } = connections[id];
    if (!pending.has(id)) return;
    const arrival = inbox.take();
    if (arrival !== undefined) {
      taken.set(id, arrival);
      pending.delete(id);
    } else if (inbox.ended !== undefined) {
      if (strict) throw inbox.ended;
      failed.set(id, inbox.ended);
      pending.delete(id);
    }
  };
  try {
    for (const id of list) collect(id);
    while (pending.size > 0) {
      for (const id of await watch.changed()) collect(id);
    }
  } catch (error) {
    if (strict || !(error instanceof TimeoutError)) {
      for (const [id, arrival] of taken) {
        connections[id].inbox.putBack(
          arrival,
          arrival.reserved > 0
            ? connections[id].meter.budget?.force(arrival.reserved, connections[id].meter)
            : undefined,
        );
      }
      throw error;
    }
    for (const id of pending) failed.set(id, error);
  }
  const received = new Map<number, unknown>();
  for (const id of list) {
    const arrival = taken.get(id);
    if (arrival !== undefined) received.set(id, arrival.value);
  }
  return { received, failed };
}

/**
 * Becomes the one consumer of the given clients' inboxes (so two calls
 * never split one client's messages); `changed()` returns the ids whose
 * inbox changed since the last call. Disposing it lets them go and
 * restores their receive budget.
 */
export function watchInboxes(
  connections: readonly Connection[],
  ids: readonly number[],
  what: string,
  options: WaitOptions | undefined,
  waitingFor: () => number[],
  metered: boolean,
): { changed(): Promise<number[]> } & Disposable {
  const deadline = startDeadline(options, () => {
    const clientIds = waitingFor();
    const name = `${what[0].toUpperCase()}${what.slice(1)}`;
    return { what: name, detail: `waiting for clients [${clientIds.join(", ")}]`, clientIds };
  });
  const stops: (() => void)[] = [];
  const release = () => {
    for (const stop of stops) stop();
    for (let i = 0; i < stops.length; i++) connections[ids[i]].meter.metered = true;
    deadline[Symbol.dispose]();
  };
  let changed: number[] = [];
  const notifier = new Notifier();
  for (const id of ids) {
    try {
      stops.push(connections[id].inbox.listen(() => {
        changed.push(id);
        notifier.notify();
      }));
    } catch {
      release();
      throw new Deno.errors.Busy(
        `Client "${id}" is already being received from: ${what} must wait`,
      );
    }
  }
  for (const id of ids) connections[id].meter.metered = metered;
  return {
    async changed(): Promise<number[]> {
      if (changed.length === 0) await notifier.changed(deadline);
      const ids = changed;
      changed = [];
      return ids;
    },
    [Symbol.dispose]: release,
  };
}

/**
 * Yields `count` messages from each listed client in order of arrival, for `uploads()`.
 *
 * @param connections The server's connections by id.
 * @param list The validated ids.
 * @param count How many from each.
 * @param options Cancellation and time limit.
 * @returns The uploads.
 */
export async function* uploadsFrom(
  connections: readonly Connection[],
  list: readonly number[],
  count: number,
  options: WaitOptions | undefined,
): AsyncGenerator<Upload> {
  const owed = new Map(list.map((id) => [id, count]));
  // The budget stays on: uploads() is for folding without holding them all.
  using watch = watchInboxes(connections, list, "uploads", options, () => [...owed.keys()], true);
  // Clients with a queued message, ordered by the arrival of their oldest one.
  const ready = new ArrivalHeap();
  const consider = (id: number): void => {
    if (!owed.has(id) || ready.has(id)) return;
    const { inbox } = connections[id];
    const head = inbox.peek();
    if (head !== undefined) ready.push(id, head.seq);
    else if (inbox.ended !== undefined) {
      if (count !== Infinity) throw inbox.ended;
      owed.delete(id);
    }
  };
  for (const id of list) consider(id);
  while (owed.size > 0) {
    const id = ready.pop();
    if (id === undefined) {
      for (const changed of await watch.changed()) consider(changed);
      continue;
    }
    const left = owed.get(id)! - 1;
    if (left === 0) owed.delete(id);
    else owed.set(id, left);
    yield { id, value: connections[id].inbox.take()!.value };
    consider(id); // its next message, or its disconnect, after the value is delivered
  }
}

/**
 * Validates a list of client ids.
 *
 * @param ids The ids given.
 * @param clients How many clients the server serves.
 * @param what The call, for messages.
 * @returns The ids as an array.
 * @throws {TypeError} If it is not an iterable of integers, or lists one twice.
 * @throws {RangeError} If an id is not from 0 to `clients − 1`.
 */
export function checkIds(ids: Iterable<number>, clients: number, what: string): number[] {
  if (typeof ids !== "object" || ids === null || typeof ids[Symbol.iterator] !== "function") {
    throw new TypeError(`Invalid ids for ${what}: expected an iterable of client ids`);
  }
  const list = [...ids];
  const seen = new Set<number>();
  for (const id of list) {
    if (typeof id !== "number" || !Number.isInteger(id)) {
      throw new TypeError(`Invalid client id for ${what}: "${String(id)}" is not an integer`);
    }
    if (id < 0 || id >= clients) {
      throw new RangeError(
        `Invalid client id for ${what}: "${id}" is not from 0 to ${clients - 1}`,
      );
    }
    if (seen.has(id)) throw new TypeError(`Invalid ids for ${what}: "${id}" is listed twice`);
    seen.add(id);
  }
  return list;
}
