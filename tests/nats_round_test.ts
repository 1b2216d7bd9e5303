/**
 * Hierarchical rounds over a real nats-server: two edges with their sites,
 * the aggregate against flat FedAvg bit for bit, the chunked object-store
 * path (a 1 KiB chunk size), one model fetch per edge, evaluate rounds and
 * the stop.
 */

import assert from "node:assert/strict";
import { edge, NatsError, root } from "../nats.ts";
import { freePort, NatsServer } from "./nats_server.ts";
import {
  connected,
  flatFedAvg,
  hold,
  sameBits,
  SECRETS,
  startSite,
  startTwoEdges,
  testModel,
} from "./nats_sites.ts";

Deno.test("root() and edge() run rounds whose aggregate is flat FedAvg's, bit for bit", async () => {
  await using nats = await NatsServer.start();
  await using job = await startTwoEdges(nats.url, "round", 1024);
  const { root: r, a, b, runs } = job;
  const sites = [
    ...[0, 1, 2].map((s) => startSite(a.server.port, s)),
    ...[3, 4].map((s) => startSite(b.server.port, s)),
  ];
  await connected(sites);
  const weights = testModel();

  const round1 = await r.round({ round: 1, weights, timeout: 30_000 });
  assert.deepStrictEqual([...round1.sites.keys()].sort(), ["a/s0", "a/s1", "a/s2", "b/s3", "b/s4"]);
  assert.deepStrictEqual(round1.missing, new Map());
  assert.deepStrictEqual(round1.edges.sort(), ["a", "b"]);
  assert.equal(round1.quorum, true);
  assert.deepStrictEqual(round1.rejected, []);
  // Flat FedAvg over the same five updates, folded in another order and not grouped by edge.
  const flat = flatFedAvg(weights, [4, 2, 0, 3, 1], 1);
  assert.ok(sameBits(round1.weights!, flat), "the hierarchical aggregate differs from flat FedAvg");
  assert.equal(round1.weight, 10 + 17 + 24 + 31 + 38);
  // The model (2.6 KiB, 3 chunks of 1 KiB) was fetched once per edge, whatever its sites.
  assert.equal(a.stats().modelsFetched, 1);
  assert.equal(b.stats().modelsFetched, 1);

  // An evaluate round on the same model: no new fetch; the metrics' sample-weighted mean.
  const round2 = await r.round({ round: 2, kind: "evaluate", weights, timeout: 30_000 });
  assert.equal(round2.weights, undefined);
  const expected = [0, 1, 2, 3, 4].reduce((n, s) => n + (10 + 7 * s) * (s + 0.2), 0) / 120;
  assert.ok(Math.abs(round2.metrics.loss - expected) < 1e-12, `loss ${round2.metrics.loss}`);
  assert.equal(a.stats().modelsFetched, 1);

  // The next round trains the new model: fetched once more.
  const round3 = await r.round({ round: 3, weights: round1.weights!, timeout: 30_000 });
  assert.ok(sameBits(round3.weights!, flatFedAvg(round1.weights!, [0, 1, 2, 3, 4], 3)));
  assert.equal(a.stats().modelsFetched, 2);
  assert.deepStrictEqual(sites.map((s) => s.tasks), sites.map(() => [1, 2, 3]));

  await r.stop("finished");
  assert.deepStrictEqual(await Promise.all(runs), ["finished", "finished"]);
  assert.deepStrictEqual(
    await Promise.all(sites.map((s) => s.stopped)),
    sites.map(() => "finished"),
  );
  await assert.rejects(r.round({ round: 3, weights, timeout: 1_000 }), RangeError);
});

Deno.test("root() fails with a NatsError naming the address when NATS is not there", async () => {
  await using nats = await NatsServer.start();
  await nats.stop();
  await assert.rejects(
    root({ nats: { servers: nats.url, timeout: 2_000 }, job: "j", edges: SECRETS }),
    (error: Error) => {
      assert.ok(error instanceof NatsError);
      assert.match(error.message, new RegExp(`Could not connect to NATS at "${nats.url}"`));
      return true;
    },
  );
});

