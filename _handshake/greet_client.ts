/**
 * The server's side of the handshake: the hello, the challenge if the
 * server requires authentication, or a reject (PROTOCOL.md §6.5).
 *
 * @module
 */

import { importSecret, type KeyLookup, nonce, NONCE_BYTES, prove, verify } from "./auth.ts";
import { type Greeting, PlainFrame } from "./greeting.ts";
import {
  type Hello,
  isRecord,
  MAX_NAME_BYTES,
  propsProblem,
  type Refusal,
  type ResumeRequest,
  sendHandshake,
} from "./messages.ts";
import { encodeFrame } from "../_codec/encode_frame.ts";
import { joinChunks } from "../_codec/encode.ts";
import type { Deadline } from "../_util/wait.ts";
import { PeerDisconnectedError } from "../errors.ts";
import { type Props, PROTOCOL_VERSION } from "../types.ts";

/** A hello's fields, checked: what the server knows before any authentication. */
type Claimed = Omit<Hello, "authenticated">;

/**
 * The server side: waits for hello and, with `keys`, runs the challenge.
 * The caller then assigns an id and builds the session (with the welcome),
 * or calls {@linkcode reject}.
 *
 * @param greeting The accepted connection.
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
  greeting: Greeting,
  deadline: Deadline,
  keys: KeyLookup | undefined,
  helloDeadline: Deadline = deadline,
  onHello?: () => void,
): Promise<Hello | Refusal> {
  const hello = await greeting.next(helloDeadline);
  onHello?.();
  const claimed = checkHello(hello);
  if ("reason" in claimed) return claimed;
  if (keys === undefined) return { ...claimed, authenticated: false };
  const clientNonce = (hello as Record<string, unknown>).nonce;
  if (!(clientNonce instanceof Uint8Array) || clientNonce.byteLength !== NONCE_BYTES) {
    const name = claimed.name;
    return { reason: "auth", name, message: "Authentication required: the hello has no nonce" };
  }
  return await challenge(greeting, deadline, keys, claimed, clientNonce);
}

/** Checks a hello: the client's claims, or why to refuse it. */
function checkHello(hello: unknown): Claimed | Refusal {
  if (hello instanceof PlainFrame) return plainHello(hello.value);
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
    return { reason: "malformed", message: `Invalid hello: "props": ${problem.message}` };
  }
  const { maxMessageBytes } = hello;
  if (
    maxMessageBytes !== undefined &&
    !(Number.isSafeInteger(maxMessageBytes) && (maxMessageBytes as number) >= 0)
  ) {
    return {
      reason: "malformed",
      message: `Invalid hello: "maxMessageBytes" is not an integer from 0 to 2^53-1`,
    };
  }
  const claimed = {
    name,
    props: props as Props,
    ...(maxMessageBytes === undefined ? {} : { maxMessageBytes: maxMessageBytes as number }),
  };
  if (hello.resume === undefined) return claimed;
  const resume = checkResume(hello.resume);
  if (resume === undefined) {
    return {
      reason: "malformed",
      message: `Invalid hello: "resume" is not a map of id, token and received`,
    };
  }
  return { ...claimed, resume };
}

/**
 * A hello in a plain frame: a map with a `fedcomm` key is a hello in
 * version 1 framing (§6.7), whatever number it claims, told as `version` in
 * a form it reads.
 */
function plainHello(value: unknown): Refusal {
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

/** A hello's `resume`, or `undefined` if it is not a map of id, token and received. */
function checkResume(r: unknown): ResumeRequest | undefined {
  if (
    !isRecord(r) || !Number.isSafeInteger(r.id) || (r.id as number) < 0 ||
    !(r.token instanceof Uint8Array) || !Number.isSafeInteger(r.received) ||
    (r.received as number) < 0
  ) {
    return undefined;
  }
  return { id: r.id as number, token: r.token, received: r.received as number };
}

/** The challenge: the server's proof, then the client's, checked. */
async function challenge(
  greeting: Greeting,
  deadline: Deadline,
  keys: KeyLookup,
  claimed: Claimed,
  clientNonce: Uint8Array,
): Promise<Hello | Refusal> {
  const name = claimed.name;
  const forName = name === undefined ? "" : ` for "${name}"`;
  // An unknown name gets a challenge under a random key, so a prober learns
  // nothing about which names exist.
  const key = keys(name) ?? importSecret(nonce());
  const serverNonce = nonce();
  await sendHandshake(greeting, {
    fedcomm: PROTOCOL_VERSION,
    type: "challenge",
    nonce: serverNonce,
    proof: prove(key, "server", clientNonce, serverNonce, name ?? ""),
  });
  let auth: unknown;
  try {
    auth = await greeting.next(deadline);
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
  if (!verify(key, "client", auth.proof, clientNonce, serverNonce, name ?? "")) {
    return { reason: "auth", name, message: `Authentication failed${forName}` };
  }
  return { ...claimed, authenticated: true };
}

/**
 * Sends a reject and closes the connection. Never throws.
 *
 * @param greeting The connection to turn away.
 * @param refusal The reason and explanation.
 * @param maxFrameBytes The largest body sent (a plain reject may quote a long hello).
 */
export async function reject(
  greeting: Greeting,
  refusal: Refusal,
  maxFrameBytes: number,
): Promise<void> {
  const message = {
    fedcomm: PROTOCOL_VERSION,
    type: "reject",
    reason: refusal.reason,
    message: refusal.message,
  };
  try {
    if (refusal.plain) {
      // The reject a version 1 peer can read: a plain MessagePack frame.
      await greeting.send(joinChunks(encodeFrame(message, maxFrameBytes).chunks));
    } else {
      await sendHandshake(greeting, message);
    }
  } catch {
    // The peer is already gone: nothing to tell it.
  }
  await greeting.close();
}
