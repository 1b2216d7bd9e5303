/**
 * The handshake (PROTOCOL.md §6–§7): control frames of kind `c1 03`, each a
 * MessagePack map with `fedcomm` (the protocol version) and `type`.
 *
 * The client sends `hello` (with its `name`, and a `nonce` if it has a
 * secret). A server that requires authentication answers with a `challenge`
 * (its nonce and its proof), the client checks the proof and sends `auth`
 * (its own proof). The server ends with `welcome` (the client's id) or
 * `reject` (a reason), then closes. Readers ignore keys they do not know.
 *
 * @module
 */

import {
  importSecret,
  nonce,
  NONCE_BYTES,
  prove,
  type Secret,
  secretBytes,
  verify,
} from "./_auth.ts";
import type { Connection } from "./_connection.ts";
import { handshakeFrame, PlainFrame } from "./_control.ts";
import { encodeFrame } from "./_encode_frame.ts";
import { type Deadline, startDeadline } from "./_wait.ts";
import {
  AuthenticationError,
  PeerDisconnectedError,
  ProtocolError,
  RejectedError,
  type RejectReason,
} from "./errors.ts";

/** The protocol version this library speaks. */
export const PROTOCOL_VERSION = 3;
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

/** Client metadata sent in the hello: a few small values by name. */
export type Props = Readonly<Record<string, string | number | boolean | null>>;

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

/**
 * Checks a hello's `props` (PROTOCOL.md §6.1).
 *
 * @param props The value.
 * @returns What is wrong with it, or `undefined`.
 */
export function propsProblem(props: unknown): string | undefined {
  if (
    typeof props !== "object" || props === null || Array.isArray(props) || ArrayBuffer.isView(props)
  ) {
    return "it is not a map";
  }
  const entries = Object.entries(props);
  if (entries.length > MAX_PROPS) return `${entries.length} entries, more than ${MAX_PROPS}`;
  for (const [key, value] of entries) {
    const keyBytes = utf8.encode(key).byteLength;
    if (keyBytes < 1 || keyBytes > MAX_PROP_KEY_BYTES) {
      return `key "${key}" is not 1 to ${MAX_PROP_KEY_BYTES} bytes`;
    }
    if (typeof value === "string") {
      if (utf8.encode(value).byteLength > MAX_PROP_VALUE_BYTES) {
        return `value of "${key}" is over ${MAX_PROP_VALUE_BYTES} bytes`;
      }
    } else if (
      !(value === null || typeof value === "boolean" ||
        typeof value === "number" && Number.isFinite(value))
    ) {
      return `value of "${key}" is not a string, number, boolean or null`;
    }
  }
  return undefined;
}

/** What the client learns from the server's welcome. */
export interface Welcome {
  /**
   * This client's id: `0 … clients − 1` with fixed membership; with open
   * membership ids are never reused, so they grow past `clients`.
   */
  readonly id: number;
  /** How many clients the server serves. */
  readonly clients: number;
  /** The largest frame body the server accepts. */
  readonly maxFrameBytes: number;
  /** Whether both sides proved they know the shared secret. */
  readonly authenticated: boolean;
  /** The session's resume token (absent when the server offers no resume). */
  readonly token: Uint8Array | undefined;
  /** How long the server waits for a resume after a drop, in ms (0: no resume). */
  readonly grace: number;
  /** How many of the client's messages the server received (a resume). */
  readonly received: number;
  /** Whether this welcome resumed the session asked for. */
  readonly resumed: boolean;
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
}

/** The server's keys: one for the cohort, or one per client name. */
export type KeyLookup = (name: string | undefined) => Promise<CryptoKey | undefined>;

/** Sends a handshake message (a `c1 03` control frame) and waits until it is written. */
async function sendHandshake(
  connection: Connection,
  message: Record<string, unknown>,
): Promise<void> {
  await connection.sendControl(handshakeFrame(message));
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) &&
    !ArrayBuffer.isView(value) && !(value instanceof PlainFrame);
}

