/**
 * The client's side of the handshake: hello, the challenge if the server
 * sends one, welcome (PROTOCOL.md §6.6).
 *
 * @module
 */

import {
  type AuthKey,
  importSecret,
  nonce,
  NONCE_BYTES,
  prove,
  secretBytes,
  verify,
} from "./auth.ts";
import type { Greeting } from "./greeting.ts";
import { receive, type ResumeRequest, sendHandshake, TOKEN_BYTES } from "./messages.ts";
import { type Deadline, startDeadline } from "../_util/wait.ts";
import { AuthenticationError, ProtocolError } from "../errors.ts";
import { type Props, PROTOCOL_VERSION, type Secret, type Welcome } from "../types.ts";

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
  /** The largest long message it takes (0 or absent: none, and the key is left out). */
  readonly maxMessageBytes?: number;
}

/**
 * The client side: hello, the challenge if the server sends one, welcome.
 *
 * @param greeting The new connection.
 * @param signal Cancels the handshake (and carries its time limit).
 * @param credentials The client's name and secret.
 * @returns The welcome.
 * @throws {RejectedError} If the server refuses the client.
 * @throws {AuthenticationError} If the server does not prove it knows the secret.
 * @throws {ProtocolError} If the server answers nonsense.
 */
export async function greetServer(
  greeting: Greeting,
  signal: AbortSignal | undefined,
  credentials: Credentials = {},
): Promise<Welcome> {
  const { name, secret, props, resume, maxMessageBytes } = credentials;
  using deadline = startDeadline(
    { signal },
    () => ({ what: "Handshake", detail: "", clientIds: [] }),
  );
  const key = secret === undefined ? undefined : importSecret(secretBytes(secret, "secret"));
  const clientNonce = key === undefined ? undefined : nonce();
  await sendHandshake(greeting, {
    fedcomm: PROTOCOL_VERSION,
    type: "hello",
    ...(name === undefined ? {} : { name }),
    ...(clientNonce === undefined ? {} : { nonce: clientNonce }),
    ...(props === undefined ? {} : { props }),
    ...(maxMessageBytes ? { maxMessageBytes } : {}),
    ...(resume === undefined ? {} : { resume }),
  });
  const answer = key === undefined
    ? await receive(greeting, deadline, "welcome")
    : await authenticate(greeting, deadline, key, clientNonce!, name ?? "");
  return checkWelcome(answer, key !== undefined, resume);
}

/** The challenge: checks the server's proof, sends the client's, takes the welcome. */
async function authenticate(
  greeting: Greeting,
  deadline: Deadline,
  key: AuthKey,
  clientNonce: Uint8Array,
  name: string,
): Promise<Record<string, unknown>> {
  const challenge = await receive(greeting, deadline, "challenge", "welcome");
  if (challenge.type === "welcome") {
    throw new AuthenticationError(
      "Server did not authenticate: it welcomed this client without a challenge",
    );
  }
  const serverNonce = challenge.nonce;
  if (!(serverNonce instanceof Uint8Array) || serverNonce.byteLength !== NONCE_BYTES) {
    throw new ProtocolError(`Invalid challenge: "nonce" is not ${NONCE_BYTES} bytes`);
  }
  if (!verify(key, "server", challenge.proof, clientNonce, serverNonce, name)) {
    throw new AuthenticationError(
      "Server failed authentication: its proof does not match " +
        "(wrong secret, unknown name, or not the real server)",
    );
  }
  const proof = prove(key, "client", clientNonce, serverNonce, name);
  await sendHandshake(greeting, { fedcomm: PROTOCOL_VERSION, type: "auth", proof });
  return await receive(greeting, deadline, "welcome");
}

/** Checks a welcome's fields (and that it resumed what was asked). */
function checkWelcome(
  answer: Record<string, unknown>,
  authenticated: boolean,
  resume: ResumeRequest | undefined,
): Welcome {
  const { id, clients, maxFrameBytes, token, grace = 0, received = 0, resumed = false } = answer;
  const { maxMessageBytes = 0 } = answer;
  const count = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0;
  if (
    !count(id) || !count(clients) || !count(maxFrameBytes) || !count(grace) ||
    !count(received) || typeof resumed !== "boolean" || !count(maxMessageBytes) ||
    token !== undefined && !(token instanceof Uint8Array && token.byteLength === TOKEN_BYTES) ||
    (grace as number) > 0 && token === undefined
  ) {
    throw new ProtocolError(
      `Invalid welcome: id "${id}", clients "${clients}", maxFrameBytes "${maxFrameBytes}", ` +
        `grace "${grace}", received "${received}", maxMessageBytes "${maxMessageBytes}"`,
    );
  }
  if (resume !== undefined && (!resumed || id !== resume.id)) {
    throw new ProtocolError(
      `Invalid welcome: asked to resume client "${resume.id}", got ${
        resumed ? "" : "a new session as "
      }client "${id}"`,
    );
  }
  return {
    id: id as number,
    clients: clients as number,
    maxFrameBytes: maxFrameBytes as number,
    authenticated,
    token: token as Uint8Array | undefined,
    grace: grace as number,
    received: received as number,
    resumed: resumed as boolean,
    maxMessageBytes: maxMessageBytes as number,
  };
}
