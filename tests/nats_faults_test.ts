/**
 * Faults over a real nats-server: an edge killed mid-round (its sites are
 * missing at the root, the round completes on the quorum), the edge
 * restarted (it rejoins, its sites with it), and the NATS server killed and
 * restarted mid-round (JetStream on disk: the round completes with every
 * site, no aggregate lost).
 */

import assert from "node:assert/strict";
import { edge, root } from "../nats.ts";
import { freePort, NatsServer } from "./nats_server.ts";
import {
  connected,
  flatFedAvg,
  hold,
  sameBits,
  SECRETS,
  startSite,
  testModel,
} from "./nats_sites.ts";

/** Starts edge `b` in a process of its own; resolves once it is ready. */
async function edgeProcess(servers: string, port: number): Promise<Deno.ChildProcess> {
  const script = new URL("./nats_edge_process.ts", import.meta.url).pathname;
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, servers, "faults", "b", SECRETS.b, String(port)],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = process.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const { value } = await reader.read();
  assert.match(value ?? "", /ready/);
  reader.releaseLock();
  process.stdout.cancel().catch(() => {});
  return process;
}

Deno.test("NatsRoot.round() completes without a killed edge, takes it back restarted, and survives a NATS restart", async () => {
  await using nats = await NatsServer.start();
  const job = { nats: { servers: nats.url }, job: "faults", chunkBytes: 1024 };
  await using r = await root({ ...job, edges: SECRETS });
  await using a = await edge({ ...job, name: "a", secret: SECRETS.a });
  const aRun = a.run();
  aRun.catch(() => {}); // awaited below; a failing test closes it
  const bPort = freePort();
  let b = await edgeProcess(nats.url, bPort);
  const aSites = [0, 1, 2].map((s) => startSite(a.server.port, s));
  const bSites = [3, 4].map((s) => startSite(bPort, s));
  const all = [...aSites, ...bSites];
  try {
    await connected(all);
    const weights = testModel();
    let round = await r.round({ round: 1, weights, timeout: 30_000 });
    assert.deepStrictEqual(round.missing, new Map());
    assert.equal(round.sites.size, 5);

    // Round 2: b is killed once its sites have the task; a's sites answer after that.
    const release = hold(aSites);
    const b2 = Promise.all(bSites.map((s) => s.nextTask));
    const pending = r.round({ round: 2, weights, min: 3, timeout: 30_000 });
    await b2;
    b.kill("SIGKILL");
    await b.status;
    release();
    round = await pending;
    assert.equal(round.quorum, true);
    assert.deepStrictEqual(round.edges, ["a"]);
    assert.deepStrictEqual([...round.sites.keys()].sort(), ["a/s0", "a/s1", "a/s2"]);
    assert.deepStrictEqual([...round.missing.keys()].sort(), ["b/s3", "b/s4"]);
    for (const why of round.missing.values()) {
      assert.match(why, /Edge "b" sent no partial aggregate/);
    }
    assert.match(round.missingEdges.get("b") ?? "", /sent no partial aggregate/);
    assert.ok(sameBits(round.weights!, flatFedAvg(weights, [2, 1, 0], 2)));

    // Round 3: b restarted on the same port; its sites connect again and take part.
    b = await edgeProcess(nats.url, bPort);
    await connected(bSites);
    round = await r.round({ round: 3, weights, timeout: 30_000 });
    assert.deepStrictEqual(round.missing, new Map());
    assert.ok(sameBits(round.weights!, flatFedAvg(weights, [0, 1, 2, 3, 4], 3)));

    // Round 4: the NATS server is killed while the sites train, and restarted.
    const release4 = hold(all);
    const tasks = Promise.all(all.map((s) => s.nextTask));
    const pending4 = r.round({ round: 4, weights, timeout: 60_000 });
    await tasks;
    await nats.stop("SIGKILL");
    release4();
    await new Promise((resolve) => setTimeout(resolve, 500)); // the edges fold while NATS is down
    await nats.restart();
    round = await pending4;
    assert.deepStrictEqual(round.missing, new Map());
    assert.deepStrictEqual(round.edges.sort(), ["a", "b"]);
    assert.ok(sameBits(round.weights!, flatFedAvg(weights, [4, 3, 2, 1, 0], 4)));

    await r.stop("done");
    assert.equal(await aRun, "done");
    assert.equal((await b.status).code, 0);
  } finally {
    for (const site of all) site.close();
    try {
      b.kill("SIGKILL");
    } catch {
      // It exited.
    }
    await b.status;
  }
});
