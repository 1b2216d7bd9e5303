/**
 * The handshake: the first frame each way.
 *
 * The client sends `hello`; the server answers `welcome` (with the client's
 * id and the number of clients) or `reject` (with a reason), then closes.
 * Every handshake message is a MessagePack map with `fedcomm` (the protocol
 * version) and `type`; readers ignore keys they do not know, so a later
 * version can add fields (`auth`, `resume`) without breaking this one, and
 * extra messages (a `challenge` between hello and welcome) for the clients
 * that ask for them in their hello. See PROTOCOL.md §7.
 *
 * @module
 */

import type { Connection } from "./_connection.ts";
import { ProtocolError, RejectedError, type RejectReason } from "./errors.ts";

/** The protocol version this library speaks. */
export const PROTOCOL_VERSION = 1;
/** The largest handshake frame accepted: a peer cannot make us allocate more before it is known. */
export const HANDSHAKE_FRAME_BYTES = 64 * 1024;
/** The default time a connecting peer has to complete the handshake. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

/** What the client learns from the server's welcome. */
export interface Welcome {
  /** This client's id, from 0 to `clients − 1`. */
  readonly id: number;
  /** How many clients the server serves. */
  readonly clients: number;
  /** The largest frame body the server accepts. */
  readonly maxFrameBytes: number;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) &&
    !ArrayBuffer.isView(value);
}

/** Checks the envelope every handshake message shares. */
function envelope(value: unknown, expected: string): Record<string, unknown> {
  if (!isRecord(value) || typeof value.type !== "string") {
    throw new ProtocolError(`Invalid handshake: expected a "${expected}" map`);
  }
  if (value.fedcomm !== PROTOCOL_VERSION && value.type !== "reject") {
    throw new ProtocolError(
      `Unsupported protocol version: peer speaks "${value.fedcomm}", this library ${PROTOCOL_VERSION}`,
    );
  }
  return value;
}

/**
 * The client side: sends hello, waits for welcome.
 *
 * @param connection The new connection.
 * @param signal Cancels the wait (and carries its time limit).
 * @returns The welcome.
 * @throws {ProtocolError} If the server rejects the client or answers nonsense.
 */
export async function greetServer(
  connection: Connection,
  signal: AbortSignal | undefined,
): Promise<Welcome> {
  await connection.send({ fedcomm: PROTOCOL_VERSION, type: "hello" });
  const answer = envelope(await connection.next({ signal }), "welcome");
  if (answer.type === "reject") {
    throw new RejectedError(String(answer.reason), String(answer.message));
  }
  if (answer.type !== "welcome") {
    throw new ProtocolError(`Unsupported handshake message: "${answer.type}"`);
  }
  const { id, clients, maxFrameBytes } = answer;
  if (
    !Number.isSafeInteger(id) || !Number.isSafeInteger(clients) ||
    (id as number) < 0 || (id as number) >= (clients as number) ||
    !Number.isSafeInteger(maxFrameBytes)
  ) {
    throw new ProtocolError(`Invalid welcome: id "${id}", clients "${clients}"`);
  }
  connection.open(id as number, maxFrameBytes as number);
  return { id: id as number, clients: clients as number, maxFrameBytes: maxFrameBytes as number };
}

/**
 * Sends a reject and closes the connection. Never throws.
 *
 * @param connection The connection to turn away.
 * @param reason The machine-readable reason.
 * @param message The human-readable explanation.
 */
export async function reject(
  connection: Connection,
  reason: RejectReason,
  message: string,
): Promise<void> {
  try {
    await connection.send({ fedcomm: PROTOCOL_VERSION, type: "reject", reason, message });
  } catch {
    // The peer is already gone: nothing to tell it.
  }
  await connection.close();
}

/** Why a hello was refused, as sent in the reject. */
export interface Refusal {
  /** The machine-readable reason. */
  readonly reason: RejectReason;
  /** The human-readable explanation. */
  readonly message: string;
}

/**
 * The server side: waits for hello. The caller then assigns an id and calls
 * {@linkcode welcome}, or {@linkcode reject}.
 *
 * @param connection The accepted connection.
 * @param timeout Milliseconds the peer has to say hello.
 * @param signal Cancels the wait.
 * @returns `undefined` for a valid hello, otherwise why to refuse it.
 * @throws {TimeoutError} If no hello came in time.
 * @throws {PeerDisconnectedError} If the peer left.
 * @throws {ProtocolError} If the first frame is not MessagePack.
 */
export async function awaitHello(
  connection: Connection,
  timeout: number,
  signal: AbortSignal | undefined,
): Promise<Refusal | undefined> {
  const hello = await connection.next({ timeout, signal });
  if (!isRecord(hello) || hello.type !== "hello") {
    return { reason: "malformed", message: `Invalid handshake: expected a "hello" map` };
  }
  if (hello.fedcomm !== PROTOCOL_VERSION) {
    return {
      reason: "version",
      message:
        `Unsupported protocol version: client speaks "${hello.fedcomm}", server ${PROTOCOL_VERSION}`,
    };
  }
  return undefined;
}

/**
 * Sends the welcome that assigns `id` and opens the connection.
 *
 * @param connection The connection that said hello.
 * @param id The id assigned.
 * @param clients The number of clients.
 * @returns Resolves when sent.
 */
export async function welcome(connection: Connection, id: number, clients: number): Promise<void> {
  connection.open(id);
  await connection.send({
    fedcomm: PROTOCOL_VERSION,
    type: "welcome",
    id,
    clients,
    maxFrameBytes: connection.maxFrameBytes,
  });
}
