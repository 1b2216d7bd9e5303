/**
 * The protocol test vectors of `testdata/vectors/protocol_v3.json` (format:
 * `testdata/vectors/README.md`), loaded for the tests that check them
 * against the Deno library, with their value form and a decoder. Not
 * published.
 *
 * For every case, two tests (registered by `protocol_vectors_cases.ts`):
 *
 * - "encodes to the vector bytes": what the library really writes on the
 *   wire is exactly the vector's frame. A real server (`listen()`) and a real
 *   client (`connect()`) talk over TCP on localhost to a peer played by the
 *   test (`protocol_vectors_peer.ts`), which sends vectors and records every
 *   byte the library writes: the hello, the welcome, the rejects, the
 *   challenge and the auth, the broadcasts and replies, the acks a session
 *   sends within 10 ms, the pong of a ping, the ping of an idle client, the
 *   close frames, and the hello and welcome of a resume after a cut
 *   connection (the scenarios of `protocol_vectors_server.ts` and
 *   `protocol_vectors_client.ts`). The random bytes of the wire (nonces,
 *   tokens) are the vector's fixed bytes, by a stub of
 *   `crypto.getRandomValues` while the handshake runs. The frames the library
 *   never sends (a version 1 or 2 hello, a heartbeat) come from the public
 *   framing streams and the control-frame builder.
 * - "decodes to the vector value": the frame cut by the public
 *   `FrameDecoderStream`, its body read by `codec.ts`'s `decode` and the
 *   control-frame readers of `_wire/control.ts`, is the vector's value
 *   ({@linkcode decodeFrame}). (The scenarios also check what the library
 *   made of the vectors they sent it: the welcome a client got, the values
 *   received, the replies gathered, the acks taken, the pongs timed, the
 *   hellos and close frames the server saw.)
 *
 * And for every proof of the file, the HMAC-SHA256 of PROTOCOL.md §7.1,
 * computed by the library as a server and as a client
 * (`protocol_vectors_handshake_test.ts`).
 *
 * @module
 */

import assert from "node:assert/strict";
import { decode } from "../codec.ts";
import { FrameDecoderStream } from "../framing.ts";
import { NdArray, type TypedArray } from "../mod.ts";
import * as control from "../_wire/control.ts";
import { Assembly } from "../_session/assembly.ts";

// ---------------------------------------------------------------------------
// The vectors and their value form (testdata/vectors/README.md)

/** A JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** What a case's frame is (a case's `decoded`). */
export interface Decoded {
  /** The kind of frame. */
  kind: "heartbeat" | "plain" | "ping" | "pong" | "handshake" | "ack" | "reply" | "close" | "long";
  /** The value of a plain, handshake or reply frame, in its JSON form. */
  value?: Json;
  /** The payload of a ping or pong, in hex. */
  payload?: string;
  /** The count of an ack. */
  count?: number;
  /** The message a reply (or a long message) answers. */
  request?: number;
  /** A long message's size: header body plus references. */
  size?: number;
}

/** The encoder's choices that give a long message's bytes. */
export interface LongSender {
  /** The frame limit. */
  maxFrameBytes: number;
  /** The least size of a binary sent out of band. */
  refMinBytes: number;
  /** Data bytes per part. */
  partBytes: number;
}

/** One frame of the file. */
export interface Case {
  /** Its unique name. */
  name: string;
  /** What it is. */
  description: string;
  /** Who sends it. */
  direction: "client-to-server" | "server-to-client" | "both";
  /** Its bytes, header included, in lowercase hex. */
  hex: string;
  /** What it decodes to. */
  decoded: Decoded;
  /** A long message's part frames, after its header (`hex`). */
  parts?: string[];
  /** A long message's encoder choices. */
  sender?: LongSender;
}

/** One HMAC-SHA256 known answer of the file (PROTOCOL.md §7.1). */
export interface Proof {
  /** Its unique name. */
  name: string;
  /** What it is. */
  description: string;
  /** The shared secret. */
  secret: string;
  /** The client's nonce, in hex. */
  clientNonce: string;
  /** The server's nonce, in hex. */
  serverNonce: string;
  /** The client's name (`""` for none). */
  clientName: string;
  /** The server's proof, in hex. */
  serverProof: string;
  /** The client's proof, in hex. */
  clientProof: string;
}

