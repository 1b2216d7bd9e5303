import assert from "node:assert/strict";
import { RefuseEvent } from "../mod.ts";
import {
  AUDIT_FILE,
  AUDIT_PER_MINUTE,
  Records,
  type RoundRecord,
  ROUNDS_FILE,
  Totals,
} from "./records.ts";

function record(round: number, kind: "train" | "evaluate" = "train"): RoundRecord {
  return {
    job: "j",
    round,
    kind,
    task: 2 * round - (kind === "train" ? 1 : 0),
    time: new Date(0).toISOString(),
    sampled: ["a"],
    answered: ["a"],
    late: [],
    missing: [],
    failed: [],
    quorum: true,
    bytesIn: 1,
    bytesOut: 2,
    ms: 3,
    metrics: { loss: round },
  };
}

async function lines(path: string): Promise<unknown[]> {
  const text = await Deno.readTextFile(path);
  return text.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l));
}

Deno.test("Records.open() keeps the records up to the checkpoint's round and drops a cut line", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/${ROUNDS_FILE}`;
    const written = [record(1), record(1, "evaluate"), record(2), record(3)];
    // Round 3 was recorded by a coordinator that crashed before its checkpoint, then a cut line.
    await Deno.writeTextFile(
      path,
      written.map((r) => JSON.stringify(r) + "\n").join("") + '{"job":',
    );
    const records = await Records.open(dir, { after: 2, keep: 2 });
    assert.deepStrictEqual(records.recent, [record(1, "evaluate"), record(2)]);
    assert.deepStrictEqual(await lines(path), written.slice(0, 3));
    await records.round(record(3));
    await records.close();
    assert.deepStrictEqual(await lines(path), [...written.slice(0, 3), record(3)]);
    // Nothing to drop: the file is left as it is.
    const again = await Records.open(dir, { after: 3 });
    assert.equal(again.recent.length, 4);
    await again.close();
    assert.deepStrictEqual(await lines(path), [...written.slice(0, 3), record(3)]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Records.refused() audits refused logins, at most AUDIT_PER_MINUTE a minute", async () => {
  const dir = await Deno.makeTempDir();
  try {
    let now = 60_000 * 1000;
    const records = await Records.open(dir, { after: 0, now: () => now });
    const address: Deno.NetAddr = { transport: "tcp", hostname: "10.0.0.7", port: 4242 };
    const event = new RefuseEvent({ reason: "auth", message: "Wrong proof", address, name: "x" });
    for (let i = 0; i < AUDIT_PER_MINUTE + 5; i++) records.refused(event);
    now += 60_000;
    await records.refused(new RefuseEvent({ reason: "busy", message: "Too many handshakes" }));
    await records.close();
    const audit = await lines(`${dir}/${AUDIT_FILE}`) as Record<string, unknown>[];
    assert.equal(audit.length, AUDIT_PER_MINUTE + 2);
    assert.deepStrictEqual(audit[0], {
      time: new Date(60_000 * 1000).toISOString(),
      reason: "auth",
      message: "Wrong proof",
      address: "10.0.0.7:4242",
      name: "x",
    });
    assert.equal(audit[AUDIT_PER_MINUTE].suppressed, 5);
    assert.equal(audit[AUDIT_PER_MINUTE + 1].reason, "busy");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Totals.add() only goes up, and bytes() never goes down", () => {
  const totals = new Totals({ rounds: 1, bytesIn: 1000, bytesOut: 10 });
  totals.add({ results: 2, late: 1 });
  assert.throws(() => totals.add({ results: 5, late: -1 }), {
    name: "RangeError",
    message: `Invalid total: "late" is "-1", not a non-negative number`,
  });
  assert.throws(() => totals.add({ tasks: NaN }), RangeError);
  totals.bytes(50, 5);
  totals.bytes(20, 1); // a smaller reading does not lower them
  const got = totals.get();
  assert.deepStrictEqual([got.rounds, got.results, got.late, got.bytesIn, got.bytesOut], [
    1,
    2,
    1,
    1050,
    15,
  ]);
  assert.throws(() => new Totals({ rounds: -1 }), RangeError);
});
