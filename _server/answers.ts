/**
 * What `gather()`, `gatherSettled()` and `uploads()` share: a call becomes
 * the one consumer of its clients' inboxes (so two calls never split one
 * client's messages) and is told by each inbox of every arrival and end
 * ({@linkcode watchInboxes}); every take drops late replies
 * ({@linkcode takeAnswer}): a reply to the server's message k taken when the
 * server has already sent that client a later one (k < `messagesSent`) is
 * not an answer; it is counted, handed to `onLate` and dropped, and the call
 * keeps waiting for that client. Unsolicited messages (`replyTo` 0) and
 * replies to the latest message are answers. With a quorum (`min`), a call
 * is done once `min` clients answered and `grace` ms passed since
 * ({@linkcode checkQuorum}, {@linkcode Grace}).
 *
 * @module
 */

import type { Session } from "../_session/session.ts";
import type { Arrival } from "../_session/inbox.ts";
import { Notifier, startDeadline } from "../_util/wait.ts";
import { PeerDisconnectedError, TimeoutError } from "../errors.ts";
import type { WaitOptions } from "../types.ts";

/** What the calls here use of a client's connection (`away`: whether it is resuming, and why). */
export type Source =
  & Pick<Session, "inbox" | "meter" | "messagesSent" | "late">
  & Partial<Pick<Session, "away">>;

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
export class Grace implements Disposable {
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
export function isDeadline(
  error: unknown,
  options: WaitOptions | undefined,
): error is TimeoutError {
  return error instanceof TimeoutError && error !== options?.signal?.reason;
}

/**
 * Why a client asked gave no answer when a gather settled: it is away (its
 * connection dropped and it has not resumed), else `otherwise`.
 */
export function unanswered(
  id: number,
  source: Source,
  what: string,
  otherwise: () => Error,
): Error {
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
export function capitalise(what: string): string {
  return `${what[0].toUpperCase()}${what.slice(1)}`;
}

/**
 * Looks up the connections of the listed clients.
 *
 * @throws {PeerDisconnectedError} If one has none.
 */
export function sourcesOf(
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
