/**
 * A partial aggregate stored in JetStream before the NATS server restarts
 * and read by the root only after the restart is not lost. Deterministic:
 * the root talks to NATS through a proxy that the test cuts, so it cannot
 * read anything until the test lets it, and every step waits on something
 * it can see (the root's pull requests gone from its consumer, the edges'
 * partials acknowledged by JetStream and still in the stream after the
 * restart), not on time.
 */

import assert from "node:assert/strict";
import { connect as natsConnect } from "@nats-io/transport-node";
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { decode } from "../codec.ts";
import { edge, root } from "../nats.ts";
import { NatsServer } from "./nats_server.ts";
import { CutProxy } from "./nats_proxy.ts";
import {
  connected,
  flatFedAvg,
  hold,
  sameBits,
  SECRETS,
  startSite,
  testModel,
} from "./nats_sites.ts";

/** Waits until `condition()` holds, checking every 20 ms, for at most `ms`. */
async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  ms = 20_000,
): Promise<void> {
  const end = performance.now() + ms;
  while (!await condition()) {
    if (performance.now() > end) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The last message on each edge's subject in the job's stream: its sequence and type. */
async function lastUp(
  jsm: JetStreamManager,
  job: string,
): Promise<{ seq: number; type: string }[]> {
  return await Promise.all(["a", "b"].map(async (name) => {
    const message = await jsm.streams.getMessage(`FEDCOMM_${job}`, {
      last_by_subj: `fedcomm.${job}.up.${name}`,
    });
    const envelope = decode(message!.data) as { body: Uint8Array };
    return { seq: message!.seq, type: (decode(envelope.body) as { type: string }).type };
  }));
}

Deno.test("NatsRoot.round() merges the partials stored before a NATS restart and read only after it", async () => {
  await using nats = await NatsServer.start();
  await using proxy = new CutProxy(nats.port);
  const job = "restart";
  const stream = `FEDCOMM_${job}`;
  await using r = await root({ nats: { servers: proxy.url }, job, edges: SECRETS });
  const options = { nats: { servers: nats.url }, job };
  await using a = await edge({ ...options, name: "a", secret: SECRETS.a });
  await using b = await edge({ ...options, name: "b", secret: SECRETS.b });
  const runs = [a.run(), b.run()];
  for (const run of runs) run.catch(() => {}); // awaited below; a failing test closes them
  const sites = [
    startSite(a.server.port, 0),
    startSite(a.server.port, 1),
    startSite(b.server.port, 2),
  ];
  const watcher = await natsConnect({ servers: nats.url });
  try {
    await connected(sites);
    const jsm = await jetstreamManager(watcher);
    const weights = testModel();
    const release = hold(sites);
    const tasks = Promise.all(sites.map((site) => site.nextTask));
    const pending = r.round({ round: 1, weights, timeout: 60_000 });
    await tasks; // the edges took the task (their "taken" is stored); the sites hold their answers
    const taken = await lastUp(jsm, job);
    assert.deepStrictEqual(taken.map(({ type }) => type), ["taken", "taken"]);
    // (The consumer's num_pending is not exact in nats-server 2.9: sequences are compared.)
    await waitFor("the root to handle both takens", async () => {
      const info = await jsm.consumers.info(stream, "root");
      const last = Math.max(...taken.map(({ seq }) => seq));
      return info.ack_floor.stream_seq >= last && info.num_ack_pending === 0;
    });

    // The root is cut off: its pull requests leave the consumer with its connection.
    proxy.cut();
    await waitFor("the root's pulls to go", async () => {
      const info = await jsm.consumers.info(stream, "root");
      return info.num_waiting === 0 && proxy.connections === 0;
    });
    release();
    await waitFor("both partials", () => a.stats().rounds === 1 && b.stats().rounds === 1);
    // Both are in JetStream (their publishes were acknowledged), and none went to the root.
    const partials = await lastUp(jsm, job);
    assert.deepStrictEqual(partials.map(({ type }) => type), ["partial", "partial"]);
    const before = await jsm.consumers.info(stream, "root");
    assert.equal(before.num_ack_pending, 0, "a message was delivered to the root");
    assert.ok(before.delivered.stream_seq < Math.min(...partials.map(({ seq }) => seq)));
    await watcher.close();

    await nats.restart(); // SIGKILL, then the same port and store directory
    const again = await natsConnect({ servers: nats.url });
    try {
      assert.deepStrictEqual(await lastUp(await jetstreamManager(again), job), partials);
    } finally {
      await again.close();
    }
    proxy.restore(); // the root reconnects, and reads the partials only now
    const result = await pending;
    assert.deepStrictEqual([...result.sites.keys()].sort(), ["a/s0", "a/s1", "b/s2"]);
    assert.deepStrictEqual(result.missing, new Map());
    assert.deepStrictEqual(result.edges.sort(), ["a", "b"]);
    assert.ok(sameBits(result.weights!, flatFedAvg(weights, [1, 2, 0], 1)));
    await r.stop("done");
    assert.deepStrictEqual(await Promise.all(runs), ["done", "done"]);
  } finally {
    await watcher.close().catch(() => {});
    for (const site of sites) site.close();
  }
});
