/**
 * Control frames (protocol version 3): frames whose body starts with the
 * byte `0xc1`, which never starts a MessagePack value, so they can never be
 * mistaken for an application message. The second byte is the kind:
 *
 * | body | kind |
 * | --- | --- |
 * | `c1 01` + 8 bytes | ping: the receiver answers with a pong carrying the same 8 bytes |
 * | `c1 02` + 8 bytes | pong |
 * | `c1 03` + one MessagePack map | a handshake message (hello, challenge, auth, welcome, reject) |
 * | `c1 04` + 8 bytes | ack: the sender received the peer's application messages 1 … n (u64) |
 * | `c1 05` + 6 bytes + one MessagePack value | reply: an application message answering message n (u48) |
 * | `c1 06` | close: the session ends for good, no resume |
 *
 * See PROTOCOL.md §3.2.
 *
 * @module
 */

import { encodeHead, HEADER_BYTES } from "./frame.ts";
import { ProtocolError } from "../errors.ts";

/** The first byte of every control frame's body. */
export const CONTROL = 0xc1;
/** Kind: ping. */
export const PING = 0x01;
/** Kind: pong. */
export const PONG = 0x02;
/** Kind: handshake message. */
export const HANDSHAKE = 0x03;
/** Kind: acknowledgement. */
export const ACK = 0x04;
/** Kind: reply. */
export const REPLY = 0x05;
/** Kind: close of the session. */
export const CLOSE = 0x06;
/** Kind: the header of a long message (PROTOCOL.md §8.8). */
export const LONG = 0x07;
/** Kind: a part of a long message. */
export const PART = 0x08;
/** Bytes of a ping or pong body: `c1`, the kind and 8 opaque bytes. */
export const PING_BODY_BYTES = 10;
/** Bytes of an ack body: `c1 04` and a u64. */
export const ACK_BODY_BYTES = 10;
/** Bytes before a reply's value: `c1 05` and a u48 (8, so tensor data stays aligned). */
export const REPLY_PREFIX_BYTES = 8;
/** Bytes before a long message's skeleton or a part's data: `c1`, the kind and a u48. */
export const LONG_PREFIX_BYTES = 8;
/** The largest message number a reply can name (u48). */
export const MAX_REQUEST = 2 ** 48 - 1;

/**
 * Builds an ack frame.
 *
 * @param count The peer's messages received so far.
 * @returns The whole frame.
 */
export function ackFrame(count: number): Uint8Array {
  const payload = new Uint8Array(8);
  const view = new DataView(payload.buffer);
  view.setUint32(0, Math.floor(count / 2 ** 32));
  view.setUint32(4, count >>> 0);
  return controlFrame(ACK, payload);
}

/**
 * Rewrites the count of an ack frame built by {@linkcode ackFrame}.
 *
 * @param frame The whole frame (14 bytes).
 * @param count The peer's messages received so far.
 * @returns The frame.
 */
export function setAckCount(frame: Uint8Array, count: number): Uint8Array {
  const high = Math.floor(count / 2 ** 32);
  const low = count >>> 0;
  frame[6] = high >>> 24;
  frame[7] = (high >>> 16) & 0xff;
  frame[8] = (high >>> 8) & 0xff;
  frame[9] = high & 0xff;
  frame[10] = low >>> 24;
  frame[11] = (low >>> 16) & 0xff;
  frame[12] = (low >>> 8) & 0xff;
  frame[13] = low & 0xff;
  return frame;
}

/**
 * Reads the count of an ack body (`c1 04` + u64).
 *
 * @param body The 10-byte body.
 * @returns The count (beyond 2⁵³ it is not exact, and is refused by the caller as too large).
 */
export function ackCount(body: Uint8Array): number {
  const view = new DataView(body.buffer, body.byteOffset + 2, 8);
  return view.getUint32(0) * 2 ** 32 + view.getUint32(4);
}

/**
 * Builds the 8 bytes in front of a reply's value: `c1 05` and the u48 number.
 *
 * @param request The number of the message answered.
 * @returns The prefix.
 */
export function replyPrefix(request: number): Uint8Array {
  const prefix = new Uint8Array(REPLY_PREFIX_BYTES);
  prefix[0] = CONTROL;
  prefix[1] = REPLY;
  const view = new DataView(prefix.buffer);
  view.setUint16(2, Math.floor(request / 2 ** 32));
  view.setUint32(4, request >>> 0);
  return prefix;
}

/**
 * Rewrites the number of a prefix built by {@linkcode replyPrefix}.
 *
 * @param prefix The 8 bytes.
 * @param request The number of the message answered.
 * @returns The prefix.
 */
export function setReplyPrefix(prefix: Uint8Array, request: number): Uint8Array {
  const high = Math.floor(request / 2 ** 32);
  const low = request >>> 0;
  prefix[2] = (high >>> 8) & 0xff;
  prefix[3] = high & 0xff;
  prefix[4] = low >>> 24;
  prefix[5] = (low >>> 16) & 0xff;
  prefix[6] = (low >>> 8) & 0xff;
  prefix[7] = low & 0xff;
  return prefix;
}

/**
 * Reads the message number of a reply body.
 *
 * @param body The body, at least 8 bytes.
 * @returns The number.
 */
export function replyTo(body: Uint8Array): number {
  const view = new DataView(body.buffer, body.byteOffset + 2, 6);
  return view.getUint16(0) * 2 ** 32 + view.getUint32(2);
}

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
 * The error for a control frame no one expects where it came: no kind
 * byte, or a kind (or size) that is not valid here.
 *
 * @param body The frame's body.
 * @param clientId The client, if known.
 * @returns The error.
 */
export function invalidControlFrame(body: Uint8Array, clientId?: number): ProtocolError {
  const size = body.byteLength;
  return new ProtocolError(
    size < 2
      ? "Invalid control frame: no kind byte"
      : `Invalid control frame: kind "${body[1]}" with ${size} body bytes`,
    { clientId },
  );
}
