/**
 * The protocol vector scenarios with the library as the client (`connect()`)
 * and the peer as its server, and the frames the library never sends: each
 * returns the frames the library wrote, by case name. Not published.
 *
 * @module
 */

import assert from "node:assert/strict";
import { encode } from "../codec.ts";
import { FrameEncoderStream, MessagePackEncoderStream } from "../framing.ts";
import {
  type Client,
  connect,
  type ConnectOptions,
  DEFAULT_MAX_FRAME_BYTES,
  DEFAULT_MAX_MESSAGE_BYTES,
} from "../mod.ts";
import { controlFrame, HANDSHAKE, replyPrefix } from "../_wire/control.ts";
import { encodeFrame } from "../_codec/encode_frame.ts";
import { handshakeControlFrame } from "./fake_conn.ts";
import { concat, until } from "./test_util.ts";
import {
  assertValue,
  caseOf,
  frameOf,
  fromHex,
  jsonOf,
  RESUME_TOKEN,
  SITE_A,
  valueOf,
} from "./protocol_vectors.ts";
import {
  type Captured,
  HOST,
  type Raw,
  type RawServer,
  soon,
  withPeer,
  withRandom,
  type Writes,
} from "./protocol_vectors_peer.ts";

/** What {@linkcode withClient} hands its callback. */
interface Welcomed {
  /** The client, welcomed. */
  client: Client;
  /** Its connection, as the peer sees it. */
  s: Raw;
  /** The hello it sent. */
  hello: Uint8Array;
  /** The peer's listening socket. */
  peer: RawServer;
}

/**
 * Runs `run` with a client of the peer (`connect()` with `options`), welcomed
 * by `welcome` (a case name or a frame), and closes it after.
 */
function withClient<T>(
  options: Omit<ConnectOptions, "hostname" | "port">,
  welcome: string | Uint8Array,
  run: (welcomed: Welcomed) => Promise<T>,
): Promise<T> {
  return withPeer(async (peer) => {
    // The vectors' clients take no long messages (hello-long's does).
    const connecting = connect({ hostname: HOST, port: peer.port, maxMessageBytes: 0, ...options });
    const s = await peer.accept();
    const hello = await s.frame();
    await s.send(welcome);
    const client = await connecting;
    try {
      return await run({ client, s, hello, peer });
    } finally {
      await client.close();
    }
  });
}

/** The session of the former hex example, the library as the client. */
function clientSession(): Promise<Captured> {
  return withClient({ heartbeatMs: 0 }, "welcome", async ({ client, s, hello }) => {
    const out: Captured = { hello };
    assert.deepStrictEqual([client.id, client.clients, client.authenticated], [0, 2, false]);
    // A heartbeat is skipped; the broadcast is message 1, acknowledged within 1 s.
    await s.send("heartbeat", "broadcast-tensor");
    assertValue(await soon(client.recv(), "the broadcast"), jsonOf("broadcast-tensor"));
    out["ack-1"] = await s.frame();
    await client.reply(valueOf("reply-tensor"), { to: caseOf("reply-tensor").decoded.request });
    out["reply-tensor"] = await s.frame();
    await s.send("ack-1");
    await s.send("ping");
    out.pong = await s.frame();
    await s.send("broadcast-round-2");
    assertValue(await soon(client.recv(), "message 2"), jsonOf("broadcast-round-2"));
    out["ack-2"] = await s.frame();
    await client.reply(valueOf("reply-done"), { to: caseOf("reply-done").decoded.request });
    out["reply-done"] = await s.frame();
    // flush() waits for the ack of message 2: it asks with a ping, its first (§8.3).
    const flushed = client.flush();
    assert.deepStrictEqual(await s.frame(), frameOf("ping"));
    await s.send("ack-2", "pong");
    await soon(flushed, "the client to read the ack");
    const closing = client.close();
    out.close = await s.frame();
    await s.eof();
    await closing;
    return out;
  });
}

/** The hello with a name and props. */
function clientNameProps(): Promise<Captured> {
  const options = { name: "site-a", props: { gpus: 2, region: "eu" } };
  return withClient(options, "welcome", async ({ client, s, hello }) => {
    await client.close();
    assert.deepStrictEqual(await s.frame(), frameOf("close"));
    return { "hello-name-props": hello };
  });
}

/** An idle client pings (its first ping: its count 1), and times the pong. */
function clientPing(): Promise<Captured> {
  return withClient({ heartbeatMs: 20 }, "welcome", async ({ client, s }) => {
    const ping = await s.frame();
    await s.send("pong");
    await until(() => client.rttMs !== undefined, "the pong");
    return { ping };
  });
}

