/**
 * `Server.gather()` and `gatherSettled()`: one answer per client asked.
 * Answers are taken as they arrive (freeing the receive budget for the
 * others) and put back at the front of their queues if the call fails.
 *
 * Without `min`, in `strict` mode (`gather`) the first client that fails,
 * or the deadline, fails the call; otherwise (`gatherSettled`) failures are
 * recorded and the call settles. With `min`, the call is done once `min`
 * answered and `grace` ms passed (or every other client answered or
 * failed); in `strict` mode it fails only once the quorum cannot be reached
 * (with the first failure) or at the deadline without it.
 *
 * @module
 */

import {
  capitalise,
  checkQuorum,
  Grace,
  isDeadline,
  type LateHandler,
  type Source,
  sourcesOf,
  takeAnswer,
  unanswered,
  watchInboxes,
} from "./answers.ts";
import type { Arrival } from "../_session/inbox.ts";
import { FedcommError, TimeoutError } from "../errors.ts";
import type { GatherOptions, GatherResult } from "../types.ts";

/**
 * Collects one answer per client (see the module doc).
 *
 * @param connections The server's sessions by client id.
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
  const gathering = new Gathering(sources, list, required, strict, onLate);
  // A gather holds every answer until it returns, so throttling its reads
  // with the receive budget would slow it without saving memory.
  using watch = watchInboxes(sources, list, what, options, () => [...gathering.pending], false);
  using graceTimer = new Grace();
  const collect = (id: number) => {
    if (gathering.collect(id)) graceTimer.start(grace, watch.wake);
  };
  let deadline: TimeoutError | undefined;
  try {
    for (const id of list) collect(id);
    while (gathering.pending.size > 0 && !graceTimer.over && !gathering.unreachable) {
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
    if (deadline !== undefined && strict && gathering.taken.size < required) throw deadline;
  } catch (error) {
    gathering.putBack();
    throw error;
  }
  return gathering.result(what, grace, deadline);
}

/** One gather's state: what was taken, who failed, who is still awaited. */
class Gathering {
  /** The answers taken, by client. */
  readonly taken = new Map<number, Arrival>();
  /** The clients that failed, and why. */
  readonly failed = new Map<number, Error>();
  /** The clients still awaited. */
  readonly pending: Set<number>;
  /** Too many failed: waiting longer cannot make the quorum (`gatherSettled`). */
  unreachable = false;
  readonly #sources: ReadonlyMap<number, Source>;
  readonly #list: readonly number[];
  readonly #required: number;
  readonly #strict: boolean;
  readonly #onLate: LateHandler;

  constructor(
    sources: ReadonlyMap<number, Source>,
    list: readonly number[],
    required: number,
    strict: boolean,
    onLate: LateHandler,
  ) {
    this.#sources = sources;
    this.#list = list;
    this.#required = required;
    this.#strict = strict;
    this.#onLate = onLate;
    this.pending = new Set(list);
  }

  /**
   * Takes a client's answer, or records its failure.
   *
   * @returns Whether the quorum was just reached with clients still awaited (the grace starts).
   * @throws {Error} In strict mode, the first failure once the quorum cannot be reached.
   */
  collect(id: number): boolean {
    if (!this.pending.has(id)) return false;
    const source = this.#sources.get(id)!;
    const arrival = takeAnswer(id, source, this.#onLate);
    if (arrival !== undefined) {
      this.taken.set(id, arrival);
      this.pending.delete(id);
      return this.taken.size === this.#required && this.pending.size > 0;
    }
    if (source.inbox.ended === undefined) return false;
    this.failed.set(id, source.inbox.ended);
    this.pending.delete(id);
    if (this.taken.size + this.pending.size < this.#required) {
      if (this.#strict) throw this.failed.values().next().value;
      this.unreachable = true;
    }
    return false;
  }

  /** The gather failed: every answer taken goes back to the front of its queue. */
  putBack(): void {
    for (const [id, arrival] of this.taken) {
      const { inbox, meter } = this.#sources.get(id)!;
      inbox.putBack(
        arrival,
        arrival.reserved > 0 ? meter.budget?.force(arrival.reserved, meter) : undefined,
      );
    }
  }

  /** The result: the answers, why each other client gave none, the late replies. */
  result(what: string, grace: number, deadline: TimeoutError | undefined): GatherResult {
    const list = this.#list;
    const failures = this.failed.size;
    const required = this.#required;
    for (const id of this.pending) {
      this.failed.set(
        id,
        unanswered(id, this.#sources.get(id)!, what, () =>
          deadline ??
            (this.unreachable
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
    // Late replies are dropped on arrival or when met here, and counted by
    // each session: those dropped since the message this call answers was sent.
    const late = new Map<number, number>();
    for (const id of list) {
      const arrival = this.taken.get(id);
      if (arrival !== undefined) received.set(id, arrival.value);
      const source = this.#sources.get(id)!;
      const { latest, sinceLatest } = source.late;
      if (latest === source.messagesSent && sinceLatest > 0) late.set(id, sinceLatest);
    }
    return { received, failed: this.failed, late, quorum: received.size >= required };
  }
}
