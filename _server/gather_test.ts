/**
 * Unit tests of `gather.ts`: `gatherFrom()`, which `gather()` and
 * `gatherSettled()` run, over fake connections.
 *
 * @module
 */

import assert from "node:assert/strict";
import { gatherFrom } from "./gather.ts";
import type { Source } from "./answers.ts";
import { FedcommError, PeerDisconnectedError, ProtocolError, TimeoutError } from "../errors.ts";
import { clients, gone, ids, lateLog, noLate } from "../tests/fake_sources.ts";
import { delay, settled } from "../tests/test_util.ts";

// ---------------------------------------------------------------------------
// gatherFrom: quorum

Deno.test("gatherFrom() with min 3 of 5 includes an answer within the grace and fails the one after it", async () => {
  const connections = clients(5);
  for (const id of [0, 1, 2]) connections.get(id)!.inbox.push(`answer ${id}`, 1);
  const start = performance.now();
  const result = gatherFrom(connections, ids(5), "gatherSettled", false, {
    min: 3,
    grace: 150,
    timeout: 5_000,
  }, noLate);
  await delay(30);
  assert.equal(await settled(result), false, "the grace is still running");
  connections.get(3)!.inbox.push("answer 3", 1);
  const { received, failed, late, quorum } = await result;
  const elapsed = performance.now() - start;
  connections.get(4)!.inbox.push("answer 4", 1); // after the grace
  assert.ok(elapsed >= 140 && elapsed < 2_000, `settled after ${elapsed} ms`);
  assert.deepStrictEqual(
    received,
    new Map([[0, "answer 0"], [1, "answer 1"], [2, "answer 2"], [3, "answer 3"]]),
  );
  assert.deepStrictEqual([...failed.keys()], [4]);
  const error = failed.get(4)!;
  assert.ok(error instanceof TimeoutError);
  assert.equal(
    error.message,
    'GatherSettled: client "4" did not answer within the grace of 150 ms after 3 of 5 clients answered',
  );
  assert.equal(error.clientId, 4);
  assert.deepStrictEqual(error.clientIds, [4]);
  assert.equal(quorum, true);
  assert.equal(late.size, 0);
  assert.equal(connections.get(4)!.inbox.size, 1, "the answer after the grace is left queued");
});

Deno.test("gatherFrom() with min and no grace settles as soon as the quorum answered", async () => {
  const connections = clients(3);
  const result = gatherFrom(connections, ids(3), "gatherSettled", false, { min: 2 }, noLate);
  connections.get(2)!.inbox.push("two", 1);
  assert.equal(await settled(result), false);
  connections.get(0)!.inbox.push("zero", 1);
  const { received, failed, quorum } = await result;
  assert.deepStrictEqual(received, new Map([[0, "zero"], [2, "two"]]));
  assert.ok(failed.get(1) instanceof TimeoutError);
  assert.match(failed.get(1)!.message, /within the grace of 0 ms after 2 of 3 clients answered$/);
  assert.equal(quorum, true);
});

Deno.test("gatherFrom() with min settles before the grace ends once every other client failed", async () => {
  const connections = clients(3);
  connections.get(0)!.inbox.push("zero", 1);
  connections.get(1)!.inbox.push("one", 1);
  const start = performance.now();
  const result = gatherFrom(connections, ids(3), "gatherSettled", false, {
    min: 2,
    grace: 60_000,
  }, noLate);
  await delay(10);
  connections.get(2)!.inbox.end(gone(2));
  const { received, failed, quorum } = await result;
  assert.ok(performance.now() - start < 5_000);
  assert.equal(received.size, 2);
  assert.ok(failed.get(2) instanceof PeerDisconnectedError);
  assert.equal(quorum, true);
});

Deno.test("gatherFrom() at the deadline without the quorum lists the silent clients with the deadline's TimeoutError", async () => {
  const connections = clients(4);
  connections.get(0)!.inbox.push("zero", 1);
  connections.get(3)!.inbox.end(new ProtocolError("Malformed frame", { clientId: 3 }));
  const { received, failed, quorum } = await gatherFrom(
    connections,
    ids(4),
    "gatherSettled",
    false,
    {
      min: 2,
      grace: 10,
      timeout: 50,
    },
    noLate,
  );
  assert.deepStrictEqual(received, new Map([[0, "zero"]]));
  assert.deepStrictEqual([...failed.keys()].sort(), [1, 2, 3]);
  assert.ok(failed.get(3) instanceof ProtocolError);
  const timeout = failed.get(1)!;
  assert.ok(timeout instanceof TimeoutError);
  assert.equal(timeout.message, "GatherSettled timed out after 50 ms: waiting for clients [1, 2]");
  assert.equal(failed.get(2), timeout);
  assert.equal(quorum, false);
});

