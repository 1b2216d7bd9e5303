/**
 * fedcomm: the communication layer of a federated-learning system.
 *
 * One coordinator ({@linkcode listen}) waits for N clients ({@linkcode connect}),
 * gives each an id in order of arrival, and then runs rounds: it broadcasts
 * one value to every client, sends ({@linkcode Server.send}) a different value
 * to each of some clients, and gathers one upload from every client or from a
 * chosen subset, as a `Map` ({@linkcode Server.gather}) or one at a time in
 * order of arrival ({@linkcode Server.uploads}).
 *
 * Every message is one MessagePack value in a length-delimited frame on TCP
 * or TLS (see PROTOCOL.md, version 3). Typed arrays keep their type and
 * travel in the msgpack-numpy convention, so numpy clients interoperate; a
 * broadcast is encoded once, and large tensors are written from and read
 * into place without copies. Clients can be required to prove they know a
 * shared secret (`auth`), peers that go silent are declared dead
 * (`idleTimeout`), and servers and clients are `EventTarget`s of progress,
 * join and leave events ({@linkcode ServerEventMap}).
 *
 * The package's modules: this one (everything below), `./framing` (frames
 * and MessagePack as web streams, and the zero-copy socket reader),
 * `./codec` (the MessagePack codec) and `./cli` (the command-line tool).
 * Inside, each concept has one file: the public ones at the root
 * (`server.ts`, `client.ts`, `framing.ts`, `codec.ts`, `tensor.ts`,
 * `errors.ts`, `events.ts`, and `types.ts` for the option and result
 * types), the private ones in folders by layer, lowest first: `_util/`,
 * `_wire/` (bytes and frames, no I/O), `_codec/` (MessagePack), `_link/`
 * (one socket), `_session/` (numbering, acks, resume), `_handshake/`,
 * `_server/`, `_client/`, `_cli/`. ARCHITECTURE.md follows a message
 * through them.
 *
 * @example A round of federated averaging
 * ```ts
 * import assert from "node:assert/strict";
 * import { connect, listen } from "@fedcomm/fedcomm";
 *
 * await using server = listen({ clients: 3 });
 * const clients = await Promise.all([0, 1, 2].map(() => connect({ port: server.port })));
 * await server.ready();
 *
 * // Each client trains (here: adds its id) and uploads.
 * const training = clients.map(async (client) => {
 *   const { weights } = await client.recv() as { weights: Float32Array };
 *   await client.send({ weights: weights.map((w) => w + client.id) });
 * });
 * await server.broadcast({ round: 1, weights: new Float32Array([1, 1]) });
 *
 * const sum = new Float32Array(2);
 * for await (const { value } of server.uploads()) {
 *   const { weights } = value as { weights: Float32Array };
 *   for (let i = 0; i < sum.length; i++) sum[i] += weights[i] / clients.length;
 * }
 * await Promise.all(training);
 * assert.deepStrictEqual(sum, new Float32Array([2, 2]));
 * for (const client of clients) await client.close();
 * ```
 *
 * @module
 */

export { Client, connect } from "./client.ts";
export {
  ClientEvent,
  type ClientEventInit,
  type ClientEventMap,
  type ClientEventType,
  type Direction,
  FedcommEventTarget,
  LateReplyEvent,
  type LateReplyEventInit,
  type Logger,
  RefuseEvent,
  type RefuseEventInit,
  type ServerEventMap,
  TransferEvent,
  type TransferEventInit,
} from "./events.ts";
export {
  AuthenticationError,
  FedcommError,
  type FedcommErrorOptions,
  FrameTooLargeError,
  MessageTooLargeError,
  PeerDisconnectedError,
  ProtocolError,
  RejectedError,
  type RejectReason,
  SendTimeoutError,
  TimeoutError,
  TruncatedFrameError,
} from "./errors.ts";
export { listen, Server } from "./server.ts";
export { NdArray, type TypedArray } from "./tensor.ts";
export {
  type AuthOptions,
  type BroadcastOptions,
  type ClientStats,
  type ConnectOptions,
  type ConnectTlsOptions,
  DEFAULT_MAX_FRAME_BYTES,
  DEFAULT_MAX_MESSAGE_BYTES,
  type FrameOptions,
  type GatherOptions,
  type GatherResult,
  type ListenOptions,
  type MessageOptions,
  type Props,
  PROTOCOL_VERSION,
  type ReadyOptions,
  type Secret,
  type TargetOptions,
  type TlsOptions,
  type Upload,
  type UploadsOptions,
  type WaitOptions,
  type Welcome,
} from "./types.ts";
