import assert from "node:assert/strict";
import { encode } from "../codec.ts";
import { NdArray } from "../mod.ts";
import { type Checkpoint, CHECKPOINT_FILE, loadCheckpoint, saveCheckpoint } from "./checkpoint.ts";
import { Totals } from "./records.ts";

function checkpoint(round: number): Checkpoint {
  return {
    job: "job",
    round,
    weights: {
      w: new NdArray(new Float32Array([1, 2, 3, 4, 5, 6]).map((x) => x * round), [2, 3]),
      b: new Float64Array([round, -round]),
    },
    strategy: "FedAdam",
    strategyState: { strategy: "FedAdam", m: { b: new Float64Array([0.5, 0.25]) }, t: round },
    sites: [{
      name: "a",
      id: 3,
      rounds: [1, 2],
      taken: 2,
      bytesIn: 10,
      bytesOut: 20,
      lastSeen: 1,
      late: 0,
      failures: 1,
      sessions: 1,
      removed: false,
    }],
    totals: new Totals({ rounds: round }).get(),
    time: new Date(0).toISOString(),
  };
}

Deno.test("saveCheckpoint() replaces the checkpoint whole and loadCheckpoint() reads it back", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assert.equal(await loadCheckpoint(dir), undefined);
    await saveCheckpoint(`${dir}/job`, checkpoint(1)); // makes the directory
    await saveCheckpoint(`${dir}/job`, checkpoint(2));
    assert.deepStrictEqual(await loadCheckpoint(`${dir}/job`), checkpoint(2));
    assert.deepStrictEqual([...Deno.readDirSync(`${dir}/job`)].map((e) => e.name), [
      CHECKPOINT_FILE,
    ]);
    // A temporary file a crash left behind is neither read nor in the way.
    await Deno.writeTextFile(`${dir}/job/${CHECKPOINT_FILE}.tmp`, "half a checkp");
    assert.equal((await loadCheckpoint(`${dir}/job`))?.round, 2);
    await saveCheckpoint(`${dir}/job`, checkpoint(3));
    assert.equal((await loadCheckpoint(`${dir}/job`))?.round, 3);
    await assert.rejects(
      () => saveCheckpoint(dir, { ...checkpoint(1), weights: { b: [1, 2] } as never }),
      TypeError,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadCheckpoint() rejects a file that is not a checkpoint, naming it", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/${CHECKPOINT_FILE}`;
  try {
    await Deno.writeFile(path, new Uint8Array([0xc1]));
    await assert.rejects(() => loadCheckpoint(dir), {
      name: "TypeError",
      message: new RegExp(`^Invalid checkpoint: "${path}" is not MessagePack: `),
    });
    await Deno.writeFile(path, encode({ hello: 1 }));
    await assert.rejects(() => loadCheckpoint(dir), {
      message: `Invalid checkpoint: "${path}" is not a fedcomm FL checkpoint`,
    });
    await Deno.writeFile(path, encode({ format: "fedcomm-fl-checkpoint", version: 2 }));
    await assert.rejects(
      () => loadCheckpoint(dir),
      /has layout version "2", this coordinator reads 1/,
    );
    await Deno.writeFile(
      path,
      encode({ ...checkpoint(1), format: "fedcomm-fl-checkpoint", version: 1, weights: 5 }),
    );
    await assert.rejects(() => loadCheckpoint(dir), /has invalid weights/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
