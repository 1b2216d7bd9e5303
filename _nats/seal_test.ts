import assert from "node:assert/strict";
import { decode, encode } from "../codec.ts";
import { importKey, openDown, openUp, Refused, sealDown, sealUp } from "./seal.ts";
import { parseDown, parseUp } from "./wire.ts";

const keyA = await importKey("edge-a-secret-0123456789", "a");
const keyB = await importKey("edge-b-secret-0123456789", "b");
const keys = new Map([["a", keyA], ["b", keyB]]);
const partial = {
  v: 1,
  type: "partial",
  job: "j",
  run: "r",
  edge: "a",
  task: 1,
  round: 1,
  pack: "sha256-x",
  size: 10,
  weight: 3,
  count: 1,
};

Deno.test("openUp() opens what sealUp() sealed with the edge's key, and refuses anything else", async () => {
  const sealed = await sealUp(keyA, partial);
  assert.deepStrictEqual(parseUp(await openUp(keys, "a", sealed)), partial);
  await assert.rejects(openUp(keys, "b", sealed), { name: "Refused", message: /bad HMAC/ });
  await assert.rejects(openUp(keys, "c", sealed), /"c" is not from a known edge/);
  const envelope = decode(sealed) as { body: Uint8Array; mac: Uint8Array };
  const tampered = encode({ ...partial, weight: 1e9 });
  await assert.rejects(openUp(keys, "a", encode({ ...envelope, body: tampered })), /bad HMAC/);
  const asB = await sealUp(keyA, { ...partial, edge: "b" }); // a's key, b's name in the body
  await assert.rejects(openUp(keys, "a", asB), /names another edge: "b"/);
  await assert.rejects(openUp(keys, "a", new Uint8Array([0xc1])), Refused);
});

Deno.test("openDown() checks the MAC for this edge only, and a MAC up is none down", async () => {
  const task = {
    v: 1,
    type: "task",
    job: "j",
    run: "r",
    task: 1,
    round: 1,
    kind: "train",
    config: { lr: 0.1 },
    model: "sha256-x",
    timeout: 1000,
    expires: 2000,
    issued: 1,
  };
  const sealed = await sealDown(keys, task);
  assert.deepStrictEqual(parseDown(await openDown(keyA, "a", sealed)), task);
  assert.deepStrictEqual(parseDown(await openDown(keyB, "b", sealed)), task);
  await assert.rejects(openDown(keyA, "b", sealed), /bad HMAC/); // a cannot pass for b
  await assert.rejects(openDown(keyA, "c", sealed), /no body or MAC/);
  const up = decode(await sealUp(keyA, task)) as { body: Uint8Array; mac: Uint8Array };
  await assert.rejects(
    openDown(keyA, "a", encode({ body: up.body, macs: { a: up.mac } })),
    /bad HMAC/,
  );
});

Deno.test("importKey() refuses a secret shorter than 16 bytes", async () => {
  await assert.rejects(importKey("short", "a"), {
    name: "RangeError",
    message: `Invalid secret for edge "a": "5" bytes, at least 16`,
  });
});

Deno.test("parseUp() and parseDown() name the first bad field", () => {
  assert.throws(() => parseUp({ ...partial, weight: -1 }), {
    name: "Refused",
    message: `Invalid partial message: "weight" is not a number ≥ 0`,
  });
  assert.throws(() => parseUp({ ...partial, v: 2 }), /Unsupported message version: "2"/);
  assert.throws(() => parseDown({ v: 1, type: "partial" }), {
    name: "Refused",
    message: `Invalid message: "type" is "partial", not "task" or "stop"`,
  });
});
