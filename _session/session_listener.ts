/**
 * {@linkcode SessionListener}: who hears of a session's drops, late replies
 * and end (`session.ts`, whose receiver calls it for late replies).
 *
 * @module
 */

/**
 * Who hears of a session's drops, late replies and end: its methods are
 * called (a server's member record is its session's listener, so that an
 * idle session holds no closures for them).
 */
export interface SessionListener {
  /** The connection dropped: the session waits for a resume. */
  sessionDropped(error: Error): void;
  /** The session ended (not after `close()`), with why: called once. */
  sessionEnded?(error: Error): void;
  /**
   * A reply that is late on arrival (it answers message `replyTo`, and
   * message `latest` was sent since): it is acknowledged and counted as
   * received, but never queued. Without this method, late replies are queued.
   */
  lateReply?(replyTo: number, value: unknown, latest: number): void;
}
