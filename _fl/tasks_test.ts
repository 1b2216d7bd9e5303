import assert from "node:assert/strict";
import {
  type Client,
  connect,
  listen,
  NdArray,
  PeerDisconnectedError,
  SendTimeoutError,
  type Server,
  TimeoutError,
} from "../mod.ts";
import type { TaskMessage } from "./messages.ts";
import { runSite, type SiteResult } from "./site.ts";
import { Task, TaskCancelledError } from "./task.ts";
import { tasks } from "./tasks.ts";
import type { Weights } from "./weights.ts";
import { until } from "../tests/test_util.ts";

const WAIT = { timeout: 10_000 };

function model(): Weights {
  return {
    "fc.weight": new NdArray(new Float32Array([0, 1, 2, 3, 4, 5]), [2, 3]),
    "fc.bias": new Float32Array(3),
  };
}

function task(id: number, extra: Partial<TaskMessage> = {}): Record<string, unknown> {
  return {
    fl: 1,
    type: "task",
    job: "digits",
    task: id,
    round: id,
    kind: "train",
    config: { lr: 0.5 },
    weights: model(),
    ...extra,
  };
}

const stop = (reason = "done") => ({ fl: 1, type: "stop", reason });

function doubled(t: Task): Weights {
  const w = t.weights["fc.weight"] as NdArray<Float32Array>;
  return {
    "fc.weight": new NdArray(w.data.map((x) => 2 * x), w.shape),
    "fc.bias": (t.weights["fc.bias"] as Float32Array).map((x) => 2 * x),
  };
}

async function pair(): Promise<{ server: Server; client: Client } & AsyncDisposable> {
  const server = listen({ clients: 1 });
  const client = await connect({ port: server.port });
  await server.ready(WAIT);
  return {
    server,
    client,
    async [Symbol.asyncDispose]() {
      await client.close();
      await server.close();
    },
  };
}

/** The one answer of client 0 to the server's last message. */
async function answer(server: Server): Promise<Record<string, unknown>> {
  return (await server.gather(WAIT)).get(0) as Record<string, unknown>;
}

Deno.test("tasks() yields tasks and replies with results", async () => {
  await using ends = await pair();
  const { server, client } = ends;
  await server.broadcast(task(1));
  const loop = tasks(client, WAIT);
  const seen: Task[] = [];
  for await (const t of loop) {
    seen.push(t);
    if (t.kind === "train") {
      assert.deepStrictEqual((t.weights["fc.weight"] as NdArray).shape, [2, 3]);
      assert.deepStrictEqual(t.config, { lr: 0.5 });
      assert.equal(await t.reply({ weights: doubled(t), samples: 10, metrics: { loss: 1 } }), true);
      const result = await answer(server);
      assert.deepStrictEqual(
        [result.type, result.task, result.round, result.samples, result.metrics],
        ["result", 1, 1, 10, { loss: 1 }],
      );
      const w = (result.weights as Weights)["fc.weight"] as NdArray<Float32Array>;
      assert.deepStrictEqual([...w.data], [0, 2, 4, 6, 8, 10]);
      await server.broadcast(task(2, { kind: "evaluate" }));
    } else {
      assert.equal(await t.reply({ samples: 4, metrics: { accuracy: 0.5 } }), true);
      assert.equal(await t.fail("twice"), false); // answered already
      assert.deepStrictEqual(await answer(server), {
        fl: 1,
        type: "result",
        task: 2,
        round: 2,
        samples: 4,
        metrics: { accuracy: 0.5 },
      });
      await server.broadcast(stop("finished"));
    }
  }
  assert.equal(loop.stopReason, "finished");
  assert.deepStrictEqual(seen.map((t) => [t.id, t.kind, t.number, t.job]), [
    [1, "train", 1, "digits"],
    [2, "evaluate", 2, "digits"],
  ]);
  assert.deepStrictEqual(seen.map((t) => t.reason), ["superseded", "stopped"]);
});

