import assert from "node:assert/strict";
import { Outbox } from "./outbox.ts";
import { NO_DEADLINE } from "../_util/wait.ts";

Deno.test("Outbox.resend() returns exactly the frames after the peer's count, small and large, intact", () => {
  const outbox = new Outbox(1024 * 1024);
  const scratch = new Uint8Array(100);
  const expected: Uint8Array[] = [];
  for (let i = 0; i < 10; i++) {
    scratch.fill(i); // the caller reuses its scratch memory: the outbox must have copied it
    const frame = scratch.subarray(0, 10 + i);
    expected.push(frame.slice());
    assert.equal(outbox.add([frame], true), i + 1);
  }
  const large = [new Uint8Array([1, 2]), new Uint8Array(70_000).fill(7)];
  outbox.add(large, true);
  scratch.fill(99);
  const again = outbox.resend(6, undefined);
  assert.equal(again.length, 5);
  for (let i = 0; i < 4; i++) assert.deepStrictEqual(again[i], [expected[6 + i]]);
  assert.deepStrictEqual(again[4], large);
  assert.equal(outbox.acked, 6);
  assert.equal(outbox.bytes, 16 + 17 + 18 + 19 + 70_002);
});

Deno.test("Outbox.ack() resolves delivered() waits and refuses a count above what was sent", async () => {
  const outbox = new Outbox();
  outbox.add([new Uint8Array(8)], false);
  outbox.add([new Uint8Array(8)], false);
  const first = outbox.delivered(1, NO_DEADLINE);
  outbox.ack(1, 3);
  await first;
  assert.equal(outbox.unacked, 1);
  assert.throws(() => outbox.ack(5, 3), {
    name: "ProtocolError",
    message: 'Invalid acknowledgement: "5" messages, but 2 were sent',
  });
  outbox.ack(0, 3); // an older count changes nothing
  assert.equal(outbox.acked, 1);
});