/** Takes the next handshake message, checking its envelope. */
async function receive(
  connection: Connection,
  deadline: Deadline,
  expected: string,
  alsoAccepted?: string,
): Promise<Record<string, unknown>> {
  const value = await connection.nextHandshake(deadline);
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

/** What a client says of itself in its hello. */
export interface Credentials {
  /** Its name (at most 128 UTF-8 bytes). */
  readonly name?: string;
  /** The shared secret, if the server requires authentication. */
  readonly secret?: Secret;
  /** Its metadata. */
  readonly props?: Props;
  /** The session it resumes. */
  readonly resume?: ResumeRequest;
}

/**
 * The client side: hello, the challenge if the server sends one, welcome.
 *
 * @param connection The new connection.
 * @param signal Cancels the handshake (and carries its time limit).
 * @param credentials The client's name and secret.
 * @returns The welcome.
 * @throws {RejectedError} If the server refuses the client.
 * @throws {AuthenticationError} If the server does not prove it knows the secret.
 * @throws {ProtocolError} If the server answers nonsense.
 */
export async function greetServer(
  connection: Connection,
  signal: AbortSignal | undefined,
  credentials: Credentials = {},
): Promise<Welcome> {
  const { name, secret, props, resume } = credentials;
  using deadline = startDeadline(
    { signal },
    () => ({ what: "Handshake", detail: "", clientIds: [] }),
  );
  const key = secret === undefined ? undefined : await importSecret(secretBytes(secret, "secret"));
  const clientNonce = key === undefined ? undefined : nonce();
  await sendHandshake(connection, {
    fedcomm: PROTOCOL_VERSION,
    type: "hello",
    ...(name === undefined ? {} : { name }),
    ...(clientNonce === undefined ? {} : { nonce: clientNonce }),
    ...(props === undefined ? {} : { props }),
    ...(resume === undefined ? {} : { resume }),
  });
  let answer = key === undefined
    ? await receive(connection, deadline, "welcome")
    : await receive(connection, deadline, "challenge", "welcome");
  if (key !== undefined && answer.type === "welcome") {
    throw new AuthenticationError(
      "Server did not authenticate: it welcomed this client without a challenge",
    );
  }
  if (key !== undefined) {
    const serverNonce = answer.nonce;
    if (!(serverNonce instanceof Uint8Array) || serverNonce.byteLength !== NONCE_BYTES) {
      throw new ProtocolError(`Invalid challenge: "nonce" is not ${NONCE_BYTES} bytes`);
    }
    if (!await verify(key, "server", answer.proof, clientNonce!, serverNonce, name ?? "")) {
      throw new AuthenticationError(
        "Server failed authentication: its proof does not match " +
          "(wrong secret, unknown name, or not the real server)",
      );
    }
    const proof = await prove(key, "client", clientNonce!, serverNonce, name ?? "");
    await sendHandshake(connection, { fedcomm: PROTOCOL_VERSION, type: "auth", proof });
    answer = await receive(connection, deadline, "welcome");
  }
  const { id, clients, maxFrameBytes, token, grace = 0, received = 0, resumed = false } = answer;
  const count = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0;
  if (
    !count(id) || !count(clients) || !count(maxFrameBytes) || !count(grace) ||
    !count(received) || typeof resumed !== "boolean" ||
    token !== undefined && !(token instanceof Uint8Array && token.byteLength === TOKEN_BYTES) ||
    (grace as number) > 0 && token === undefined
  ) {
    throw new ProtocolError(
      `Invalid welcome: id "${id}", clients "${clients}", maxFrameBytes "${maxFrameBytes}", ` +
        `grace "${grace}", received "${received}"`,
    );
  }
  if (resume !== undefined && (!resumed || id !== resume.id)) {
    throw new ProtocolError(
      `Invalid welcome: asked to resume client "${resume.id}", got ${
        resumed ? "" : "a new session as "
      }client "${id}"`,
    );
  }
  connection.open(id as number, maxFrameBytes as number);
  return {
    id: id as number,
    clients: clients as number,
    maxFrameBytes: maxFrameBytes as number,
    authenticated: key !== undefined,
    token: token as Uint8Array | undefined,
    grace: grace as number,
    received: received as number,
    resumed: resumed as boolean,
  };
}

/**
 * The server side: waits for hello and, with `keys`, runs the challenge.
 * The caller then assigns an id and calls {@linkcode welcome}, or {@linkcode reject}.
 *
 * @param connection The accepted connection.
 * @param deadline The handshake's deadline.
 * @param keys The secrets to check, or `undefined` if no authentication is required.
 * @param helloDeadline The deadline of the hello, the first message (default: `deadline`).
 * @param onHello Called when the hello arrived, before it is checked.
 * @returns Who the client is, or why to refuse it.
 * @throws {TimeoutError} If the handshake did not complete in time.
 * @throws {PeerDisconnectedError} If the peer left.
 * @throws {ProtocolError} If a frame is not MessagePack.
 */
export async function greetClient(
  connection: Connection,
  deadline: Deadline,
  keys: KeyLookup | undefined,
  helloDeadline: Deadline = deadline,
  onHello?: () => void,
): Promise<Hello | Refusal> {
  const hello = await connection.nextHandshake(helloDeadline);
  onHello?.();
  if (hello instanceof PlainFrame) {
    // A map with a `fedcomm` key is a hello in version 1 framing (§6.7),
    // whatever number it claims: told as `version`, in a form it reads.
    const value = hello.value;
    const version = isRecord(value) ? value.fedcomm : undefined;
    if (version === undefined) {
      return {
        reason: "malformed",
        message: "Invalid handshake: expected the hello in a control frame (c1 03)",
        plain: true,
      };
    }
    return {
      reason: "version",
      message: version === PROTOCOL_VERSION
        ? `Unsupported protocol version: client speaks "${version}" in a plain frame (version 1 ` +
          `framing), server ${PROTOCOL_VERSION} reads the hello in a control frame (c1 03)`
        : `Unsupported protocol version: client speaks "${version}", server ${PROTOCOL_VERSION}`,
      plain: true,
    };
  }
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
  const name = hello.name;
  if (
    name !== undefined &&
    (typeof name !== "string" || name === "" ||
      new TextEncoder().encode(name).byteLength > MAX_NAME_BYTES)
  ) {
    return { reason: "malformed", message: `Invalid hello: "name" is not 1–128 bytes of text` };
  }
  const props = hello.props ?? {};
  const problem = propsProblem(props);
  if (problem !== undefined) {
    return { reason: "malformed", message: `Invalid hello: "props": ${problem}` };
  }
  let resume: ResumeRequest | undefined;
  if (hello.resume !== undefined) {
    const r = hello.resume as Record<string, unknown>;
    if (
      !isRecord(r) || !Number.isSafeInteger(r.id) || (r.id as number) < 0 ||
      !(r.token instanceof Uint8Array) || !Number.isSafeInteger(r.received) ||
      (r.received as number) < 0
    ) {
      return {
        reason: "malformed",
        message: `Invalid hello: "resume" is not a map of id, token and received`,
      };
    }
    resume = { id: r.id as number, token: r.token, received: r.received as number };
  }
  const known = { name, props: props as Props, ...(resume === undefined ? {} : { resume }) };
  if (keys === undefined) return { ...known, authenticated: false };
  const clientNonce = hello.nonce;
  if (!(clientNonce instanceof Uint8Array) || clientNonce.byteLength !== NONCE_BYTES) {
    return { reason: "auth", name, message: "Authentication required: the hello has no nonce" };
  }
  const forName = name === undefined ? "" : ` for "${name}"`;
  // An unknown name gets a challenge under a random key, so a prober learns
  // nothing about which names exist.
  const key = await keys(name) ?? await importSecret(nonce());
  const serverNonce = nonce();
  await sendHandshake(connection, {
    fedcomm: PROTOCOL_VERSION,
    type: "challenge",
    nonce: serverNonce,
    proof: await prove(key, "server", clientNonce, serverNonce, name ?? ""),
  });
  let auth: unknown;
  try {
    auth = await connection.nextHandshake(deadline);
  } catch (error) {
    if (!(error instanceof PeerDisconnectedError)) throw error;
    // A client checks the server's proof first, and leaves when it fails.
    return {
      reason: "auth",
      name,
      message: `Authentication failed${forName}: the client left after the server's proof ` +
        "(its secret differs from the server's, or it is not this server's client)",
    };
  }
  if (!isRecord(auth) || auth.type !== "auth" || auth.fedcomm !== PROTOCOL_VERSION) {
    return { reason: "malformed", name, message: `Invalid handshake: expected an "auth" map` };
  }
  if (!await verify(key, "client", auth.proof, clientNonce, serverNonce, name ?? "")) {
    return { reason: "auth", name, message: `Authentication failed${forName}` };
  }
  return { ...known, authenticated: true };
}

/**
 * Sends a reject and closes the connection. Never throws.
 *
 * @param connection The connection to turn away.
 * @param refusal The reason and explanation.
 */
export async function reject(connection: Connection, refusal: Refusal): Promise<void> {
  const message = {
    fedcomm: PROTOCOL_VERSION,
    type: "reject",
    reason: refusal.reason,
    message: refusal.message,
  };
  try {
    if (refusal.plain) {
      // The reject a version 1 peer can read: a plain MessagePack frame.
      const { chunks } = encodeFrame(message, connection.sendMaxFrameBytes);
      const frame = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
      let at = 0;
      for (const chunk of chunks) {
        frame.set(chunk, at);
        at += chunk.byteLength;
      }
      await connection.sendControl(frame);
    } else {
      await sendHandshake(connection, message);
    }
  } catch {
    // The peer is already gone: nothing to tell it.
  }
  await connection.close();
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
  });
}

/**
 * Sends the welcome of a new session and opens the connection.
 *
 * @param connection The connection that said hello.
 * @param id The id assigned.
 * @param fields The rest of the welcome.
 * @returns Resolves when sent.
 */
export async function welcome(
  connection: Connection,
  id: number,
  fields: WelcomeFields,
): Promise<void> {
  connection.open(id);
  await connection.sendControl(welcomeFrame(id, fields));
}
