/**
 * The protocol test vectors of `testdata/vectors/protocol_v3.json` as a
 * whole: its version and format, and an encoder for every case. The cases
 * and proofs themselves: `protocol_vectors_handshake_test.ts` and
 * `protocol_vectors_session_test.ts` (how: `protocol_vectors.ts`).
 *
 * @module
 */

import assert from "node:assert/strict";
import { PROTOCOL_VERSION } from "../mod.ts";
import { cases, fromHex, vectors } from "./protocol_vectors.ts";
import { SCENARIO_OF, SCENARIOS } from "./protocol_vectors_cases.ts";

Deno.test("protocol vectors: the file is protocol version 3, with unique case names", () => {
  assert.equal(vectors.protocol, PROTOCOL_VERSION);
  assert.equal(cases.size, vectors.cases.length);
  for (const c of vectors.cases) {
    assert.ok(["client-to-server", "server-to-client", "both"].includes(c.direction), c.name);
    assert.ok(c.description.length > 0, c.name);
    const frame = fromHex(c.hex);
    assert.equal(new DataView(frame.buffer).getUint32(0), frame.byteLength - 4, c.name);
  }
});

Deno.test("protocol vectors: every case has an encoder", () => {
  assert.deepStrictEqual(Object.keys(SCENARIO_OF).sort(), [...cases.keys()].sort());
  assert.deepStrictEqual(new Set(Object.values(SCENARIO_OF)), new Set(SCENARIOS));
});
