/**
 * Unit tests of `uploads.ts`: `uploadsFrom()`, which `uploads()` runs, over
 * fake connections.
 *
 * @module
 */

import assert from "node:assert/strict";
import { uploadsFrom } from "./uploads.ts";
import { ProtocolError, TimeoutError } from "../errors.ts";
import { clients, gone, ids, lateLog, noLate } from "../tests/fake_sources.ts";
import { settled } from "../tests/test_util.ts";
import type { Upload } from "../types.ts";

/** Collects what an upload iteration yields, and how it ended. */
async function drain(
  iteration: AsyncGenerator<Upload>,
): Promise<{ uploads: [number, unknown][]; error?: unknown }> {
  const uploads: [number, unknown][] = [];
  try {
    for await (const { id, value } of iteration) uploads.push([id, value]);
  } catch (error) {
    return { uploads, error };
  }
  return { uploads };
}

Deno.test("uploadsFrom() with min skips a failing client, then yields for the grace and ends", async () => {
  const connections = clients(3);
  const c = (id: number) => connections.get(id)!.inbox;
  c(0).push("0a", 1);
  c(1).push("1a", 1);
  c(0).push("0b", 1);
  c(2).end(gone(2));
  const iteration = uploadsFrom(
    connections,
    ids(3),
    { count: 2, min: 1, grace: 80, timeout: 5_000 },
    noLate,
  );
  const start = performance.now();
  const seen: [number, unknown][] = [];
  for await (const { id, value } of iteration) {
    seen.push([id, value]);
    if (value === "0b") setTimeout(() => c(1).push("1b", 1), 20); // within the grace
  }
  const elapsed = performance.now() - start;
  assert.deepStrictEqual(seen, [[0, "0a"], [1, "1a"], [0, "0b"], [1, "1b"]]);
  assert.ok(elapsed < 2_000);
});

Deno.test("uploadsFrom() with min ends when the grace runs out, leaving the rest queued", async () => {
  const connections = clients(2);
  const c = (id: number) => connections.get(id)!.inbox;
  c(0).push("0a", 1);
  const start = performance.now();
  const { uploads, error } = await drain(
    uploadsFrom(connections, ids(2), { count: 1, min: 1, grace: 50, timeout: 5_000 }, noLate),
  );
  const elapsed = performance.now() - start;
  assert.equal(error, undefined);
  assert.deepStrictEqual(uploads, [[0, "0a"]]);
  assert.ok(elapsed >= 45 && elapsed < 2_000, `ended after ${elapsed} ms`);
  c(1).push("1a", 1);
  assert.equal(c(1).size, 1);
});

Deno.test("uploadsFrom() with min throws the first failure once the quorum is unreachable", async () => {
  const connections = clients(3);
  const c = (id: number) => connections.get(id)!.inbox;
  const first = gone(1);
  c(0).push("0a", 1);
  c(1).end(first);
  const iteration = uploadsFrom(connections, ids(3), { count: 1, min: 2 }, noLate);
  assert.deepStrictEqual(await iteration.next(), { done: false, value: { id: 0, value: "0a" } });
  const next = iteration.next();
  assert.equal(await settled(next), false, "client 2 can still make the quorum");
  c(2).end(new ProtocolError("Malformed frame", { clientId: 2 }));
  await assert.rejects(next, (e) => e === first);
});

Deno.test("uploadsFrom() counts toward the quorum only clients that delivered their full count", async () => {
  const connections = clients(3);
  const c = (id: number) => connections.get(id)!.inbox;
  c(0).push("0a", 1);
  c(1).push("1a", 1);
  const { uploads, error } = await drain(
    uploadsFrom(connections, ids(3), { count: 2, min: 1, grace: 60_000, timeout: 40 }, noLate),
  );
  assert.deepStrictEqual(uploads, [[0, "0a"], [1, "1a"]]);
  assert.ok(error instanceof TimeoutError, "no client delivered 2");
  assert.deepStrictEqual(error.clientIds, [0, 1, 2]);
});

Deno.test("uploadsFrom() at the deadline without the quorum throws TimeoutError naming the clients still owing", async () => {
  const connections = clients(3);
  const c = (id: number) => connections.get(id)!.inbox;
  c(0).push("0a", 1);
  c(0).push("0b", 1);
  c(1).push("1a", 1);
  const { uploads, error } = await drain(
    uploadsFrom(connections, ids(3), { count: 2, min: 2, timeout: 40 }, noLate),
  );
  assert.deepStrictEqual(uploads, [[0, "0a"], [0, "0b"], [1, "1a"]]);
  assert.ok(error instanceof TimeoutError);
  assert.equal(error.message, "Uploads timed out after 40 ms: waiting for clients [1, 2]");
  assert.deepStrictEqual(error.clientIds, [1, 2]);
});

Deno.test("uploadsFrom() with the quorum reached at the deadline ends normally", async () => {
  const connections = clients(2);
  const c = (id: number) => connections.get(id)!.inbox;
  c(0).push("0a", 1);
  c(0).push("0b", 1);
  const { uploads, error } = await drain(
    uploadsFrom(connections, ids(2), { count: 2, min: 1, grace: 60_000, timeout: 40 }, noLate),
  );
  assert.equal(error, undefined);
  assert.deepStrictEqual(uploads, [[0, "0a"], [0, "0b"]]);
});

Deno.test("uploadsFrom() drops late replies, also when the server sent more while it yielded", async () => {
  const connections = clients(2, 1);
  const c = (id: number) => connections.get(id)!;
  c(0).inbox.push("0 to 1", 1, undefined, 1);
  c(1).inbox.push("1 to 1", 1, undefined, 1);
  const { calls, onLate } = lateLog();
  const iteration = uploadsFrom(connections, ids(2), { count: 1 }, onLate);
  assert.deepStrictEqual(await iteration.next(), {
    done: false,
    value: { id: 0, value: "0 to 1" },
  });
  c(1).messagesSent = 2; // the server sent client 1 another message meanwhile
  const next = iteration.next();
  assert.equal(await settled(next), false, "client 1's queued reply is late now");
  assert.deepStrictEqual(calls, [[1, "1 to 1", 1, 2]]);
  c(1).inbox.push("1 to 2", 1, undefined, 2);
  assert.deepStrictEqual(await next, { done: false, value: { id: 1, value: "1 to 2" } });
  assert.deepStrictEqual(await iteration.next(), { done: true, value: undefined });
});

Deno.test("uploadsFrom() without min still throws when a client leaves owing", async () => {
  const connections = clients(2);
  connections.get(0)!.inbox.push("0a", 1);
  const error = gone(1);
  connections.get(1)!.inbox.end(error);
  const result = await drain(uploadsFrom(connections, ids(2), { count: 1 }, noLate));
  assert.equal(result.error, error);
});

Deno.test("uploadsFrom() rejects min with an infinite count", async () => {
  const connections = clients(1);
  await assert.rejects(
    uploadsFrom(connections, [0], { count: Infinity, min: 1 }, noLate).next(),
    {
      name: "RangeError",
      message: 'Invalid min for uploads: a quorum needs a finite count, not "Infinity"',
    },
  );
});
