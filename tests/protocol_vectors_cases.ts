/**
 * Which scenario writes each protocol vector case, and the two tests of a
 * case: "encodes to the vector bytes" (the frames the scenarios made the
 * library write) and "decodes to the vector value" (the frame read by the
 * public decoders). Not published.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type Case, decodeFrame, fromHex, toHex } from "./protocol_vectors.ts";
import type { Captured, Scenario } from "./protocol_vectors_peer.ts";
import { CLIENT_WRITES } from "./protocol_vectors_client.ts";
import { SERVER_WRITES, serverSession } from "./protocol_vectors_server.ts";

/** Every scenario. */
export const SCENARIOS: readonly Scenario[] = [...SERVER_WRITES, ...CLIENT_WRITES].map(
  ([, scenario]) => scenario,
);

/** Which scenario writes each case. */
export const SCENARIO_OF: Readonly<Record<string, Scenario>> = Object.fromEntries(
  [...SERVER_WRITES, ...CLIENT_WRITES].flatMap(([names, scenario]) =>
    names.map((name) => [name, scenario])
  ),
);

/** The frames a scenario wrote for a case that also another scenario writes. */
const ALSO_WRITTEN_BY: Record<string, Scenario> = {
  "ack-1": serverSession, // the server's ack of a reply (the client's is in clientSession)
  "ack-2": serverSession,
  pong: serverSession,
  close: serverSession, // the server's close() (the client's is in clientSession)
};

/** Runs a scenario once; the tests of its cases share the run. */
const runs = new Map<Scenario, Promise<Captured>>();
function run(scenario: Scenario): Promise<Captured> {
  if (!runs.has(scenario)) runs.set(scenario, scenario());
  return runs.get(scenario)!;
}

/** Registers the two tests of each case: it encodes to its bytes, and decodes to its value. */
export function testCases(cases: readonly Case[]): void {
  for (const c of cases) {
    Deno.test(`protocol vectors: ${c.name} encodes to the vector bytes`, async () => {
      for (const scenario of [SCENARIO_OF[c.name], ALSO_WRITTEN_BY[c.name]]) {
        if (scenario === undefined) continue;
        const captured = await run(scenario);
        assert.ok(c.name in captured, `${scenario.name} did not write "${c.name}"`);
        const hex = c.hex + (c.parts ?? []).join("");
        assert.equal(toHex(captured[c.name]), hex, `written by ${scenario.name}`);
      }
    });

    Deno.test(`protocol vectors: ${c.name} decodes to the vector value`, async () => {
      const decoded = await decodeFrame(fromHex(c.hex), c.parts?.map(fromHex));
      assert.deepStrictEqual(decoded, c.decoded);
      assert.equal(JSON.stringify(decoded), JSON.stringify(c.decoded), "keys in the same order");
    });
  }
}