/** The client's side of the authenticated handshake (the `site-a` proof). */
function clientAuth(): Promise<Captured> {
  return withPeer(async (peer) => {
    const out: Captured = {};
    const client = await withRandom([fromHex(SITE_A.clientNonce)], async () => {
      const connecting = connect({
        hostname: HOST,
        port: peer.port,
        name: SITE_A.clientName,
        secret: SITE_A.secret,
        maxMessageBytes: 0,
      });
      const s = await peer.accept();
      out["hello-auth"] = await s.frame();
      await s.send("challenge");
      out.auth = await s.frame();
      await s.send("welcome-auth");
      return await connecting;
    });
    assert.equal(client.authenticated, true);
    await client.close();
    return out;
  });
}

/** The welcome of the connection that {@linkcode clientResume} cuts: it offers a resume. */
const RESUMABLE_WELCOME = handshakeControlFrame({
  fedcomm: 3,
  type: "welcome",
  id: 0,
  clients: 1,
  maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
  token: RESUME_TOKEN,
  grace: 300_000,
  received: 0,
  resumed: false,
});

/** The client cut after its reply resumes (the resume of the former hex example). */
function clientResume(): Promise<Captured> {
  const options = { heartbeatMs: 0 };
  return withClient(options, RESUMABLE_WELCOME, async ({ client, s: first, peer }) => {
    const events: string[] = [];
    client.addEventListener("disconnect", () => events.push("disconnect"));
    client.addEventListener("resume", () => events.push("resume"));
    await first.send("broadcast-round-2");
    await soon(client.recv(), "message 1");
    await client.reply(valueOf("reply-done"), { to: 1 });
    // The pending ack, in front of the reply or alone before it.
    assert.deepStrictEqual(
      [await first.frame(), await first.frame()],
      [frameOf("ack-1"), frameOf("reply-done")],
    );
    first.close(); // the drop
    const again = await peer.accept();
    const hello = await again.frame();
    await again.send("welcome-resumed", "broadcast-round-2");
    assertValue(await soon(client.recv(), "message 2"), jsonOf("broadcast-round-2"));
    assert.deepStrictEqual(await again.frame(), frameOf("ack-2"));
    assert.deepStrictEqual(events, ["disconnect", "resume"]);
    const closing = client.close();
    assert.deepStrictEqual(await again.frame(), frameOf("close"));
    await closing;
    return { "hello-resume": hello };
  });
}

/**
 * A client that takes long messages (the default): its hello, and a long
 * broadcast read into place; the long message encoder with each long
 * case's choices (which the session uses with 64 KiB and 64 MiB).
 */
function clientLong(): Promise<Captured> {
  const options = { heartbeatMs: 0, maxMessageBytes: undefined }; // the default
  return withClient(options, "welcome-long", async ({ client, s, hello }) => {
    assert.equal(client.maxMessageBytes, DEFAULT_MAX_MESSAGE_BYTES);
    const broadcast = caseOf("long-broadcast");
    await s.send(frameOf("long-broadcast"), ...broadcast.parts!.map(fromHex));
    assertValue(await soon(client.recv(), "the long message"), jsonOf("long-broadcast"));
    const out: Captured = { "hello-long": hello };
    for (const name of ["long-broadcast", "long-reply"]) {
      const c = caseOf(name);
      const { maxFrameBytes, refMinBytes, partBytes } = c.sender!;
      const request = c.decoded.request!;
      const prefix = request > 0 ? replyPrefix(request) : undefined;
      const long = { maxMessageBytes: DEFAULT_MAX_MESSAGE_BYTES, refMinBytes, partBytes };
      const frame = encodeFrame(valueOf(name), maxFrameBytes, false, prefix, long);
      assert.equal(frame.longBytes, c.decoded.size);
      out[name] = concat(frame.chunks);
    }
    return out;
  });
}

/** The frames the library never sends. */
async function neverSent(): Promise<Captured> {
  const collect = async (stream: ReadableStream<Uint8Array>) =>
    concat(await Array.fromAsync(stream));
  return {
    // A version 1 hello: a plain frame, through the public framing streams.
    "hello-v1": await collect(
      ReadableStream.from([valueOf("hello-v1")])
        .pipeThrough(new MessagePackEncoderStream())
        .pipeThrough(new FrameEncoderStream()),
    ),
    // A version 2 hello: a handshake control frame with `fedcomm` 2.
    "hello-v2": controlFrame(HANDSHAKE, encode(valueOf("hello-v2"))),
    // The library pings instead of sending heartbeats: an empty body, framed.
    heartbeat: await collect(
      ReadableStream.from([new Uint8Array(0)]).pipeThrough(new FrameEncoderStream()),
    ),
  };
}

/** Which cases each client scenario writes (and the frames never sent). */
export const CLIENT_WRITES: Writes = [
  [["hello", "ack-1", "ack-2", "reply-tensor", "reply-done", "pong", "close"], clientSession],
  [["hello-name-props"], clientNameProps],
  [["ping"], clientPing],
  [["hello-auth", "auth"], clientAuth],
  [["hello-resume"], clientResume],
  [["hello-long", "long-broadcast", "long-reply"], clientLong],
  [["hello-v1", "hello-v2", "heartbeat"], neverSent],
];
