/**
 * Unit tests of `answers.ts`: `takeAnswer()` (and the inbox's `replyTo` it
 * reads) and `checkQuorum()`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ByteBudget } from "../_session/budget.ts";
import { checkQuorum, takeAnswer } from "./answers.ts";
import { Inbox } from "../_session/inbox.ts";
import { clients, lateLog } from "../tests/fake_sources.ts";

// ---------------------------------------------------------------------------
// Inbox: replyTo

Deno.test("Inbox.push() records replyTo (0 by default) and putBack() keeps it", () => {
  const inbox = new Inbox();
  inbox.push("unsolicited", 1);
  inbox.push("reply", 1, undefined, 7);
  const a = inbox.take()!;
  const b = inbox.take()!;
  assert.equal(a.replyTo, 0);
  assert.equal(b.replyTo, 7);
  inbox.putBack(b);
  assert.equal(inbox.take()!.replyTo, 7);
});

// ---------------------------------------------------------------------------
// takeAnswer

Deno.test("takeAnswer() drops late replies before the answer, counts them and calls onLate", () => {
  const source = clients(1, 3).get(0)!;
  source.inbox.push("to 1", 1, undefined, 1);
  source.inbox.push("to 2", 1, undefined, 2);
  source.inbox.push("to 3", 1, undefined, 3);
  source.inbox.push("after", 1);
  const { calls, onLate } = lateLog();
  assert.equal(takeAnswer(0, source, onLate)!.value, "to 3");
  assert.deepStrictEqual(calls, [[0, "to 1", 1, 3], [0, "to 2", 2, 3]]);
  assert.deepStrictEqual([source.late.latest, source.late.sinceLatest], [3, 2]);
  assert.equal(takeAnswer(0, source, onLate)!.value, "after");
  assert.equal(takeAnswer(0, source, onLate), undefined);
});

Deno.test("takeAnswer() releases the receive budget held by a late reply", () => {
  const budget = new ByteBudget(1000);
  const source = clients(1, 2).get(0)!;
  source.inbox.push("late", 600, budget.force(600), 1);
  assert.equal(budget.used, 600);
  const { calls, onLate } = lateLog();
  assert.equal(takeAnswer(0, source, onLate), undefined);
  assert.equal(calls.length, 1);
  assert.equal(budget.used, 0);
});

// ---------------------------------------------------------------------------
// checkQuorum

Deno.test("checkQuorum() rejects a min or grace of the wrong type with TypeError", () => {
  assert.throws(() => checkQuorum({ min: "2" as unknown as number }, 3, "gather"), {
    name: "TypeError",
    message: "Invalid min for gather: expected a number, got string",
  });
  assert.throws(() => checkQuorum({ grace: null as unknown as number }, 3, "gather"), {
    name: "TypeError",
    message: "Invalid grace for gather: expected a number, got object",
  });
});

Deno.test("checkQuorum() rejects a min or grace out of range with RangeError", () => {
  for (const min of [0, -1, 1.5, 4, NaN, Infinity]) {
    assert.throws(() => checkQuorum({ min }, 3, "gatherSettled"), {
      name: "RangeError",
      message: `Invalid min for gatherSettled: "${min}" is not a positive integer of at most 3 ` +
        "(the clients asked)",
    });
  }
  for (const grace of [-1, NaN, Infinity]) {
    assert.throws(() => checkQuorum({ min: 1, grace }, 3, "uploads"), {
      name: "RangeError",
      message: `Invalid grace for uploads: "${grace}" is not a non-negative number of ms`,
    });
  }
  assert.deepStrictEqual(checkQuorum({ min: 3, grace: 5 }, 3, "gather"), {
    required: 3,
    grace: 5,
    given: true,
  });
  assert.deepStrictEqual(checkQuorum(undefined, 4, "gather"), {
    required: 4,
    grace: 0,
    given: false,
  });
});
