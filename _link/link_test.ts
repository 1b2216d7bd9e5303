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

Deno.test("Link() hands over frames, then tells its owner the peer ended; Link.loop is one promise before and after", async () => {
  await using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepting = listener.accept();
  const peer = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const owner = recorder();
  const link = new Link(await accepting, owner, {
    maxFrameBytes: 1024,
    heartbeatMs: 0,
    idleTimeout: 0,
  });
  const before = link.loop;
  await peer.write(new Uint8Array([0, 0, 0, 2, 7, 8, 0, 0, 0, 1, 9]));
  peer.close();
  await before;
  assert.deepStrictEqual(owner.frames, [[7, 8], [9]]);
  assert.deepStrictEqual(owner.failed, [null]);
  assert.equal(link.loop, before);
  link.drop(new Error("Done"));

  // A link whose loop had stopped before anyone waited: still one promise.
  const accepting2 = listener.accept();
  const peer2 = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const owner2 = recorder();
  const link2 = new Link(await accepting2, owner2, {
    maxFrameBytes: 1024,
    heartbeatMs: 0,
    idleTimeout: 0,
  });
  peer2.close();
  while (owner2.failed.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(link2.loop, link2.loop);
  await link2.loop;
  link2.drop(new Error("Done"));
});
