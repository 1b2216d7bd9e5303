/**
 * Control frames (protocol version 2): frames whose body starts with the
 * byte `0xc1`, which never starts a MessagePack value, so they can never be
 * mistaken for an application message. The second byte is the kind:
 *
 * | body | kind |
 * | --- | --- |
 * | `c1 01` + 8 bytes | ping: the receiver answers with a pong carrying the same 8 bytes |
 * | `c1 02` + 8 bytes | pong |
 * | `c1 03` + one MessagePack map | a handshake message (hello, challenge, auth, welcome, reject) |
 *
 * See PROTOCOL.md §3.2.
 *
 * @module
 */

import { encodeHead, HEADER_BYTES } from "./_frame.ts";
import { encode } from "./codec.ts";

/** The first byte of every control frame's body. */
export const CONTROL = 0xc1;
/** Kind: ping. */
export const PING = 0x01;
/** Kind: pong. */
export const PONG = 0x02;
/** Kind: handshake message. */
export const HANDSHAKE = 0x03;
/** Bytes of a ping or pong body: `c1`, the kind and 8 opaque bytes. */
export const PING_BODY_BYTES = 10;

/**
 * Builds a whole control frame, header included.
 *
 * @param kind The kind.
 * @param payload What follows the two marker bytes.
 * @returns The frame.
 */
export function controlFrame(kind: number, payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(HEADER_BYTES + 2 + payload.byteLength);
  encodeHead(frame, 2 + payload.byteLength);
  frame[HEADER_BYTES] = CONTROL;
  frame[HEADER_BYTES + 1] = kind;
  frame.set(payload, HEADER_BYTES + 2);
  return frame;
}

/**
 * Builds the frame of a handshake message.
 *
 * @param message The map (`fedcomm`, `type` and the message's fields).
 * @returns The frame.
 */
export function handshakeFrame(message: Record<string, unknown>): Uint8Array {
  return controlFrame(HANDSHAKE, encode(message));
}

/**
 * A plain (non-control) frame received during the handshake: a version 1
 * peer's hello, answered with a plain reject so that it can show the reason.
 */
export class PlainFrame {
  /** The decoded value. */
  readonly value: unknown;

  /**
   * Wraps a value.
   *
   * @param value The decoded value.
   */
  constructor(value: unknown) {
    this.value = value;
  }
}
