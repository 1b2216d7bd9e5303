/**
 * Sending to many clients at once, for `Server.broadcast()` and `send()`:
 * each target's session takes its frame under the one send policy
 * (`_session/sender.ts`), all of them before any wait, and the call then
 * waits for those that lend memory, are congested or full.
 *
 * @module
 */

import type { EncodedFrame } from "../_codec/encode_frame.ts";
import type { Copies } from "../_session/sender.ts";
import type { Session } from "../_session/session.ts";
import { startDeadline, within } from "../_util/wait.ts";
import type { WaitOptions } from "../types.ts";

/**
 * Sends a frame to each id; reports the first failure once every wait ended.
 *
 * @param sessions The server's sessions by client id.
 * @param ids The targets.
 * @param frames One frame for every target (a broadcast), or the i-th target's frame.
 * @param what The call, for a timeout's message.
 * @param options Cancellation and time limit.
 * @param progressOf The progress callback for a client, if progress is reported.
 * @returns Resolves when every target took its frame, as the send policy says.
 * @throws {Error} The first failure: a session gone, a frame too large, the deadline.
 */
export async function fanOut(
  sessions: ReadonlyMap<number, Session>,
  ids: readonly number[],
  frames: EncodedFrame | readonly EncodedFrame[],
  what: string,
  options: WaitOptions | undefined,
  progressOf: (id: number) => ((done: number, total: number) => void) | undefined,
): Promise<void> {
  const unwritten = new Set<number>();
  const failures: unknown[] = [];
  using deadline = startDeadline(options, () => ({
    what,
    detail: `waiting for clients [${[...unwritten].join(", ")}] to acknowledge`,
    clientIds: [...unwritten],
  }));
  const waits: Promise<void>[] = [];
  // A frame that lends the caller's memory is copied once for all the clients that are away.
  const copies: Copies = new WeakMap();
  const shared = "chunks" in frames ? () => frames : undefined;
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    try {
      const encode = shared ?? (() => (frames as readonly EncodedFrame[])[i]);
      const wait = sessions.get(id)!.sender.post(encode, deadline, progressOf(id), copies);
      if (wait === undefined) continue;
      unwritten.add(id);
      waits.push(wait.then(() => void unwritten.delete(id), (e) => void failures.push(e)));
    } catch (error) {
      failures.push(error);
    }
  }
  if (waits.length > 0) await within(Promise.all(waits), deadline);
  if (failures.length > 0) throw failures[0];
}
