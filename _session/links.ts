/**
 * A session's links over time: the current one (none while the peer is
 * away), and what the ones gone leave behind: bytes written, the last
 * round trip, their read loops until they stop.
 *
 * @module
 */

import type { Link, LinkOwner } from "../_link/link.ts";

/** See the module doc. */
export class Links {
  /** The link the session reads and writes now, or `undefined` while the peer is away. */
  current: Link | undefined;
  #lastAddr!: Deno.Addr;
  #lastRtt: number | undefined;
  /** Bytes written by the links that are gone. */
  #bytesSentBefore = 0;
  /**
   * Resolved when the current link drops (waits for acknowledgements stop
   * then); made by the first wait, so an idle session holds no promise.
   */
  #dropped: PromiseWithResolvers<void> | undefined;
  /** Read loops of dropped links still stopping (made at the first drop). */
  #stopping: Set<Promise<void>> | undefined;
  /** Where the frame given as `first` went: its link and its write-queue mark. */
  #first: { link: Link; mark: number } | undefined;

  /**
   * Makes `link` the current one: it reports to `owner`, names the client in
   * its errors, accepts frames up to `maxFrameBytes`, and writes `first`
   * before anything else.
   *
   * @param link The link, released by its handshake.
   * @param owner The session.
   * @param clientId The client's id.
   * @param maxFrameBytes The session's frame limit.
   * @param first A frame to write first (the server's welcome).
   */
  attach(
    link: Link,
    owner: LinkOwner,
    clientId: number,
    maxFrameBytes: number,
    first?: Uint8Array,
  ): void {
    link.owner = owner;
    link.reader.clientId = clientId;
    link.reader.maxFrameBytes = maxFrameBytes;
    this.current = link;
    this.#lastAddr = link.conn.remoteAddr;
    if (first !== undefined) this.#first = { link, mark: link.queue.push([first]) };
  }

  /**
   * Closes a link's socket and stops its parts; if it is the current one,
   * there is none until the next {@linkcode Links.attach}.
   *
   * @param link The link.
   * @param reason Why: what its queued frames fail with.
   * @param failed Whether the link failed (the peer may resume): only then
   * are the waits on {@linkcode Links.dropped} released; when the session
   * ends or closes, its outbox fails them with the session's reason.
   */
  drop(link: Link, reason: Error, failed: boolean): void {
    this.#bytesSentBefore += link.queue.bytesSent;
    this.#lastRtt = link.keepalive.rtt ?? this.#lastRtt;
    link.drop(reason);
    const stopping = this.#stopping ??= new Set();
    const loop = link.loop;
    stopping.add(loop);
    loop.finally(() => stopping.delete(loop));
    if (link !== this.current) return;
    this.current = undefined;
    if (!failed) return;
    this.#dropped?.resolve();
    this.#dropped = undefined;
  }

  /** Resolves when the current link fails. */
  get dropped(): Promise<void> {
    return (this.#dropped ??= Promise.withResolvers<void>()).promise;
  }

  /** The peer's address (the last one, while it is away). */
  get remoteAddr(): Deno.Addr {
    return this.#lastAddr;
  }

  /** The last ping's round trip in ms, or `undefined` before the first pong. */
  get rtt(): number | undefined {
    return this.current?.keepalive.rtt ?? this.#lastRtt;
  }

  /** Bytes the sockets have taken so far, frame headers included. */
  get bytesSent(): number {
    return this.#bytesSentBefore + (this.current?.queue.bytesSent ?? 0);
  }

  /**
   * Waits until the socket took the frame given as `first` on the latest
   * link that got one.
   *
   * @returns Resolves when written (at once if there was none).
   * @throws {PeerDisconnectedError} If its link failed before it was written.
   */
  async firstWritten(): Promise<void> {
    if (this.#first !== undefined) await this.#first.link.queue.written(this.#first.mark);
  }

  /**
   * Waits until the read loops of every dropped link stopped.
   *
   * @returns Resolves when they did.
   */
  async stopped(): Promise<void> {
    await Promise.all([...(this.#stopping ?? [])]);
  }
}
