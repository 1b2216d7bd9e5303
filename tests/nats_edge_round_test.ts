/**
 * One edge round on a real fedcomm server, without NATS: sites that answer
 * well, with the wrong shape, with a failure, or not at all are each
 * reported for themselves, and the sum holds the good answers only.
 */

import assert from "node:assert/strict";
import { connect, listen } from "../mod.ts";
import { WeightedSum } from "../_fl/aggregate.ts";
import { runLocalRound, siteNames } from "../_nats/edge_round.ts";
import { until } from "../_nats/retry.ts";
import type { TaskBody } from "../_nats/wire.ts";

const TASK: TaskBody = {
  v: 1,
  type: "task",
  job: "j",
  run: "r",
  task: 4,
  round: 2,
  kind: "train",
  config: { lr: 0.1 },
  model: "",
  timeout: 10_000,
  expires: 10_000,
  issued: 0,
};

Deno.test("runLocalRound() folds the good results and names each bad or silent site with why", async () => {
  await using server = listen({ clients: 8, open: true });
  const names = ["good", "shape", "failed", "silent"];
  const clients = await Promise.all(names.map((name) => connect({ port: server.port, name })));
  while (server.connected.length < 4) await new Promise((resolve) => setTimeout(resolve, 10));
  const answers: Record<string, (task: Record<string, unknown>) => unknown> = {
    good: (t) => ({
      ...head(t),
      samples: 3,
      metrics: { loss: 1 },
      weights: { b: new Float32Array([2, 4]) },
    }),
    shape: (t) => ({ ...head(t), samples: 3, metrics: {}, weights: { b: new Float32Array(3) } }),
    failed: (t) => ({
      fl: 1,
      type: "failure",
      task: t.task,
      round: t.round,
      error: "Out of memory",
    }),
  };
  const cancelled = clients.map(async (client, i) => {
    const task = await client.recv() as Record<string, unknown>;
    assert.equal(task.type, "task");
    const answer = answers[names[i]];
    if (answer !== undefined) await client.reply(answer(task));
    return (await client.recv({ timeout: 5_000 }).catch(() => undefined)) as { type?: string };
  });
  const result = await runLocalRound(server, TASK, { b: new Float32Array(2) }, {
    sites: siteNames(server, "e"),
    deadline: until(1_000),
  });
  assert.deepStrictEqual(result.answered, [["e/good", 3, { loss: 1 }]]);
  const missing = new Map(result.missing);
  assert.match(
    missing.get("e/shape")!,
    /^Invalid result: Update has the wrong shape: "b" is \[3\]/,
  );
  assert.equal(missing.get("e/failed"), "The site failed: Out of memory");
  assert.equal(missing.get("e/silent"), "No answer by the edge's deadline");
  const expected = new WeightedSum({ b: new Float32Array(2) });
  expected.add({ b: new Float32Array([2, 4]) }, 3);
  assert.deepStrictEqual(result.sum!.toPartial(), expected.toPartial());
  // The silent site was told its task is over.
  assert.equal((await cancelled[3]).type, "cancel");
  for (const client of clients) await client.close();
});

function head(task: Record<string, unknown>) {
  return { fl: 1, type: "result", task: task.task, round: task.round };
}
