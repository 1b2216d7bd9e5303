/**
 * Authenticated messages between the root and its edges: HMAC-SHA-256 with a
 * secret per edge, over the exact bytes of the message body.
 *
 * Why an HMAC rather than NATS permissions alone: it works on any NATS
 * deployment (no operator, accounts or per-user permissions to keep in step
 * with the root's list of edges), it authenticates the content end to end
 * (through NATS servers, clusters and the stream's disk, which are then not
 * trusted with integrity), it survives persistence (a partial replayed from
 * the stream is still checked), and the body names the job's run, the round
 * and the edge, so that a recorded message cannot be replayed into another
 * round or passed off as another edge's. The partial aggregate's tensors are
 * covered too: the body names their object by its SHA-256, which the root
 * checks on reading. NATS permissions (each edge's user allowed to publish
 * only on its own subject) add a second wall and are recommended on shared
 * NATS servers.
 *
 * Wire form: `{ body: bin, mac: bin }` (edge → root) or
 * `{ body: bin, macs: { edge: bin } }` (root → edges: one MAC per edge, so that
 * no edge can forge the root's tasks for the others), MessagePack.
 *
 * @module
 */

import { decode, encode } from "../codec.ts";
import type { Secret } from "../types.ts";

/** Each direction's label, MACed before the body so that a MAC of one is none of the other. */
const LABELS = {
  up: new TextEncoder().encode("fedcomm/nats/1 up\n"),
  down: new TextEncoder().encode("fedcomm/nats/1 down\n"),
};

/** A message refused: not authentic, not well formed, or not from a known edge. */
export class Refused extends Error {
  /**
   * @param message Why, in sentence case.
   */
  constructor(message: string) {
    super(message);
    this.name = "Refused";
  }
}

function secretBytes(secret: Secret, who: string): Uint8Array<ArrayBuffer> {
  const bytes = typeof secret === "string" ? new TextEncoder().encode(secret) : secret;
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`Invalid secret for edge "${who}": not a string or Uint8Array`);
  }
  if (bytes.byteLength < 16) {
    throw new RangeError(
      `Invalid secret for edge "${who}": "${bytes.byteLength}" bytes, at least 16`,
    );
  }
  return new Uint8Array(bytes); // a copy: the caller may change theirs
}

/**
 * Imports an edge's secret as an HMAC-SHA-256 key.
 *
 * @param secret The secret (at least 16 bytes).
 * @param edge The edge's name, for errors.
 * @returns The key.
 * @throws {TypeError} If it is not a string or bytes.
 * @throws {RangeError} If it is shorter than 16 bytes.
 */
export async function importKey(secret: Secret, edge: string): Promise<CryptoKey> {
  const raw = secretBytes(secret, edge);
  return await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
    "verify",
  ]);
}

function labelled(direction: keyof typeof LABELS, body: Uint8Array): Uint8Array<ArrayBuffer> {
  const label = LABELS[direction];
  const data = new Uint8Array(label.byteLength + body.byteLength);
  data.set(label);
  data.set(body, label.byteLength);
  return data;
}

async function sign(key: CryptoKey, direction: keyof typeof LABELS, body: Uint8Array) {
  return new Uint8Array(await crypto.subtle.sign("HMAC", key, labelled(direction, body)));
}

/**
 * Seals an edge's message to the root.
 *
 * @param key The edge's key.
 * @param body The message (a MessagePack map).
 * @returns The bytes to publish.
 */
export async function sealUp(key: CryptoKey, body: Record<string, unknown>): Promise<Uint8Array> {
  const bytes = encode(body);
  return encode({ body: bytes, mac: await sign(key, "up", bytes) });
}

/**
 * Seals the root's message to every edge: one MAC per edge.
 *
 * @param keys The edges' keys by name.
 * @param body The message.
 * @returns The bytes to publish.
 */
export async function sealDown(
  keys: ReadonlyMap<string, CryptoKey>,
  body: Record<string, unknown>,
): Promise<Uint8Array> {
  const bytes = encode(body);
  const macs = new Map<string, Uint8Array>();
  for (const [edge, key] of keys) macs.set(edge, await sign(key, "down", bytes));
  return encode({ body: bytes, macs });
}

/** The map of a decoded envelope or body, or a refusal. */
function mapOf(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Refused(`${what} is not a map`);
  }
  return value as Record<string, unknown>;
}

function decodeOrRefuse(bytes: Uint8Array, what: string): Record<string, unknown> {
  try {
    return mapOf(decode(bytes), what);
  } catch (error) {
    if (error instanceof Refused) throw error;
    throw new Refused(`${what} is not MessagePack: ${(error as Error).message}`);
  }
}

async function verified(
  key: CryptoKey,
  direction: keyof typeof LABELS,
  body: unknown,
  mac: unknown,
  who: string,
): Promise<Record<string, unknown>> {
  if (!(body instanceof Uint8Array) || !(mac instanceof Uint8Array)) {
    throw new Refused(`Message from ${who} has no body or MAC`);
  }
  const ok = await crypto.subtle.verify(
    "HMAC",
    key,
    new Uint8Array(mac),
    labelled(direction, body),
  );
  if (!ok) throw new Refused(`Message from ${who} has a bad HMAC: not sealed with its secret`);
  return decodeOrRefuse(body, `Message body from ${who}`);
}

/**
 * Opens an edge's message: the edge must be known and the MAC made with its key.
 *
 * @param keys The known edges' keys.
 * @param edge The edge the subject names.
 * @param bytes The message.
 * @returns The body, a map.
 * @throws {Refused} If the edge is unknown, the MAC is wrong or the message malformed.
 */
export async function openUp(
  keys: ReadonlyMap<string, CryptoKey>,
  edge: string,
  bytes: Uint8Array,
): Promise<Record<string, unknown>> {
  const key = keys.get(edge);
  if (key === undefined) throw new Refused(`Message from "${edge}" is not from a known edge`);
  const envelope = decodeOrRefuse(bytes, `Message from "${edge}"`);
  const body = await verified(key, "up", envelope.body, envelope.mac, `"${edge}"`);
  if (body.edge !== edge) {
    throw new Refused(`Message from "${edge}" names another edge: "${String(body.edge)}"`);
  }
  return body;
}

/**
 * Opens the root's message as one edge: its MAC for this edge must verify.
 *
 * @param key This edge's key.
 * @param edge This edge's name.
 * @param bytes The message.
 * @returns The body, a map.
 * @throws {Refused} If the MAC for this edge is missing or wrong, or the message malformed.
 */
export async function openDown(
  key: CryptoKey,
  edge: string,
  bytes: Uint8Array,
): Promise<Record<string, unknown>> {
  const envelope = decodeOrRefuse(bytes, "Message from the root");
  const macs = mapOf(envelope.macs ?? null, "Message from the root's MAC list");
  const mac = Object.hasOwn(macs, edge) ? macs[edge] : undefined;
  return await verified(key, "down", envelope.body, mac, `the root to "${edge}"`);
}
