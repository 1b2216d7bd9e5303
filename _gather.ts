/**
 * Receiving from many clients at once: the machinery behind
 * `Server.gather()`, `gatherSettled()` and `uploads()`.
 *
 * A call becomes the one consumer of its clients' inboxes (so two calls
 * never split one client's messages), is told by each inbox of every arrival
 * and end, and takes messages as they come.
 *
 * Every take goes through {@linkcode takeAnswer}, which drops late replies:
 * a reply to the server's message k taken when the server has already sent
 * that client a later one (k < `messagesSent`) is not an answer; it is
 * counted, handed to `onLate` and dropped, and the call keeps waiting for
 * that client. Unsolicited messages (`replyTo` 0) and replies to the latest
 * message are answers.
 *
 * With a quorum (`min`), a call is done once `min` clients answered (for
 * `uploads`: delivered all their messages) and `grace` ms passed since;
 * failures are tolerated while the quorum can still be reached.
 *
 * @module
 */

import { ArrivalHeap } from "./_arrival_heap.ts";
import type { Connection } from "./_connection.ts";
import type { Arrival } from "./_inbox.ts";
import type { GatherOptions, GatherResult, Upload, UploadsOptions } from "./_server_types.ts";
import { Notifier, startDeadline, type WaitOptions } from "./_wait.ts";
import { FedcommError, PeerDisconnectedError, TimeoutError } from "./errors.ts";

/** What the calls here use of a client's connection (`away`: whether it is resuming, and why). */
export type Source =
  & Pick<Connection, "inbox" | "meter" | "messagesSent" | "late">
  & Partial<Pick<Connection, "away">>;

/**
 * Told of each late reply dropped: the client, the message (taken: its value
 * is handed over) and `latest`, the number of messages the server had sent
 * that client when it was taken.
 */
export type LateHandler = (clientId: number, arrival: Arrival, latest: number) => void;

/**
 * Drops the late replies at the front of a client's inbox and returns the
 * next answer without taking it.
 *
 * @param id The client id.
 * @param source Its connection.
 * @param onLate Told of each late reply dropped.
 * @returns The next answer, or `undefined` if none waits.
 */
export function peekAnswer(
  id: number,
  source: Source,
  onLate: LateHandler,
): Arrival | undefined {
  while (true) {
    const head = source.inbox.peek();
    const latest = source.messagesSent;
    if (head === undefined || head.replyTo === 0 || head.replyTo >= latest) return head;
    source.inbox.take(); // releases its reservation: the value goes to the listener
    source.late.count(latest);
    onLate(id, head, latest);
  }
}

/**
 * Takes the next answer from a client's inbox, dropping late replies before
 * it (see the module doc): the one way the server takes a client's message.
 *
 * @param id The client id.
 * @param source Its connection.
 * @param onLate Told of each late reply dropped.
 * @returns The answer, or `undefined` if none waits.
 */
export function takeAnswer(
  id: number,
  source: Source,
  onLate: LateHandler,
): Arrival | undefined {
  return peekAnswer(id, source, onLate) === undefined ? undefined : source.inbox.take();
}

/** A validated quorum. */
interface Quorum {
  /** How many answers (or complete clients) are enough. */
  required: number;
  /** Milliseconds to go on after the `required`-th. */
  grace: number;
  /** Whether `min` was given. */
  given: boolean;
}

/**
 * Validates `min` and `grace`.
 *
 * @param options The call's options.
 * @param asked How many clients the call asks.
 * @param what The call, for messages.
 * @returns The quorum: `min`, or every client asked.
 * @throws {TypeError} If `min` or `grace` is not a number.
 * @throws {RangeError} If `min` is not a positive integer of at most `asked`,
 * or `grace` is negative or not finite.
 */
