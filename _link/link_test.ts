import assert from "node:assert/strict";
import { Link, type LinkOwner } from "./link.ts";

/** An owner that records what its link tells it. */
function recorder(): LinkOwner & { frames: number[][]; failed: unknown[] } {
  const frames: number[][] = [];
  const failed: unknown[] = [];
  return {
    frames,
    failed,
    reading: {
      heard: () => {},
      bodyAllowance: (_filled, total) => Promise.resolve(total),
      bodyTarget: () => undefined,
      allocate: (length) => new Uint8Array(length),
    },
    linkFrame: (_link, body) => frames.push([...body]),
    linkPause: () => undefined,
    linkFailed: (_link, error) => failed.push(error),
    linkIdle: () => {},
    linkSilent: () => {},
    linkWriteError: (cause) => new Error("Write failed", { cause }),
  };
}

/** A link on the accepted end of a loopback connection, and the connecting end. */
async function linkPair(listener: Deno.TcpListener) {
  const accepting = listener.accept();
  const peer = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const owner = recorder();
  const link = new Link(await accepting, owner, {
    maxFrameBytes: 1024,
    heartbeatMs: 0,
    idleTimeout: 0,
  });
  return { link, owner, peer };
}

Deno.test("Link() hands over frames, then tells its owner the peer ended; Link.loop is one promise before and after", async () => {
  await using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { link, owner, peer } = await linkPair(listener);
  const before = link.loop;
  await peer.write(new Uint8Array([0, 0, 0, 2, 7, 8, 0, 0, 0, 1, 9]));
  peer.close();
  await before;
  assert.deepStrictEqual(owner.frames, [[7, 8], [9]]);
  assert.deepStrictEqual(owner.failed, [null]);
  assert.equal(link.loop, before);
  link.drop(new Error("Done"));

  // A link whose loop had stopped before anyone waited: still one promise.
  const second = await linkPair(listener);
  second.peer.close();
  while (second.owner.failed.length === 0) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  assert.equal(second.link.loop, second.link.loop);
  await second.link.loop;
  second.link.drop(new Error("Done"));
});
