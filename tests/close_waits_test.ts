import assert from "node:assert/strict";
import { connect, listen, PeerDisconnectedError } from "../mod.ts";
import { encode } from "../codec.ts";
import { delay, RawPeer, rejectionOf } from "./test_util.ts";

/** A client that joins, then never acknowledges anything (it does not read). */
async function silentClient(port: number): Promise<RawPeer> {
  const peer = await RawPeer.connect(port);
  const welcome = await peer.handshake();
  assert.equal(welcome.type, "welcome");
  return peer;
}

Deno.test("Server.close() fails the sends still waiting for an acknowledgement, as a close", async () => {
  // A broadcast lending 1 MiB waits for the ack; with a 1 KiB outbox, the
  // second broadcast waits for room. close() gives up on both after its
  // 5 s wait: each rejects with the close, and the session's error is the
  // close (not "fell behind while away": the client was never away).
  await using server = listen({ clients: 1, retainBytes: 1024 });
  await using _peer = await silentClient(server.port);
  await server.ready({ timeout: 10_000 });
  const lent = rejectionOf(server.broadcast(new Uint8Array(1 << 20)));
  const waiting = rejectionOf(server.broadcast("y"));
  await delay(50);
  await server.close();
  for (const [what, error] of [["lent", await lent], ["waiting for room", await waiting]]) {
    assert.ok(error instanceof PeerDisconnectedError, `${what}: ${error}`);
    assert.match((error as Error).message, /close\(\) was called/, String(what));
  }
  assert.match(server.stats(0).error!.message, /close\(\) was called/);
});

Deno.test("Client.close() fails a send still waiting for an acknowledgement, as a close", async () => {
  // A server that welcomes the client, then reads without ever acknowledging.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    using conn = await listener.accept();
    const buffer = new Uint8Array(1 << 20);
    await conn.read(buffer); // the hello
    const welcome = encode({
      fedcomm: 3,
      type: "welcome",
      id: 0,
      clients: 1,
      maxFrameBytes: 1 << 29,
      grace: 0,
      received: 0,
      resumed: false,
    });
    const frame = new Uint8Array(6 + welcome.byteLength);
    new DataView(frame.buffer).setUint32(0, 2 + welcome.byteLength);
    frame.set([0xc1, 0x03], 4);
    frame.set(welcome, 6);
    await conn.write(frame);
    while ((await conn.read(buffer).catch(() => null)) !== null) {
      // Discarded: nothing is acknowledged.
    }
  })();
  const client = await connect({ port: (listener.addr as Deno.NetAddr).port });
  const sent = rejectionOf(client.send(new Uint8Array(1 << 20)));
  await delay(50);
  await client.close();
  const error = await sent;
  assert.ok(error instanceof PeerDisconnectedError, String(error));
  assert.match((error as Error).message, /close\(\) was called/);
  listener.close();
  await serving;
});