Deno.test("NatsEdge.run() drops a round the root ended on its quorum and takes the next task at once", async () => {
  await using nats = await NatsServer.start();
  await using job = await startTwoEdges(nats.url, "supersede");
  const { root: r, a, b, runs } = job;
  const sites = [
    startSite(a.server.port, 0),
    startSite(a.server.port, 1),
    startSite(b.server.port, 2),
  ];
  sites[2].skip.add(1); // b's only site hangs in round 1
  try {
    while (!sites.every((s) => s.connected)) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const weights = testModel();
    // Round 1 ends on a's two sites; b would wait 60 s for its site (its local deadline).
    const round1 = await r.round({
      round: 1,
      weights,
      min: 2,
      timeout: 75_000,
      edgeTimeout: 60_000,
    });
    assert.deepStrictEqual([...round1.sites.keys()], ["a/s0", "a/s1"]);
    assert.match(round1.missing.get("b/s2") ?? "", /^Edge "b" sent no partial aggregate/);
    // Round 2 must have b at once: its round 1 is dropped when round 2's task is published.
    const round2 = await r.round({ round: 2, weights, timeout: 20_000 });
    assert.deepStrictEqual([...round2.sites.keys()].sort(), ["a/s0", "a/s1", "b/s2"]);
    assert.ok(sameBits(round2.weights!, flatFedAvg(weights, [2, 1, 0], 2)));
    assert.equal(b.stats().skipped, 1);
    await r.stop();
    await Promise.all(runs);
  } finally {
    for (const site of sites) site.close();
  }
});

Deno.test("NatsRoot.round() reads partials that come at once a few at a time and still equals flat FedAvg", async () => {
  await using nats = await NatsServer.start();
  const names = ["e0", "e1", "e2", "e3", "e4", "e5"];
  const secrets = Object.fromEntries(names.map((name) => [name, `${name}-secret-0123456789`]));
  const options = { nats: { servers: nats.url }, job: "many" };
  await using r = await root({ ...options, edges: secrets });
  const edges = await Promise.all(
    names.map((name) => edge({ ...options, name, secret: secrets[name] })),
  );
  const runs = edges.map((e) => e.run());
  for (const run of runs) run.catch(() => {}); // awaited below; a failing test closes them
  const sites = edges.map((e, i) => startSite(e.server.port, i));
  try {
    await connected(sites);
    const weights = testModel();
    for (let round = 1; round <= 2; round++) {
      // The sites answer together, so that the six partials come within a few milliseconds.
      const release = hold(sites);
      const tasks = Promise.all(sites.map((site) => site.nextTask));
      const pending = r.round({ round, weights, timeout: 30_000 });
      await tasks;
      release();
      const result = await pending;
      assert.deepStrictEqual(result.edges.length, 6);
      assert.deepStrictEqual(result.missing, new Map());
      assert.deepStrictEqual(result.rejected, []);
      assert.ok(sameBits(result.weights!, flatFedAvg(weights, [5, 3, 1, 4, 2, 0], round)));
    }
    await r.stop("done");
    assert.deepStrictEqual(await Promise.all(runs), names.map(() => "done"));
  } finally {
    for (const site of sites) site.close();
    await Promise.all(edges.map((e) => e.close()));
  }
});

Deno.test("root() fails with a NatsError saying how to turn JetStream on when it is off", async () => {
  const port = freePort();
  const server = new Deno.Command("nats-server", {
    args: ["-a", "127.0.0.1", "-p", String(port)], // no -js
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    const end = performance.now() + 15_000;
    while (true) { // ready once it accepts connections
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port })).close();
        break;
      } catch (error) {
        if (performance.now() > end) throw error;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
    await assert.rejects(
      root({ nats: { servers: `127.0.0.1:${port}` }, job: "j", edges: SECRETS }),
      (error: Error) => {
        assert.ok(error instanceof NatsError);
        assert.equal(
          error.message,
          "Could not set up the job's stream and bucket in NATS: jetstream is not enabled " +
            "(start nats-server with -js)",
        );
        return true;
      },
    );
  } finally {
    server.kill("SIGKILL");
    await server.status;
  }
});