const FILE = new URL("../testdata/vectors/protocol_v3.json", import.meta.url);
/** The file's contents. */
export const vectors: { protocol: number; proofs: Proof[]; cases: Case[] } = JSON.parse(
  Deno.readTextFileSync(FILE),
);
/** The cases, by name. */
export const cases: ReadonlyMap<string, Case> = new Map(vectors.cases.map((c) => [c.name, c]));

/** The bytes of lowercase hex. */
export function fromHex(hex: string): Uint8Array {
  assert.match(hex, /^(?:[0-9a-f]{2})*$/, `not lowercase hex: "${hex}"`);
  return Uint8Array.from(hex.match(/../g) ?? [], (byte) => parseInt(byte, 16));
}

/** Bytes in lowercase hex. */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The case of that name. */
export function caseOf(name: string): Case {
  const c = cases.get(name);
  assert.ok(c !== undefined, `no vector "${name}"`);
  return c;
}

/** The bytes of a case's frame, header included. */
export function frameOf(name: string): Uint8Array {
  return fromHex(caseOf(name).hex);
}

/** The JSON form of the value of a case (a handshake, plain or reply frame). */
export function jsonOf(name: string): Json {
  const value = caseOf(name).decoded.value;
  assert.ok(value !== undefined, `"${name}" has no value`);
  return value;
}

/** The value of a case, as the library takes it to send. */
export function valueOf(name: string): unknown {
  return fromJson(jsonOf(name));
}

/** The `type` of the handshake messages (PROTOCOL.md §3). */
const HANDSHAKE_TYPES = ["hello", "welcome", "reject", "challenge", "auth"];

/**
 * Whether a case is a message of the handshake (a map with a handshake
 * `type`, in a handshake control frame or, for version 1, a plain frame);
 * the others are frames of a session.
 */
export function isHandshakeCase(c: Case): boolean {
  const value = c.decoded.value;
  return typeof value === "object" && value !== null && !Array.isArray(value) &&
    HANDSHAKE_TYPES.includes(value.type as string);
}

/** The fixed random bytes of the vectors (testdata/vectors/README.md): the welcome's token. */
export const TOKEN = fromHex("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
/** The token of the welcome a resume presents. */
export const RESUME_TOKEN = fromHex("b0b1b2b3b4b5b6b7b8b9babbbcbdbebf");
/** The token of the authenticated welcome. */
export const AUTH_TOKEN = fromHex("c0c1c2c3c4c5c6c7c8c9cacbcccdcecf");
/** The token of a second client, which no vector shows. */
export const OTHER_TOKEN = fromHex("d0d1d2d3d4d5d6d7d8d9dadbdcdddedf");
/** The proof the authenticated cases carry. */
export const SITE_A: Proof = vectors.proofs.find((p) => p.name === "site-a")!;

/** The typed arrays of the `$ndarray` form, by numpy dtype string. */
const ARRAYS: Record<string, { new (buffer: ArrayBuffer): TypedArray }> = {
  "|i1": Int8Array,
  "<i2": Int16Array,
  "<u2": Uint16Array,
  "<i4": Int32Array,
  "<u4": Uint32Array,
  "<f4": Float32Array,
  "<f8": Float64Array,
};

function isTagged(v: { [key: string]: Json }, tag: string): boolean {
  const keys = Object.keys(v);
  return keys.length === 1 && keys[0] === tag;
}

/** The JSON form of a vector value → the value the library encodes and decodes. */
function fromJson(v: Json): unknown {
  if (v === null || typeof v === "boolean" || typeof v === "string") return v;
  if (typeof v === "number") {
    assert.ok(Number.isSafeInteger(v), `a plain JSON number is an integer: ${v}`);
    return v;
  }
  if (Array.isArray(v)) return v.map(fromJson);
  if (isTagged(v, "$bin")) return fromHex(v.$bin as string);
  if (isTagged(v, "$ndarray")) {
    const { type, shape, data, values } = v.$ndarray as {
      type: string;
      shape: number[];
      data: string;
      values: number[];
    };
    const Typed = ARRAYS[type];
    assert.ok(Typed !== undefined, `unsupported $ndarray type "${type}"`);
    const array = new Typed(fromHex(data).slice().buffer as ArrayBuffer);
    assert.deepStrictEqual([...array as Iterable<number>], values, "values are the data's");
    return shape.length === 1 && shape[0] === array.length ? array : new NdArray(array, shape);
  }
  return Object.fromEntries(Object.entries(v).map(([key, item]) => [key, fromJson(item)]));
}

/** A value from the library → the JSON form (keys in their order), for comparison. */
function toJson(value: unknown): Json {
  if (value === null || typeof value === "boolean" || typeof value === "string") return value;
  if (typeof value === "number") {
    assert.ok(Number.isSafeInteger(value), `not an integer: ${value}`);
    return value;
  }
  if (Array.isArray(value)) return value.map(toJson);
  if (value instanceof Uint8Array) return { $bin: toHex(value) };
  const array = value instanceof NdArray ? value.data : value;
  if (ArrayBuffer.isView(array) && !(array instanceof DataView)) {
    const entry = Object.entries(ARRAYS).find(([, Typed]) => array.constructor === Typed);
    assert.ok(entry !== undefined, `unsupported typed array ${array.constructor.name}`);
    const typed = array as TypedArray;
    return {
      $ndarray: {
        type: entry[0],
        shape: value instanceof NdArray ? [...value.shape] : [typed.length],
        data: toHex(new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength)),
        values: [...typed as Iterable<number>],
      },
    };
  }
  assert.equal(typeof value, "object", `no JSON form for ${String(value)}`);
  return Object.fromEntries(
    Object.entries(value as Record<string, unknown>).map(([key, item]) => [key, toJson(item)]),
  );
}

