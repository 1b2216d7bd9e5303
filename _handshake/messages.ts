/**
 * The handshake's messages (PROTOCOL.md §6–§7): control frames of kind
 * `c1 03`, each a MessagePack map with `fedcomm` (the protocol version) and
 * `type`. The client sends `hello` (its `name`, and a `nonce` if it has a
 * secret); a server that requires authentication answers with a `challenge`
 * (its nonce and proof), the client checks the proof and sends `auth`; the
 * server ends with `welcome` (the client's id) or `reject` (a reason), then
 * closes. Readers ignore keys they do not know. The two sides' steps are in
 * `greet_server.ts` (the client's) and `greet_client.ts` (the server's).
 *
 * @module
 */

import { controlFrame, HANDSHAKE } from "../_wire/control.ts";
import { encodeValue } from "../_codec/encode.ts";
import type { Deadline } from "../_util/wait.ts";
import { ProtocolError, RejectedError, type RejectReason } from "../errors.ts";
import { type Props, PROTOCOL_VERSION } from "../types.ts";
import { type Greeting, PlainFrame } from "./greeting.ts";

/** The largest handshake frame accepted: a peer cannot make us allocate more before it is known. */
export const HANDSHAKE_FRAME_BYTES = 64 * 1024;
/** The default time a connecting peer has for the whole handshake. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** The longest client name, in UTF-8 bytes. */
export const MAX_NAME_BYTES = 128;
/** The most entries of a hello's `props`. */
export const MAX_PROPS = 16;
/** The longest key of a hello's `props`, in UTF-8 bytes. */
export const MAX_PROP_KEY_BYTES = 64;
/** The longest string value of a hello's `props`, in UTF-8 bytes. */
export const MAX_PROP_VALUE_BYTES = 256;
/** Bytes of a resume token. */
export const TOKEN_BYTES = 16;

/** What a client resuming a session says in its hello. */
export interface ResumeRequest {
  /** Its id. */
  readonly id: number;
  /** The token from its welcome. */
  readonly token: Uint8Array;
  /** How many of the server's messages it received on the session. */
  readonly received: number;
}

const utf8 = new TextEncoder();

/** What is wrong with a hello's `props`: a wrong type, or a broken limit. */
export interface PropsProblem {
  /** What is wrong, to follow "Invalid props: ". */
  readonly message: string;
  /** Whether it is the wrong type (a `TypeError`) rather than over a limit (a `RangeError`). */
  readonly wrongType: boolean;
}

/**
 * Checks a hello's `props` (PROTOCOL.md §6.1).
 *
 * @param props The value.
 * @returns What is wrong with it, or `undefined`.
 */
export function propsProblem(props: unknown): PropsProblem | undefined {
  const type = (message: string) => ({ message, wrongType: true });
  const range = (message: string) => ({ message, wrongType: false });
  if (
    typeof props !== "object" || props === null || Array.isArray(props) || ArrayBuffer.isView(props)
  ) {
    return type("it is not a map");
  }
  const entries = Object.entries(props);
  if (entries.length > MAX_PROPS) return range(`${entries.length} entries, more than ${MAX_PROPS}`);
  for (const [key, value] of entries) {
    const keyBytes = utf8.encode(key).byteLength;
    if (keyBytes < 1 || keyBytes > MAX_PROP_KEY_BYTES) {
      return range(`key "${key}" is not 1 to ${MAX_PROP_KEY_BYTES} bytes`);
    }
    if (typeof value === "string") {
      if (utf8.encode(value).byteLength > MAX_PROP_VALUE_BYTES) {
        return range(`value of "${key}" is over ${MAX_PROP_VALUE_BYTES} bytes`);
      }
    } else if (
      !(value === null || typeof value === "boolean" ||
        typeof value === "number" && Number.isFinite(value))
    ) {
      return type(`value of "${key}" is not a string, number, boolean or null`);
    }
  }
  return undefined;
}

/** Why a hello was refused, as sent in the reject. */
export interface Refusal {
  /** The machine-readable reason. */
  readonly reason: RejectReason;
  /** The human-readable explanation. */
  readonly message: string;
  /** Whether to send it as a plain MessagePack frame (to a version 1 peer). */
  readonly plain?: boolean;
  /** The name the hello claimed, for the server's event and log (never sent). */
  readonly name?: string;
}