Deno.test("gatherFrom() without min reports quorum only when every client answered", async () => {
  const connections = clients(2);
  connections.get(0)!.inbox.push("zero", 1);
  const partial = await gatherFrom(connections, ids(2), "gatherSettled", false, {
    timeout: 20,
  }, noLate);
  assert.equal(partial.quorum, false);
  assert.ok(partial.failed.get(1) instanceof TimeoutError);
  connections.get(0)!.inbox.push("zero again", 1);
  connections.get(1)!.inbox.push("one", 1);
  const full = await gatherFrom(connections, ids(2), "gatherSettled", false, undefined, noLate);
  assert.equal(full.quorum, true);
  assert.equal(full.failed.size, 0);
});

// ---------------------------------------------------------------------------
// gatherFrom: strict (gather)

Deno.test("gatherFrom() strict with min returns the answers once the quorum and grace are reached", async () => {
  const connections = clients(3);
  connections.get(1)!.inbox.end(gone(1));
  const result = gatherFrom(connections, ids(3), "gather", true, { min: 2, grace: 20 }, noLate);
  connections.get(0)!.inbox.push("zero", 1);
  assert.equal(await settled(result), false, "one failure leaves the quorum reachable");
  connections.get(2)!.inbox.push("two", 1);
  const { received, quorum } = await result;
  assert.deepStrictEqual(received, new Map([[0, "zero"], [2, "two"]]));
  assert.equal(quorum, true);
});

Deno.test("gatherFrom() strict with min throws the first failure once the quorum is unreachable and puts back what it took", async () => {
  const connections = clients(4);
  connections.get(0)!.inbox.push("zero", 1);
  const result = gatherFrom(connections, ids(4), "gather", true, { min: 3 }, noLate);
  const first = gone(1);
  connections.get(1)!.inbox.end(first);
  assert.equal(await settled(result), false, "3 of 4 can still answer");
  connections.get(2)!.inbox.end(new ProtocolError("Malformed frame", { clientId: 2 }));
  await assert.rejects(result, (error) => error === first);
  assert.equal(connections.get(0)!.inbox.take()!.value, "zero", "the answer taken is put back");
  // The inboxes are free again.
  connections.get(3)!.inbox.listen(() => {})();
});

Deno.test("gatherFrom() strict with min at the deadline returns the quorum without waiting out the grace", async () => {
  const connections = clients(3);
  connections.get(0)!.inbox.push("zero", 1);
  connections.get(1)!.inbox.push("one", 1);
  const received = (await gatherFrom(connections, ids(3), "gather", true, {
    min: 2,
    grace: 60_000,
    timeout: 40,
  }, noLate)).received;
  assert.deepStrictEqual(received, new Map([[0, "zero"], [1, "one"]]));
});

Deno.test("gatherFrom() strict with min throws the deadline's TimeoutError without the quorum and puts back what it took", async () => {
  const connections = clients(3);
  connections.get(2)!.inbox.push("two", 1);
  await assert.rejects(
    gatherFrom(connections, ids(3), "gather", true, { min: 2, timeout: 30 }, noLate),
    (error) =>
      error instanceof TimeoutError &&
      error.message === "Gather timed out after 30 ms: waiting for clients [0, 1]" &&
      error.clientIds.join() === "0,1",
  );
  assert.equal(connections.get(2)!.inbox.take()!.value, "two");
});

Deno.test("gatherFrom() strict without min throws the first failure at once and puts back what it took", async () => {
  const connections = clients(3);
  connections.get(0)!.inbox.push("zero", 1);
  const result = gatherFrom(connections, ids(3), "gather", true, undefined, noLate);
  const error = gone(2);
  connections.get(2)!.inbox.end(error);
  await assert.rejects(result, (e) => e === error);
  assert.equal(connections.get(0)!.inbox.take()!.value, "zero");
});

Deno.test("gatherFrom() rejects with the abort reason even after the quorum", async () => {
  const connections = clients(2);
  connections.get(0)!.inbox.push("zero", 1);
  const controller = new AbortController();
  const result = gatherFrom(connections, ids(2), "gatherSettled", false, {
    min: 1,
    grace: 60_000,
    signal: controller.signal,
  }, noLate);
  const reason = new Error("Stop");
  controller.abort(reason);
  await assert.rejects(result, (e) => e === reason);
  assert.equal(connections.get(0)!.inbox.take()!.value, "zero");
});

// ---------------------------------------------------------------------------
// gatherFrom: late replies

Deno.test("gatherFrom() drops a late reply, counts it, calls onLate, and waits for the client's answer", async () => {
  const connections = clients(2, 2); // the server sent each client 2 messages
  connections.get(0)!.inbox.push("to round 1", 1, undefined, 1);
  connections.get(1)!.inbox.push("one, round 2", 1, undefined, 2);
  const { calls, onLate } = lateLog();
  const result = gatherFrom(connections, ids(2), "gatherSettled", false, undefined, onLate);
  assert.equal(await settled(result), false, "a late reply is no answer");
  assert.deepStrictEqual(calls, [[0, "to round 1", 1, 2]]);
  connections.get(0)!.inbox.push("zero, round 2", 1, undefined, 2);
  const { received, failed, late, quorum } = await result;
  assert.deepStrictEqual(received, new Map([[0, "zero, round 2"], [1, "one, round 2"]]));
  assert.equal(failed.size, 0);
  assert.deepStrictEqual(late, new Map([[0, 1]]));
  assert.equal(quorum, true);
  assert.equal(calls.length, 1);
});

