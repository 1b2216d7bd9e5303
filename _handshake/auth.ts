/**
 * Mutual authentication by challenge and response (PROTOCOL.md §7): both
 * sides prove they know a shared secret with HMAC-SHA256 over both sides'
 * fresh nonces, so the secret never crosses the wire and a recorded
 * handshake cannot be replayed. The HMACs are `node:crypto`'s (synchronous:
 * a third of WebCrypto's cost per proof, which counts when thousands of
 * sites join at once), and proofs are compared in constant time
 * ({@linkcode timingSafeEqual}).
 *
 * @module
 */

import { createHmac, createSecretKey, type KeyObject } from "node:crypto";
import type { AuthOptions, Secret } from "../types.ts";

/** Bytes of each side's nonce and of a proof. */
export const NONCE_BYTES = 32;
/** The shortest secret accepted: a secret must be a random key, not a password. */
export const MIN_SECRET_BYTES = 16;
/** The labels that make the two proofs of one handshake different messages. */
const SERVER_LABEL = new TextEncoder().encode("fedcomm server proof\0");
const CLIENT_LABEL = new TextEncoder().encode("fedcomm client proof\0");

/**
 * Validates a secret and returns its bytes.
 *
 * @param secret The secret.
 * @param what Where it came from, for the message.
 * @returns Its bytes.
 * @throws {TypeError} If it is not a string or a Uint8Array.
 * @throws {RangeError} If it is shorter than 16 bytes.
 */
export function secretBytes(secret: unknown, what: string): Uint8Array<ArrayBuffer> {
  let bytes: Uint8Array<ArrayBuffer>;
  if (typeof secret === "string") bytes = new TextEncoder().encode(secret);
  else if (secret instanceof Uint8Array) bytes = new Uint8Array(secret);
  else throw new TypeError(`Invalid ${what}: expected a string or a Uint8Array`);
  if (bytes.byteLength < MIN_SECRET_BYTES) {
    throw new RangeError(
      `Invalid ${what}: ${bytes.byteLength} bytes is shorter than ${MIN_SECRET_BYTES}; ` +
        `use a random key such as "openssl rand -hex 32"`,
    );
  }
  return bytes;
}

/** A secret as an HMAC-SHA256 key. */
export type AuthKey = KeyObject;

/** The server's keys: one for the cohort, or one per client name. */
export type KeyLookup = (name: string | undefined) => AuthKey | undefined;

/**
 * Imports a secret as an HMAC-SHA256 key.
 *
 * @param secret The validated secret bytes.
 * @returns The key.
 */
export function importSecret(secret: Uint8Array<ArrayBuffer>): AuthKey {
  return createSecretKey(secret);
}

/** A fresh random nonce. */
export function nonce(): Uint8Array<ArrayBuffer> {
  return crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
}

function message(
  label: Uint8Array,
  clientNonce: Uint8Array,
  serverNonce: Uint8Array,
  name: string,
): Uint8Array<ArrayBuffer> {
  const nameBytes = new TextEncoder().encode(name);
  const out = new Uint8Array(label.byteLength + 2 * NONCE_BYTES + nameBytes.byteLength);
  out.set(label);
  out.set(clientNonce, label.byteLength);
  out.set(serverNonce, label.byteLength + NONCE_BYTES);
  out.set(nameBytes, label.byteLength + 2 * NONCE_BYTES);
  return out;
}

/** Which side's proof. */
export type Side = "server" | "client";

/**
 * Computes a proof: HMAC-SHA256(secret, label ‖ client nonce ‖ server nonce ‖ name).
 *
 * @param key The secret as a key.
 * @param side Whose proof.
 * @param clientNonce The client's nonce (32 bytes).
 * @param serverNonce The server's nonce (32 bytes).
 * @param name The client's name ("" for none).
 * @returns The 32-byte proof.
 */
export function prove(
  key: AuthKey,
  side: Side,
  clientNonce: Uint8Array,
  serverNonce: Uint8Array,
  name: string,
): Uint8Array {
  const label = side === "server" ? SERVER_LABEL : CLIENT_LABEL;
  const mac = createHmac("sha256", key).update(message(label, clientNonce, serverNonce, name));
  return new Uint8Array(mac.digest());
}

/**
 * Checks a proof in constant time.
 *
 * @param key The secret as a key.
 * @param side Whose proof it claims to be.
 * @param proof The proof received.
 * @param clientNonce The client's nonce.
 * @param serverNonce The server's nonce.
 * @param name The client's name ("" for none).
 * @returns Whether it is right.
 */
export function verify(
  key: AuthKey,
  side: Side,
  proof: unknown,
  clientNonce: Uint8Array,
  serverNonce: Uint8Array,
  name: string,
): boolean {
  if (!(proof instanceof Uint8Array) || proof.byteLength !== 32) return false;
  return timingSafeEqual(prove(key, side, clientNonce, serverNonce, name), proof);
}

/**
 * The server's secrets as a lookup by client name.
 *
 * @param auth The `auth` option of `listen`.
 * @returns The lookup, or `undefined` without authentication.
 * @throws {TypeError} If both or neither of `secret` and `clients` are given, or a secret is not text or bytes.
 * @throws {RangeError} If a secret is shorter than 16 bytes.
 */
export function keyLookup(auth: AuthOptions | undefined): KeyLookup | undefined {
  if (auth === undefined) return undefined;
  if ((auth.secret === undefined) === (auth.clients === undefined)) {
    throw new TypeError("Invalid auth: give either a secret or clients, not both or neither");
  }
  if (auth.secret !== undefined) {
    const key = importSecret(secretBytes(auth.secret, "auth.secret"));
    return () => key;
  }
  const entries = auth.clients instanceof Map
    ? [...auth.clients]
    : Object.entries(auth.clients as Record<string, Secret>);
  const keys = new Map(entries.map(([name, secret]) => {
    return [name, importSecret(secretBytes(secret, `auth.clients["${name}"]`))] as const;
  }));
  return (name) => name === undefined ? undefined : keys.get(name);
}

/**
 * Compares two byte strings in time that depends only on their lengths (for
 * resume tokens: a prober learns nothing from how long a refusal takes).
 *
 * @param a One.
 * @param b The other.
 * @returns Whether they are equal.
 */
export function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  let diff = 0;
  for (let i = 0; i < a.byteLength; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}
