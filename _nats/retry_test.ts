import assert from "node:assert/strict";
import { NatsError, PermanentNatsError } from "./errors.ts";
import { retrying, until } from "./retry.ts";

Deno.test("retrying() tries again until the operation succeeds", async () => {
  let tries = 0;
  const value = await retrying("Publishing", () => {
    if (++tries < 3) return Promise.reject(new Error("connection refused"));
    return Promise.resolve("done");
  }, until(10_000));
  assert.equal(value, "done");
  assert.equal(tries, 3);
});

Deno.test("retrying() gives up at the deadline with a NatsError naming the operation", async () => {
  let tries = 0;
  await assert.rejects(
    retrying("Publishing the task", () => {
      tries++;
      return Promise.reject(new Error("no responders"));
    }, until(300)),
    (error: Error) => {
      assert.ok(error instanceof NatsError);
      assert.match(error.message, /^Publishing the task failed after \d+ tries: no responders$/);
      return true;
    },
  );
  assert.ok(tries >= 1);
});

Deno.test("retrying() throws a permanent error at once", async () => {
  for (const error of [new TypeError("bad"), new PermanentNatsError("missing")]) {
    let tries = 0;
    await assert.rejects(
      retrying("Getting", () => {
        tries++;
        return Promise.reject(error);
      }, until(10_000)),
      error,
    );
    assert.equal(tries, 1);
  }
});

Deno.test("until() refuses a negative timeout", () => {
  assert.throws(() => until(-1), RangeError);
});