Deno.test("tasks() aborts a task's signal when the coordinator cancels it", async () => {
  await using ends = await pair();
  const { server, client } = ends;
  await server.broadcast(task(1));
  for await (const t of tasks(client, WAIT)) {
    if (t.id === 1) {
      const aborted = new Promise((resolve) => t.signal.addEventListener("abort", resolve));
      await server.broadcast({ fl: 1, type: "cancel", task: 1, round: 1, reason: "removed" });
      await aborted; // while "training"
      assert.equal(t.stale, true);
      assert.equal(t.reason, "removed");
      assert.ok(t.signal.reason instanceof TaskCancelledError);
      assert.equal(await t.reply({ weights: doubled(t), samples: 1 }), false);
      assert.equal(await t.fail(new Error("late")), false);
      await server.broadcast(task(2));
    } else {
      assert.equal(await t.reply({ weights: doubled(t), samples: 2 }), true);
      assert.equal((await answer(server)).task, 2);
      await server.broadcast(stop());
    }
  }
  assert.equal(server.stats(0).messagesReceived, 1); // nothing for task 1
});

Deno.test("tasks() makes the task at work stale when a newer one comes, and skips those never taken", async () => {
  await using ends = await pair();
  const { server, client } = ends;
  await server.broadcast(task(1));
  const ids: number[] = [];
  for await (const t of tasks(client, WAIT)) {
    ids.push(t.id);
    if (t.id === 1) {
      for (const id of [2, 3, 4]) await server.broadcast(task(id));
      await server.broadcast({ fl: 1, type: "cancel", task: 4, round: 4, reason: "stale" });
      await server.broadcast(task(5));
      await until(() => client.messagesReceived === 6, "the tasks arrived");
      assert.equal(t.reason, "superseded");
    } else {
      assert.equal(await t.reply({ weights: doubled(t), samples: 1 }), true);
      assert.equal((await answer(server)).task, 5);
      await server.broadcast(stop());
    }
  }
  assert.deepStrictEqual(ids, [1, 5]);
});

Deno.test("tasks() answers a malformed task with a failure and goes on", async () => {
  await using ends = await pair();
  const { server, client } = ends;
  const bad: [unknown, RegExp][] = [
    [task(1, { kind: "predict" as "train" }), /"kind" is "predict", not "train" or "evaluate"/],
    [task(2, { weights: { w: new Int32Array(2) } as unknown as Weights }), /"w" is an Int32Array/],
    ["hello", /it is "hello", not a map/],
    [{ ...task(3), fl: 2 }, /"fl" is "2", this side speaks version 1/],
  ];
  const loop = tasks(client, WAIT)[Symbol.asyncIterator]();
  const first = loop.next();
  for (const [value, error] of bad) {
    await server.broadcast(value);
    const failure = await answer(server);
    assert.equal(failure.type, "failure");
    assert.match(failure.error as string, error);
  }
  assert.deepStrictEqual(
    server.stats(0).messagesReceived,
    4,
  );
  await server.broadcast(task(7));
  const t = (await first).value as Task;
  assert.equal(t.id, 7);
  await loop.return();
});