/** Who a client said it is, once the server accepted its handshake. */
export interface Hello {
  /** The name from its hello, if any. */
  readonly name: string | undefined;
  /** Whether it proved it knows its secret. */
  readonly authenticated: boolean;
  /** Its metadata (empty if it sent none). */
  readonly props: Props;
  /** The session it resumes, if it does. */
  readonly resume?: ResumeRequest;
  /** The largest long message it takes, if it said (PROTOCOL.md §8.8). */
  readonly maxMessageBytes?: number;
}

/**
 * Builds a handshake frame: a `c1 03` control frame with the message map.
 *
 * @param message The map.
 * @returns The whole frame.
 */
export function handshakeFrame(message: Record<string, unknown>): Uint8Array {
  return controlFrame(HANDSHAKE, encodeValue(message));
}

/**
 * Sends a handshake message and waits until it is written.
 *
 * @param greeting The connection in its handshake.
 * @param message The map, `fedcomm` and `type` included.
 * @returns Resolves when written.
 * @throws {PeerDisconnectedError} If the connection is gone.
 */
export async function sendHandshake(
  greeting: Greeting,
  message: Record<string, unknown>,
): Promise<void> {
  await greeting.send(handshakeFrame(message));
}

/**
 * Whether a decoded value is a map (not an array, binary or plain frame).
 *
 * @param value The value.
 * @returns Whether it is a map.
 */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) &&
    !ArrayBuffer.isView(value) && !(value instanceof PlainFrame);
}

/**
 * Takes the next handshake message the server sent, checking its envelope.
 *
 * @param greeting The connection in its handshake.
 * @param deadline The handshake's deadline.
 * @param expected The message type expected.
 * @param alsoAccepted Another type accepted in its place.
 * @returns The message.
 * @throws {RejectedError} If it is a reject.
 * @throws {ProtocolError} If it is not the expected message of this protocol version.
 */
export async function receive(
  greeting: Greeting,
  deadline: Deadline,
  expected: string,
  alsoAccepted?: string,
): Promise<Record<string, unknown>> {
  const value = await greeting.next(deadline);
  if (value instanceof PlainFrame) {
    // A plain reject: a server that refuses a hello it could not read as ours.
    const plain = value.value;
    if (isRecord(plain) && plain.type === "reject") {
      throw new RejectedError(String(plain.reason), String(plain.message));
    }
    throw new ProtocolError(`Invalid handshake: expected a "${expected}" control frame`);
  }
  if (!isRecord(value) || typeof value.type !== "string") {
    throw new ProtocolError(`Invalid handshake: expected a "${expected}" map`);
  }
  if (value.type === "reject") {
    throw new RejectedError(String(value.reason), String(value.message));
  }
  if (value.fedcomm !== PROTOCOL_VERSION) {
    throw new ProtocolError(
      `Unsupported protocol version: peer speaks "${value.fedcomm}", this library ${PROTOCOL_VERSION}`,
    );
  }
  if (value.type !== expected && value.type !== alsoAccepted) {
    throw new ProtocolError(
      `Unexpected handshake message: "${value.type}", expected "${expected}"`,
    );
  }
  return value;
}

/** What a welcome says besides the id. */
export interface WelcomeFields {
  /** How many clients the server serves. */
  readonly clients: number;
  /** The largest body the server accepts. */
  readonly maxFrameBytes: number;
  /** The session's resume token, if resume is on. */
  readonly token: Uint8Array | undefined;
  /** How long the server waits for a resume, in ms. */
  readonly grace: number;
  /** Messages received from the client on this session. */
  readonly received: number;
  /** Whether it resumes a session. */
  readonly resumed: boolean;
  /** The largest long message the server takes: sent when the hello gave its own. */
  readonly maxMessageBytes?: number;
}

/**
 * Builds a welcome frame (PROTOCOL.md §6.2).
 *
 * @param id The client's id.
 * @param fields The rest.
 * @returns The whole frame.
 */
export function welcomeFrame(id: number, fields: WelcomeFields): Uint8Array {
  return handshakeFrame({
    fedcomm: PROTOCOL_VERSION,
    type: "welcome",
    id,
    clients: fields.clients,
    maxFrameBytes: fields.maxFrameBytes,
    ...(fields.token === undefined ? {} : { token: fields.token }),
    grace: fields.grace,
    received: fields.received,
    resumed: fields.resumed,
    ...(fields.maxMessageBytes === undefined ? {} : { maxMessageBytes: fields.maxMessageBytes }),
  });
}
