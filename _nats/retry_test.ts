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

Deno.test("retrying() turns NATS refusing the user into a PermanentNatsError at once", async () => {
  const refused = new Error(`Permissions Violation for Publish to "fedcomm.j.up.b"`, {
    cause: Object.assign(new Error("denied"), { name: "PermissionViolationError" }),
  });
  refused.name = "RequestError";
  let tries = 0;
  await assert.rejects(
    retrying("Publishing the taken message", () => {
      tries++;
      return Promise.reject(refused);
    }, until(10_000)),
    (error: Error) => {
      assert.ok(error instanceof PermanentNatsError);
      assert.equal(error.name, "NatsError");
      assert.equal(
        error.message,
        `Publishing the taken message failed: NATS refused it: ` +
          `Permissions Violation for Publish to "fedcomm.j.up.b"`,
      );
      assert.equal(error.cause, refused);
      return true;
    },
  );
  assert.equal(tries, 1);
});