Deno.test("Task.reply() checks the update against the model", async () => {
  await using ends = await pair();
  const { server, client } = ends;
  await server.broadcast(task(1));
  for await (const t of tasks(client, WAIT)) {
    const good = doubled(t);
    await assert.rejects(
      t.reply({
        weights: { ...good, "fc.weight": new NdArray(new Float32Array(6), [3, 2]) },
        samples: 1,
      }),
      {
        name: "TypeError",
        message: `Update has the wrong shape: "fc.weight" is [3, 2], the model's is [2, 3]`,
      },
    );
    await assert.rejects(
      t.reply({ weights: { ...good, "fc.bias": new Float64Array(3) }, samples: 1 }),
      /wrong dtype: "fc.bias" is float64, the model's is float32/,
    );
    await assert.rejects(
      t.reply({ weights: { "fc.weight": good["fc.weight"] }, samples: 1 }),
      /missing a tensor: "fc.bias"/,
    );
    await assert.rejects(
      t.reply({ weights: { ...good, "fc.bias": new Float32Array([0, NaN, 0]) }, samples: 1 }),
      { name: "RangeError", message: `Update has a non-finite value: "fc.bias"[1] is NaN` },
    );
    await assert.rejects(t.reply({ samples: 1 }), /a train result has no "weights"/);
    await assert.rejects(t.reply({ weights: good, samples: -1 }), /"samples" is "-1"/);
    await assert.rejects(
      t.reply({ weights: good, samples: 1, metrics: { loss: Infinity } }),
      /metric "loss" is "Infinity"/,
    );
    assert.equal(t.answered, false);
    assert.equal(await t.fail(new RangeError("Out of memory")), true);
    assert.deepStrictEqual(await answer(server), {
      fl: 1,
      type: "failure",
      task: 1,
      round: 1,
      error: "RangeError: Out of memory",
    });
    await server.broadcast(stop());
  }
});

Deno.test("tasks() ends on a close, times out, and leaving it stops reading", async () => {
  await using ends = await pair();
  const { server, client } = ends;
  await assert.rejects(
    Array.fromAsync(tasks(client, { timeout: 100 })),
    (error) => error instanceof TimeoutError && /No task arrived within 100 ms/.test(error.message),
  );
  const controller = new AbortController();
  const aborted = Array.fromAsync(tasks(client, { signal: controller.signal }));
  controller.abort(new Error("enough"));
  await assert.rejects(aborted, /enough/);
  await server.broadcast(task(1));
  for await (const t of tasks(client, WAIT)) {
    assert.equal(t.id, 1);
    break;
  }
  await server.broadcast("after the loop");
  assert.equal(await client.recv(WAIT), "after the loop"); // the loop took nothing more
  assert.throws(() => tasks(client, { timeout: -1 }), RangeError);
  await server.close();
  const loop = tasks(client, WAIT);
  assert.deepStrictEqual(await Array.fromAsync(loop), []);
  assert.equal(loop.stopReason, undefined);
});

/** A TCP relay whose target can change: cutting it looks like a crash of the server behind it. */
class Relay implements Disposable {
  readonly #listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  readonly #conns = new Set<Deno.Conn>();
  target: number;

  constructor(target: number) {
    this.target = target;
    this.#accept();
  }

  get port(): number {
    return this.#listener.addr.port;
  }

  async #accept(): Promise<void> {
    try {
      for await (const conn of this.#listener) this.#join(conn);
    } catch {
      // Closed.
    }
  }

  async #join(client: Deno.Conn): Promise<void> {
    let server: Deno.Conn;
    try {
      server = await Deno.connect({ hostname: "127.0.0.1", port: this.target });
    } catch {
      client.close();
      return;
    }
    this.#conns.add(client).add(server);
    await Promise.all([this.#pipe(client, server), this.#pipe(server, client)]);
  }

  async #pipe(from: Deno.Conn, to: Deno.Conn): Promise<void> {
    try {
      await from.readable.pipeTo(to.writable, { preventClose: true });
    } catch {
      // Cut.
    }
    this.#close(from);
    this.#close(to);
  }

  #close(conn: Deno.Conn): void {
    if (!this.#conns.delete(conn)) return;
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  }