export function checkQuorum(
  options: { min?: number; grace?: number } | undefined,
  asked: number,
  what: string,
): Quorum {
  const { min, grace = 0 } = options ?? {};
  if (min !== undefined && typeof min !== "number") {
    throw new TypeError(`Invalid min for ${what}: expected a number, got ${typeof min}`);
  }
  if (typeof grace !== "number") {
    throw new TypeError(`Invalid grace for ${what}: expected a number, got ${typeof grace}`);
  }
  if (min !== undefined && !(Number.isInteger(min) && min >= 1 && min <= asked)) {
    throw new RangeError(
      `Invalid min for ${what}: "${min}" is not a positive integer of at most ${asked} (the clients asked)`,
    );
  }
  if (!(Number.isFinite(grace) && grace >= 0)) {
    throw new RangeError(
      `Invalid grace for ${what}: "${grace}" is not a non-negative number of ms`,
    );
  }
  return { required: min ?? asked, grace, given: min !== undefined };
}

/** The grace period after the quorum; dispose it to clear its timer. */
class Grace implements Disposable {
  #timer: ReturnType<typeof setTimeout> | undefined;
  #started = false;
  #over = false;

  /** Whether it started and ran out. */
  get over(): boolean {
    return this.#over;
  }

  /**
   * Starts it (once).
   *
   * @param ms Its length (0: over at once).
   * @param wake Called when it runs out later.
   */
  start(ms: number, wake: () => void): void {
    if (this.#started) return;
    this.#started = true;
    if (ms === 0) this.#over = true;
    else {
      this.#timer = setTimeout(() => {
        this.#over = true;
        wake();
      }, ms);
    }
  }

  [Symbol.dispose](): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
  }
}

/** Whether `error` is the call's own deadline running out (not an abort). */
function isDeadline(error: unknown, options: WaitOptions | undefined): error is TimeoutError {
  return error instanceof TimeoutError && error !== options?.signal?.reason;
}

/**
 * Why a client asked gave no answer when a gather settled: it is away (its
 * connection dropped and it has not resumed), else `otherwise`.
 */
function unanswered(id: number, source: Source, what: string, otherwise: () => Error): Error {
  const away = source.away;
  if (away === undefined) return otherwise();
  const ms = Math.round(performance.now() - away.since);
  return new PeerDisconnectedError(
    `${capitalise(what)}: client "${id}" is away: its connection dropped ${ms} ms ago ` +
      `and it has not resumed: ${away.reason.message}`,
    { clientId: id, cause: away.reason },
  );
}

/** `"gatherSettled"` → `"GatherSettled"`. */
function capitalise(what: string): string {
  return `${what[0].toUpperCase()}${what.slice(1)}`;
}

/**
 * Looks up the connections of the listed clients.
 *
 * @throws {PeerDisconnectedError} If one has none.
 */
function sourcesOf(
  connections: ReadonlyMap<number, Source>,
  list: readonly number[],
): Map<number, Source> {
  const sources = new Map<number, Source>();
  for (const id of list) {
    const source = connections.get(id);
    if (source === undefined) {
      throw new PeerDisconnectedError(`Client "${id}" has no connection`, { clientId: id });
    }
    sources.set(id, source);
  }
  return sources;
}

/**
 * Collects one answer per client, for `gather()` and `gatherSettled()`.
 *
 * Without `min`, in `strict` mode the first client that fails, or the
 * deadline, fails the call and puts back what was taken; otherwise failures
 * are recorded and the call settles. With `min`, the call is done once `min`
 * answered and `grace` ms passed (or every other client answered or failed);
 * in `strict` mode it fails only once the quorum cannot be reached (with the
 * first failure) or at the deadline without it.
 *
 * @param connections The server's connections by client id.
 * @param list The validated ids.
 * @param what The call, for messages.
 * @param strict Whether failures fail the call (`gather`) or are listed (`gatherSettled`).
 * @param options The quorum, cancellation and time limit.
 * @param onLate Told of each late reply dropped.
 * @returns The answers, the failures, the late replies dropped and whether the quorum was reached.
 * @throws {TypeError} If `min` or `grace` is not a number.
 * @throws {RangeError} If `min` or `grace` is out of range.
 * @throws {Deno.errors.Busy} If another call is receiving from one of the clients.
 */
