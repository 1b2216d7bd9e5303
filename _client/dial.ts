/**
 * Opening one connection to the server: TCP (retried while refused, with
 * `waitForServer`), TLS if asked, then the handshake as a new session or
 * as the resume of one. What comes back is the handshaken link, ready for a
 * session, and the server's welcome.
 *
 * @module
 */

import { Greeting } from "../_handshake/greeting.ts";
import { greetServer } from "../_handshake/greet_server.ts";
import { HANDSHAKE_FRAME_BYTES, type ResumeRequest } from "../_handshake/messages.ts";
import { clientTlsError, serverSpeaksTls, spokeTls } from "../_link/tls.ts";
import { DEFAULT_HEARTBEAT_MS, DEFAULT_IDLE_TIMEOUT_MS } from "../_link/keepalive.ts";
import { pause, startDeadline, within } from "../_util/wait.ts";
import { TimeoutError } from "../errors.ts";
import type { ConnectOptions, Welcome } from "../types.ts";

/** The default time `connect()` has for the connection and the handshake. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** How often `waitForServer` tries again. */
const RETRY_MS = 100;

/** The options of `connect()`, with the frame limit validated. */
export type DialOptions = ConnectOptions & { maxFrameBytes: number; maxMessageBytes: number };

/** A connection whose handshake is done, and what the server said. */
export interface Dialed {
  /** The handshake's connection: release its link to a session, or close it. */
  readonly greeting: Greeting;
  /** The server's welcome. */
  readonly welcome: Welcome;
}

/**
 * Opens a connection and runs the handshake, as a new session or as the
 * resume of `resume`.
 *
 * @param options The options of `connect()`.
 * @param timeout Milliseconds for the whole of it.
 * @param cancel Cancels it.
 * @param waitForServer Whether a refused connection is tried again until the timeout.
 * @param resume The session to resume, if any.
 * @returns The handshaken connection and the welcome.
 * @throws {TimeoutError} If it took longer than `timeout`.
 * @throws {RejectedError} If the server refused the client.
 * @throws {AuthenticationError} If either side failed to prove the secret (or TLS trust failed).
 * @throws {ProtocolError} If the server answered nonsense (or speaks TLS to a plain client).
 * @throws {Deno.errors.ConnectionRefused} If nothing listens there (unless `waitForServer`).
 */
export async function dial(
  options: DialOptions,
  timeout: number,
  cancel: AbortSignal | undefined,
  waitForServer: boolean,
  resume?: ResumeRequest,
): Promise<Dialed> {
  const hostname = options.hostname ?? "127.0.0.1";
  const where = `${hostname}:${options.port}`;
  const timer = new AbortController();
  const timeoutId = setTimeout(() =>
    timer.abort(
      new TimeoutError(
        `Connect timed out after ${options.timeout ?? DEFAULT_CONNECT_TIMEOUT_MS} ms: ${where}`,
      ),
    ), timeout);
  const signal = cancel ? AbortSignal.any([timer.signal, cancel]) : timer.signal;
  try {
    const conn = await open(options, hostname, signal, waitForServer);
    const greeting = new Greeting(conn, {
      peerIsServer: true,
      handshakeFrameBytes: Math.min(HANDSHAKE_FRAME_BYTES, options.maxFrameBytes),
      heartbeatMs: options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS,
      idleTimeout: options.idleTimeout ?? DEFAULT_IDLE_TIMEOUT_MS,
    });
    try {
      const welcome = await greetServer(greeting, signal, {
        name: options.name,
        secret: options.secret,
        props: options.props,
        maxMessageBytes: options.maxMessageBytes,
        resume,
      });
      return { greeting, welcome };
    } catch (error) {
      await greeting.close();
      throw options.tls === undefined && spokeTls(error) ? serverSpeaksTls(where, error) : error;
    }
  } finally {
    clearTimeout(timeoutId);
  }
}

/** The TCP connection, and TLS over it if asked: its handshake done, so that it fails as itself. */
async function open(
  options: DialOptions,
  hostname: string,
  signal: AbortSignal,
  waitForServer: boolean,
): Promise<Deno.Conn> {
  const tcp = await connectTcp(hostname, options.port, signal, waitForServer);
  if (options.tls === undefined) return tcp;
  tcp.setNoDelay(true);
  let tls: Deno.TlsConn | undefined;
  try {
    tls = await Deno.startTls(tcp, {
      hostname: options.tls.hostname ?? hostname,
      caCerts: options.tls.caCerts,
    });
    using deadline = startDeadline({ signal }, () => ({
      what: "Connect",
      detail: "",
      clientIds: [],
    }));
    await within(tls.handshake(), deadline);
    return tls;
  } catch (error) {
    try {
      (tls ?? tcp).close(); // startTls took over the TCP connection
    } catch {
      // Closed already.
    }
    throw clientTlsError(error, `${hostname}:${options.port}`, options.tls.hostname ?? hostname);
  }
}

/** Opens the TCP connection, retrying refused attempts until `signal` aborts if `retry`. */
async function connectTcp(
  hostname: string,
  port: number,
  signal: AbortSignal,
  retry: boolean,
): Promise<Deno.TcpConn> {
  while (true) {
    try {
      return await Deno.connect({ hostname, port, transport: "tcp", signal });
    } catch (error) {
      if (!retry || !(error instanceof Deno.errors.ConnectionRefused)) throw error;
    }
    await pause(RETRY_MS, signal);
    if (signal.aborted) throw signal.reason;
  }
}
