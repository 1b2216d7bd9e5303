/**
 * Fake client connections for the unit tests of `_server/answers.ts`,
 * `_server/gather.ts` and `_server/uploads.ts`: each a real inbox, meter and
 * late-reply counter with a settable send count. Not published.
 *
 * @module
 */

import { Meter } from "../_session/budget.ts";
import { type Arrival, Inbox, LateReplies } from "../_session/inbox.ts";
import type { LateHandler, Source } from "../_server/answers.ts";
import { PeerDisconnectedError } from "../errors.ts";

/** What the gather functions use of a connection: a real inbox and meter, and a send counter. */
export interface FakeSource extends Source {
  messagesSent: number;
}

/** `n` clients by id, each having been sent `sent` messages. */
export function clients(n: number, sent = 1): Map<number, FakeSource> {
  const source = (): FakeSource => ({
    inbox: new Inbox(),
    meter: new Meter(),
    messagesSent: sent,
    late: new LateReplies(),
  });
  return new Map(ids(n).map((id) => [id, source()]));
}

/** The ids `0 … n − 1`. */
export function ids(n: number): number[] {
  return Array.from({ length: n }, (_, id) => id);
}

/** Records the late replies the server was told of. */
export function lateLog(): { calls: [number, unknown, number, number][]; onLate: LateHandler } {
  const calls: [number, unknown, number, number][] = [];
  return {
    calls,
    onLate: (id: number, arrival: Arrival, latest: number) =>
      void calls.push([id, arrival.value, arrival.replyTo, latest]),
  };
}

/** A late-reply handler for calls that must see none. */
export const noLate: LateHandler = (id, arrival) => {
  throw new Error(`Unexpected late reply from client "${id}": ${String(arrival.value)}`);
};

/** The error of client `id` leaving. */
export const gone = (id: number) =>
  new PeerDisconnectedError(`Client "${id}" left`, { clientId: id });