export async function gatherFrom(
  connections: ReadonlyMap<number, Source>,
  list: readonly number[],
  what: string,
  strict: boolean,
  options: GatherOptions | undefined,
  onLate: LateHandler,
): Promise<GatherResult> {
  const { required, grace } = checkQuorum(options, list.length, what);
  const sources = sourcesOf(connections, list);
  const pending = new Set(list);
  // A gather holds every answer until it returns, so throttling its reads
  // with the receive budget would slow it without saving memory.
  using watch = watchInboxes(sources, list, what, options, () => [...pending], false);
  using graceTimer = new Grace();
  // Messages are taken as they arrive (freeing the receive budget for the
  // others) and put back at the front of their queues if the gather fails.
  const taken = new Map<number, Arrival>();
  const failed = new Map<number, Error>();
  const putBack = (): void => {
    for (const [id, arrival] of taken) {
      const { inbox, meter } = sources.get(id)!;
      inbox.putBack(
        arrival,
        arrival.reserved > 0 ? meter.budget?.force(arrival.reserved, meter) : undefined,
      );
    }
  };
  const collect = (id: number): void => {
    if (!pending.has(id)) return;
    const source = sources.get(id)!;
    const arrival = takeAnswer(id, source, onLate);
    if (arrival !== undefined) {
      taken.set(id, arrival);
      pending.delete(id);
      if (taken.size === required && pending.size > 0) graceTimer.start(grace, watch.wake);
    } else if (source.inbox.ended !== undefined) {
      failed.set(id, source.inbox.ended);
      pending.delete(id);
      if (taken.size + pending.size < required) {
        if (strict) throw failed.values().next().value;
        unreachable = true; // gatherSettled: waiting longer cannot make the quorum
      }
    }
  };
  let deadline: TimeoutError | undefined;
  let unreachable = false;
  try {
    for (const id of list) collect(id);
    while (pending.size > 0 && !graceTimer.over && !unreachable) {
      let changed: number[];
      try {
        changed = await watch.changed();
      } catch (error) {
        if (!isDeadline(error, options)) throw error;
        deadline = error;
        break;
      }
      for (const id of changed) collect(id);
    }
    if (deadline !== undefined && strict && taken.size < required) throw deadline;
  } catch (error) {
    putBack();
    throw error;
  }
  const failures = failed.size;
  for (const id of pending) {
    failed.set(
      id,
      unanswered(id, sources.get(id)!, what, () =>
        deadline ??
          (unreachable
            ? new FedcommError(
              `${capitalise(what)}: client "${id}" was not waited for: the quorum of ` +
                `${required} can no longer be reached (${failures} of ${list.length} failed)`,
              { clientId: id },
            )
            : new TimeoutError(
              `${capitalise(what)}: client "${id}" did not answer within the grace of ` +
                `${grace} ms after ${required} of ${list.length} clients answered`,
              { clientIds: [id] },
            ))),
    );
  }
  const received = new Map<number, unknown>();
  for (const id of list) {
    const arrival = taken.get(id);
    if (arrival !== undefined) received.set(id, arrival.value);
  }
  // Late replies are dropped on arrival or when met here, and counted by each
  // connection: those dropped since the message this call answers was sent.
  const late = new Map<number, number>();
  for (const id of list) {
    const source = sources.get(id)!;
    const { latest, sinceLatest } = source.late;
    if (latest === source.messagesSent && sinceLatest > 0) late.set(id, sinceLatest);
  }
  return { received, failed, late, quorum: received.size >= required };
}

/**
 * Becomes the one consumer of the given clients' inboxes (so two calls
 * never split one client's messages); `changed()` returns the ids whose
 * inbox changed since the last call (none after `wake()`). Disposing it lets
 * them go and restores their receive budget.
 */