  /** Closes every connection at once, without a fedcomm close. */
  cut(): void {
    for (const conn of [...this.#conns]) this.#close(conn);
  }

  [Symbol.dispose](): void {
    this.#listener.close();
    this.cut();
  }
}

Deno.test("tasks() rejects with PeerDisconnectedError when the session is lost", async () => {
  await using first = listen({ clients: 1 });
  await using second = listen({ clients: 1 });
  using relay = new Relay(first.port);
  await using client = await connect({ port: relay.port });
  const loop = Array.fromAsync(tasks(client));
  relay.target = second.port; // the restarted coordinator knows nothing of the session
  relay.cut();
  await assert.rejects(loop, PeerDisconnectedError);
});

function train(t: Task) {
  if (t.config.fail === true) throw new TypeError("No data for this round");
  return { weights: doubled(t), samples: 3, metrics: { loss: 0.5 } };
}

Deno.test("runSite() answers with its handlers, failures included", async () => {
  await using server = listen({ clients: 1 });
  const site = runSite({ port: server.port, name: "site-a", train, ...WAIT });
  await server.ready(WAIT);
  assert.equal(server.stats(0).name, "site-a");
  await server.broadcast(task(1));
  assert.equal((await answer(server)).type, "result");
  await server.broadcast(task(2, { config: { fail: true } }));
  assert.equal((await answer(server)).error, "TypeError: No data for this round");
  await server.broadcast(task(3, { kind: "evaluate" }));
  assert.equal(
    (await answer(server)).error,
    `TypeError: This site has no handler for "evaluate" tasks`,
  );
  await server.broadcast(stop("job done"));
  assert.deepStrictEqual(
    await site,
    {
      results: 1,
      failures: 2,
      stale: 0,
      reconnects: 0,
      stopReason: "job done",
    } satisfies SiteResult,
  );
  await assert.rejects(runSite({ port: server.port, reconnectTimeout: 0 }), RangeError);
});

Deno.test("runSite() connects again with the same name when the coordinator restarts", async () => {
  await using first = listen({ clients: 2, open: true });
  await using second = listen({ clients: 2, open: true });
  using relay = new Relay(first.port);
  const sessions: Client[] = [];
  const site = runSite({
    port: relay.port,
    name: "site-b",
    train,
    reconnectTimeout: 20_000,
    onSession: (client) => sessions.push(client),
  });
  await first.ready({ clients: 1, ...WAIT });
  await first.broadcast(task(1));
  assert.equal((await answer(first)).task, 1);
  relay.target = second.port;
  relay.cut(); // the coordinator "crashed" and came back on the same address
  await second.ready({ clients: 1, ...WAIT });
  const [id] = second.connected;
  assert.equal(second.stats(id).name, "site-b");
  await second.broadcast(task(2));
  assert.equal(((await second.gather(WAIT)).get(id) as { task: number }).task, 2);
  await second.broadcast(stop());
  const outcome = await site;
  assert.deepStrictEqual(outcome, {
    results: 2,
    failures: 0,
    stale: 0,
    reconnects: 1,
    stopReason: "done",
  });
  assert.equal(sessions.length, 2);
});

Deno.test("runSite() gives up after reconnectTimeout", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close(); // nothing listens there now
  const started = performance.now();
  await assert.rejects(runSite({ port, train, timeout: 200, reconnectTimeout: 600 }));
  assert.ok(performance.now() - started < 10_000);
});

Deno.test("Task.reply() can be sent again after a timeout that queued nothing, not after one that did", async () => {
  const sent: unknown[] = [];
  let failWith: SendTimeoutError | undefined;
  const client = {
    reply(message: unknown) {
      if (failWith !== undefined) return Promise.reject(failWith);
      sent.push(message);
      return Promise.resolve();
    },
  } as unknown as Client;
  const make = () =>
    new Task(client, task(1) as unknown as TaskMessage, 1, new AbortController().signal);
  const result = { weights: model(), samples: 3 };
  const first = make();
  failWith = new SendTimeoutError("Reply timed out: not queued", { queued: false });
  await assert.rejects(first.reply(result), SendTimeoutError);
  assert.equal(first.answered, false, "nothing was sent");
  failWith = undefined;
  assert.equal(await first.reply(result), true);
  assert.equal(sent.length, 1);
  const second = make();
  failWith = new SendTimeoutError("Reply timed out: queued", { queued: true });
  await assert.rejects(second.reply(result), SendTimeoutError);
  assert.equal(second.answered, true, "queued: it will be delivered");
  failWith = undefined;
  assert.equal(await second.reply(result), false);
  assert.equal(sent.length, 1);
});