/** Asserts that a value from the library is the vector value, key order included. */
export function assertValue(actual: unknown, expected: Json): void {
  const json = toJson(actual);
  assert.deepStrictEqual(json, expected);
  assert.equal(JSON.stringify(json), JSON.stringify(expected), "keys in the same order");
}

// ---------------------------------------------------------------------------
// Decoding

/**
 * Cuts the frame (and a long message's parts) with the public frame decoder
 * and reads its body (a long message: with the session's assembly of it).
 */
export async function decodeFrame(frame: Uint8Array, parts: Uint8Array[] = []): Promise<Decoded> {
  const bodies = await Array.fromAsync(
    ReadableStream.from([frame, ...parts]).pipeThrough(new FrameDecoderStream()),
  );
  assert.equal(bodies.length, 1 + parts.length, "one frame, and its parts");
  const body = bodies[0];
  if (body[0] === control.CONTROL && body[1] === control.LONG) {
    const long = new Assembly(body, control.replyTo(body), Number.MAX_SAFE_INTEGER);
    for (const part of bodies.slice(1)) {
      assert.deepStrictEqual([...part.subarray(0, 8)], [0xc1, control.PART, 0, 0, 0, 0, 0, 0]);
      long.part(part.subarray(control.LONG_PREFIX_BYTES));
    }
    assert.ok(long.complete, "the parts fill every reference");
    return { kind: "long", request: long.request, size: long.size, value: toJson(long.value) };
  }
  assert.equal(parts.length, 0, "parts follow a long message's header only");
  if (body.byteLength === 0) return { kind: "heartbeat" };
  if (body[0] !== control.CONTROL) return { kind: "plain", value: toJson(decode(body)) };
  const kind = body[1];
  switch (kind) {
    case control.PING:
    case control.PONG:
      assert.equal(body.byteLength, control.PING_BODY_BYTES);
      return {
        kind: kind === control.PING ? "ping" : "pong",
        payload: toHex(body.subarray(2)),
      };
    case control.HANDSHAKE:
      return { kind: "handshake", value: toJson(decode(body.subarray(2))) };
    case control.ACK:
      assert.equal(body.byteLength, control.ACK_BODY_BYTES);
      return { kind: "ack", count: control.ackCount(body) };
    case control.REPLY:
      assert.ok(body.byteLength > control.REPLY_PREFIX_BYTES);
      return {
        kind: "reply",
        request: control.replyTo(body),
        value: toJson(decode(body.subarray(control.REPLY_PREFIX_BYTES))),
      };
    case control.CLOSE:
      assert.equal(body.byteLength, 2);
      return { kind: "close" };
  }
  throw new Error(`unknown control frame kind ${kind}`);
}