export function watchInboxes(
  sources: ReadonlyMap<number, Source>,
  ids: readonly number[],
  what: string,
  options: WaitOptions | undefined,
  waitingFor: () => number[],
  metered: boolean,
): { changed(): Promise<number[]>; wake(): void } & Disposable {
  const deadline = startDeadline(options, () => {
    const clientIds = waitingFor();
    return {
      what: capitalise(what),
      detail: `waiting for clients [${clientIds.join(", ")}]`,
      clientIds,
    };
  });
  const stops: (() => void)[] = [];
  const release = () => {
    for (const stop of stops) stop();
    for (let i = 0; i < stops.length; i++) sources.get(ids[i])!.meter.metered = true;
    deadline[Symbol.dispose]();
  };
  let changed: number[] = [];
  const notifier = new Notifier();
  for (const id of ids) {
    try {
      stops.push(sources.get(id)!.inbox.listen(() => {
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
  for (const id of ids) sources.get(id)!.meter.metered = metered;
  return {
    async changed(): Promise<number[]> {
      if (changed.length === 0) await notifier.changed(deadline);
      const ids = changed;
      changed = [];
      return ids;
    },
    wake: () => notifier.notify(),
    [Symbol.dispose]: release,
  };
}

/**
 * Yields `count` answers from each listed client in order of arrival, for
 * `uploads()`. With `min`, a failing client is skipped while `min` clients
 * can still deliver all `count`; once `min` did, it goes on for `grace` ms
 * and ends; at the deadline it ends normally if `min` did.
 *
 * @param connections The server's connections by client id.
 * @param list The validated ids.
 * @param count How many from each.
 * @param options The quorum, cancellation and time limit.
 * @param onLate Told of each late reply dropped.
 * @returns The uploads.
 * @throws {TypeError} If `min` or `grace` is not a number.
 * @throws {RangeError} If `min` or `grace` is out of range, or `min` comes with an infinite `count`.
 */
export async function* uploadsFrom(
  connections: ReadonlyMap<number, Source>,
  list: readonly number[],
  count: number,
  options: UploadsOptions | undefined,
  onLate: LateHandler,
): AsyncGenerator<Upload> {
  const { required, grace, given } = checkQuorum(options, list.length, "uploads");
  if (given && count === Infinity) {
    throw new RangeError(`Invalid min for uploads: a quorum needs a finite count, not "Infinity"`);
  }
  const sources = sourcesOf(connections, list);
  const owed = new Map(list.map((id) => [id, count]));
  let complete = 0;
  const failures: Error[] = [];
  // The budget stays on: uploads() is for folding without holding them all.
  using watch = watchInboxes(sources, list, "uploads", options, () => [...owed.keys()], true);
  using graceTimer = new Grace();
  // Clients with a queued answer, ordered by the arrival of their oldest one.
  const ready = new ArrivalHeap();
  const consider = (id: number): void => {
    if (!owed.has(id) || ready.has(id)) return;
    const source = sources.get(id)!;
    const head = peekAnswer(id, source, onLate);
    if (head !== undefined) ready.push(id, head.seq);
    else if (source.inbox.ended !== undefined) {
      owed.delete(id);
      if (count === Infinity) return; // its stream just ends
      failures.push(source.inbox.ended);
      if (complete + owed.size < required) throw failures[0];
    }
  };
  for (const id of list) consider(id);
  while (owed.size > 0 && !graceTimer.over) {
    const id = ready.pop();
    if (id === undefined) {
      let changed: number[];
      try {
        changed = await watch.changed();
      } catch (error) {
        if (isDeadline(error, options) && complete >= required) return;
        throw error;
      }
      for (const changedId of changed) consider(changedId);
      continue;
    }
    const source = sources.get(id)!;
    const head = source.inbox.peek();
    // The server may have sent this client another message since: then it is late.
    if (peekAnswer(id, source, onLate) !== head) {
      consider(id);
      continue;
    }
    const left = owed.get(id)! - 1;
    if (left > 0) owed.set(id, left);
    else {
      owed.delete(id);
      if (++complete === required && owed.size > 0) graceTimer.start(grace, watch.wake);
    }
    yield { id, value: source.inbox.take()!.value };
    consider(id); // its next message, or its disconnect, after the value is delivered
  }
}
