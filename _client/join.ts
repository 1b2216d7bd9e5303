/**
 * A new session with the server, for `connect()`: the options checked,
 * the connection and handshake (`dial.ts`), tried again while the server
 * is busy (too many connections in their handshake), after pauses that
 * double, until the timeout.
 *
 * @module
 */

import { DEFAULT_CONNECT_TIMEOUT_MS, dial, type DialOptions } from "./dial.ts";
import { secretBytes } from "../_handshake/auth.ts";
import { MAX_NAME_BYTES, propsProblem } from "../_handshake/messages.ts";
import { Session } from "../_session/session.ts";
import { checkMaxFrameBytes, checkMaxMessageBytes } from "../_wire/frame.ts";
import { Backoff, checkTimeout, pause } from "../_util/wait.ts";
import { RejectedError } from "../errors.ts";
import type { ConnectOptions, Welcome } from "../types.ts";

/** Connecting to a busy server: the first pause, doubled each try up to the last. */
const BUSY_FIRST_PAUSE_MS = 50;
const BUSY_MAX_PAUSE_MS = 2_000;
/** A signal that never aborts. */
const NEVER = new AbortController().signal;

/** A session the server welcomed. */
export interface Joined {
  /** The session, from the welcome on. */
  readonly session: Session;
  /** What the welcome said. */
  readonly welcome: Welcome;
  /** The options checked, to reconnect with. */
  readonly options: DialOptions;
}

/**
 * Checks the options, connects and runs the handshake (see the module doc).
 *
 * @param options The options of `connect()`.
 * @returns The session and the welcome.
 * @throws {Error} As `connect()` says.
 */
export async function join(options: ConnectOptions): Promise<Joined> {
  const maxFrameBytes = checkMaxFrameBytes(options.maxFrameBytes);
  const maxMessageBytes = checkMaxMessageBytes(options.maxMessageBytes);
  if (options.secret !== undefined) secretBytes(options.secret, "secret");
  checkName(options.name);
  checkProps(options.props);
  const timeout = options.timeout ?? DEFAULT_CONNECT_TIMEOUT_MS;
  checkTimeout(timeout);
  const end = performance.now() + timeout;
  const checked = { ...options, maxFrameBytes, maxMessageBytes };
  const backoff = new Backoff(BUSY_FIRST_PAUSE_MS, BUSY_MAX_PAUSE_MS);
  while (true) {
    try {
      const remaining = Math.max(0, end - performance.now());
      const waitForServer = options.waitForServer ?? false;
      const { greeting, welcome } = await dial(checked, remaining, options.signal, waitForServer);
      const session = new Session(greeting.release(), {
        clientId: welcome.id,
        peerIsServer: true,
        maxFrameBytes,
        peerMaxFrameBytes: welcome.maxFrameBytes,
        maxMessageBytes,
        peerMaxMessageBytes: welcome.maxMessageBytes,
        bytesReceived: greeting.bytesReceived,
      });
      session.allowResume(options.resume === false ? 0 : welcome.grace);
      return { session, welcome, options: checked };
    } catch (error) {
      const pauseMs = backoff.next();
      const busy = error instanceof RejectedError && error.reason === "busy";
      if (!busy || performance.now() + pauseMs >= end || options.signal?.aborted) throw error;
      await pause(pauseMs, options.signal ?? NEVER);
    }
  }
}

/** Validates a client name: 1 to 128 UTF-8 bytes (PROTOCOL.md §6.1). */
function checkName(name: unknown): void {
  if (name === undefined) return;
  if (typeof name !== "string") throw new TypeError("Invalid name: expected a string");
  const bytes = new TextEncoder().encode(name).byteLength;
  if (bytes < 1 || bytes > MAX_NAME_BYTES) {
    throw new RangeError(`Invalid name: "${name}" is ${bytes} bytes, not 1 to ${MAX_NAME_BYTES}`);
  }
}

/** Validates `props` (PROTOCOL.md §6.1). */
function checkProps(props: unknown): void {
  if (props === undefined) return;
  const problem = propsProblem(props);
  if (problem === undefined) return;
  const message = `Invalid props: ${problem.message}`;
  throw problem.wrongType ? new TypeError(message) : new RangeError(message);
}
