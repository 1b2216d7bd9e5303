/**
 * The client's side of a resume (PROTOCOL.md §7.2): after a drop, new
 * connections are tried, with pauses that double, until one resumes the
 * session or the server says it cannot.
 *
 * @module
 */

import { DEFAULT_CONNECT_TIMEOUT_MS, dial, type Dialed, type DialOptions } from "./dial.ts";
import { isDrop } from "../_link/peer_errors.ts";
import type { Session } from "../_session/session.ts";
import { Backoff, pause } from "../_util/wait.ts";
import {
  AuthenticationError,
  PeerDisconnectedError,
  ProtocolError,
  RejectedError,
} from "../errors.ts";

/** Reconnecting after a drop: the first pause, doubled each try up to the last. */
const RESUME_FIRST_PAUSE_MS = 100;
const RESUME_MAX_PAUSE_MS = 5_000;

/** Which session to resume, and how to reach its server. */
export interface ResumeTarget {
  /** The options of `connect()`. */
  readonly options: DialOptions;
  /** The client's id. */
  readonly id: number;
  /** The session's resume token, from its welcome. */
  readonly token: Uint8Array;
  /** Stops trying when the client closes. */
  readonly closing: AbortSignal;
  /** Called at once when the session resumed, before it reads any further. */
  readonly resumed: () => void;
}

/**
 * Tries to resume `session` on new connections until it resumes or the
 * server's grace is over; ends the session if the server refuses.
 *
 * @param session The session, waiting for its resume.
 * @param cause Why its connection dropped.
 * @param target Where to and as whom.
 * @returns Whether it resumed.
 */
export async function reconnect(
  session: Session,
  cause: Error,
  target: ResumeTarget,
): Promise<boolean> {
  const { closing } = target;
  // The first try at once, then pauses from RESUME_FIRST_PAUSE_MS.
  const backoff = new Backoff(RESUME_FIRST_PAUSE_MS, RESUME_MAX_PAUSE_MS);
  for (let first = true; session.state === "resuming" && !closing.aborted; first = false) {
    if (!first) await pause(backoff.next(), closing);
    if (session.state !== "resuming" || closing.aborted) return false;
    const attempt = await tryResume(session, target);
    if (attempt === "again") continue;
    if (attempt === "refused") return false;
    const problem = session.cannotResume(attempt.welcome.received);
    if (problem !== undefined || closing.aborted) {
      await attempt.greeting.close();
      if (problem !== undefined) {
        session.end(
          new PeerDisconnectedError(`Server disconnected: cannot resume: ${problem}`, {
            clientId: target.id,
            cause,
          }),
        );
      }
      return false;
    }
    session.resume(attempt.greeting.release(), attempt.welcome.received);
    target.resumed();
    return true;
  }
  return false;
}

/** One try: the handshaken connection, "again" to try once more, or "refused" (the session ended). */
async function tryResume(
  session: Session,
  target: ResumeTarget,
): Promise<Dialed | "again" | "refused"> {
  const { options, id, token, closing } = target;
  try {
    return await dial(options, options.timeout ?? DEFAULT_CONNECT_TIMEOUT_MS, closing, false, {
      id,
      token,
      received: session.messagesReceived,
    });
  } catch (error) {
    // "busy", "live" (the server has not noticed yet that the old connection
    // is dead), no answer, no server, a connection cut again (even inside the
    // welcome): try again. A refusal, a failed authentication or a server
    // speaking nonsense: give up.
    const refused = error instanceof RejectedError
      ? error.reason !== "busy" && error.reason !== "live"
      : error instanceof ProtocolError && !isDrop(error) || error instanceof AuthenticationError;
    if (!refused) return "again";
    session.end(
      new PeerDisconnectedError(
        `Server disconnected: resume refused: ${(error as Error).message}`,
        {
          clientId: id,
          cause: error,
        },
      ),
    );
    return "refused";
  }
}