Deno.test("gatherFrom() judges lateness when a message is taken, not when it arrived", async () => {
  const connections = clients(1, 1);
  const client = connections.get(0)!;
  client.inbox.push("to 1", 1, undefined, 1); // an answer when it arrived
  client.messagesSent = 2; // the server sent another message since
  const { calls, onLate } = lateLog();
  const { received, failed, late } = await gatherFrom(connections, [0], "gatherSettled", false, {
    timeout: 20,
  }, onLate);
  assert.equal(received.size, 0);
  assert.ok(failed.get(0) instanceof TimeoutError);
  assert.deepStrictEqual(late, new Map([[0, 1]]));
  assert.deepStrictEqual(calls, [[0, "to 1", 1, 2]]);
});

Deno.test("gatherFrom() takes an unsolicited message as an answer whatever was sent", async () => {
  const connections = clients(1, 9);
  connections.get(0)!.inbox.push("unsolicited", 1); // replyTo 0
  const { received, late } = await gatherFrom(connections, [0], "gather", true, undefined, noLate);
  assert.deepStrictEqual(received, new Map([[0, "unsolicited"]]));
  assert.equal(late.size, 0);
});

Deno.test("gatherFrom() fails a client that sent only late replies and then left", async () => {
  const connections = clients(1, 3);
  connections.get(0)!.inbox.push("to 2", 1, undefined, 2);
  const error = gone(0);
  connections.get(0)!.inbox.end(error);
  const { onLate } = lateLog();
  const { failed, late } = await gatherFrom(connections, [0], "gatherSettled", false, {}, onLate);
  assert.equal(failed.get(0), error);
  assert.deepStrictEqual(late, new Map([[0, 1]]));
});

Deno.test("gatherFrom() rejects an invalid min before taking anything", async () => {
  const connections = clients(2);
  connections.get(0)!.inbox.push("zero", 1);
  await assert.rejects(
    gatherFrom(connections, ids(2), "gather", true, { min: 3 }, noLate),
    RangeError,
  );
  assert.equal(connections.get(0)!.inbox.size, 1);
});

// ---------------------------------------------------------------------------
// gatherFrom: failures

Deno.test("gatherFrom() in gatherSettled mode settles at once when the quorum can no longer be reached, as gather does", async () => {
  const connections = clients(4);
  connections.get(0)!.inbox.push("answer 0", 1);
  const result = gatherFrom(connections, ids(4), "gatherSettled", false, {
    min: 3,
    timeout: 10_000,
  }, noLate);
  connections.get(1)!.inbox.end(new PeerDisconnectedError('Client "1" disconnected'));
  connections.get(2)!.inbox.end(new PeerDisconnectedError('Client "2" disconnected'));
  const { received, failed, quorum } = await result;
  assert.deepStrictEqual(received, new Map([[0, "answer 0"]]));
  assert.equal(quorum, false);
  assert.ok(failed.get(1) instanceof PeerDisconnectedError);
  assert.ok(failed.get(2) instanceof PeerDisconnectedError);
  const skipped = failed.get(3)!;
  assert.ok(skipped instanceof FedcommError && !(skipped instanceof TimeoutError), String(skipped));
  assert.equal(
    skipped.message,
    'GatherSettled: client "3" was not waited for: the quorum of 3 can no longer be reached (2 of 4 failed)',
  );
  assert.equal(skipped.clientId, 3);
});

Deno.test("gatherFrom() lists a client that is away with a PeerDisconnectedError naming its drop", async () => {
  const connections = clients(2);
  const drop = new PeerDisconnectedError('Client "1" disconnected', { clientId: 1 });
  const away = { since: performance.now(), reason: drop };
  const sources = new Map<number, Source>([[0, connections.get(0)!], [1, {
    ...connections.get(1)!,
    away,
  }]]);
  connections.get(0)!.inbox.push("answer 0", 1);
  const { received, failed } = await gatherFrom(sources, ids(2), "gatherSettled", false, {
    min: 1,
  }, noLate);
  assert.deepStrictEqual(received, new Map([[0, "answer 0"]]));
  const error = failed.get(1)!;
  assert.ok(error instanceof PeerDisconnectedError, String(error));
  assert.match(
    error.message,
    /^GatherSettled: client "1" is away: its connection dropped \d+ ms ago and it has not resumed: Client "1" disconnected$/,
  );
  assert.equal(error.cause, drop);
});
