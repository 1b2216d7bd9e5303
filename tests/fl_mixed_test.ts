/**
 * A mixed cohort of the FL layer: the Coordinator runs real rounds over two
 * Deno sites (`runSite`, in this process) and two Python sites
 * (`fedcomm.fl.run_site`, each a `/usr/bin/python3` process), and the global
 * model it ends with is the FedAvg aggregate computed by hand.
 *
 * Needs `/usr/bin/python3` with `msgpack` and `numpy`; skipped without them.
 */

import assert from "node:assert/strict";
import { listen, NdArray } from "../mod.ts";
import { Coordinator, type RoundRecord, runSite, type Task, type Weights } from "../fl.ts";
import { pythonReady, spawnPython } from "./test_util.ts";

const ignore = !pythonReady("msgpack", "numpy");

/**
 * A Python site: `run_site` whose update is `weights + shift` (every tensor),
 * with `samples` samples and `{"loss": shift}`; it prints its outcome as JSON.
 */
const PYTHON_SITE = `
import json, sys
sys.path.insert(0, sys.argv[1])
from fedcomm import fl

port, name, shift, samples = int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5])

def train(task):
    assert task.weights["w"].shape == (2, 3) and task.weights["b"].shape == (3,)
    weights = {k: (v + shift).astype(v.dtype) for k, v in task.weights.items()}
    return {"weights": weights, "samples": samples, "metrics": {"loss": shift}}

outcome = fl.run_site({"port": port, "name": name, "timeout": 10}, train=train,
                      reconnect_timeout=30, task_timeout=60)
print(json.dumps(outcome.__dict__))
`;

/** The sites: name, shift, samples; the Deno ones and the Python ones. */
const DENO_SITES = [["deno-a", 1, 10], ["deno-b", 2, 30]] as const;
const PYTHON_SITES = [["python-a", 3, 20], ["python-b", -4, 40]] as const;
const ALL = [...DENO_SITES, ...PYTHON_SITES];

function shifted(t: Task, shift: number): Weights {
  const w = t.weights.w as NdArray<Float32Array>;
  return {
    w: new NdArray(w.data.map((x) => x + shift), w.shape),
    b: (t.weights.b as Float32Array).map((x) => x + shift),
  };
}

Deno.test({
  name: "Coordinator.run() over 2 Deno and 2 Python sites gives the FedAvg aggregate",
  ignore,
  async fn() {
    await using server = listen({ clients: 8, open: true });
    const model: Weights = {
      w: new NdArray(new Float32Array([0.5, -1, 2, 0, 0.25, 3]), [2, 3]),
      b: new Float32Array([1, 2, 3]),
    };
    const rounds = 2;
    const coordinator = new Coordinator(server, {
      job: "mixed",
      model,
      rounds,
      minSites: 4,
      sitesPerRound: 4,
      minResults: 4,
      roundTimeout: 60_000,
      waitTimeout: 60_000,
    });
    const records: RoundRecord[] = [];
    coordinator.addEventListener("round", (e) => records.push((e as CustomEvent).detail));
    const python = PYTHON_SITES.map(([name, shift, samples]) =>
      spawnPython(PYTHON_SITE, [String(server.port), name, String(shift), String(samples)])
    );
    const deno = DENO_SITES.map(([name, shift, samples]) =>
      runSite({
        port: server.port,
        name,
        reconnectTimeout: 30_000,
        train: (t) => ({ weights: shifted(t, shift), samples, metrics: { loss: shift } }),
      })
    );
    const result = await coordinator.run();
    const outputs = await Promise.all(python.map((child) => child.output()));
    for (const { code, stderr } of outputs) {
      assert.equal(code, 0, new TextDecoder().decode(stderr));
    }

    // By hand: each round adds the sample-weighted mean shift to every weight.
    const total = ALL.reduce((sum, [, , samples]) => sum + samples, 0);
    const meanShift = ALL.reduce((sum, [, shift, samples]) => sum + shift * samples, 0) / total;
    const expect = (x: number) => Math.fround(Math.fround(x + meanShift) + meanShift);
    const w = result.weights.w as NdArray<Float32Array>;
    assert.deepStrictEqual(w.shape, [2, 3]);
    assert.ok(w.data instanceof Float32Array);
    const got = [...w.data, ...(result.weights.b as Float32Array)];
    const want = [0.5, -1, 2, 0, 0.25, 3, 1, 2, 3].map(expect);
    got.forEach((x, i) => assert.ok(Math.abs(x - want[i]) < 1e-5, `${i}: ${x} vs ${want[i]}`));
    assert.equal(result.rounds, rounds);
    assert.equal(records.length, rounds);
    for (const record of records) {
      assert.deepStrictEqual(record.answered.toSorted(), ALL.map(([name]) => name).toSorted());
      assert.deepStrictEqual([record.failed, record.missing], [[], []]);
      assert.ok(Math.abs(record.metrics.loss - meanShift) < 1e-12);
    }
    for (const outcome of await Promise.all(deno)) {
      assert.deepStrictEqual(outcome, {
        results: rounds,
        failures: 0,
        stale: 0,
        reconnects: 0,
        stopReason: "done",
      });
    }
    for (const { stdout } of outputs) {
      assert.deepStrictEqual(JSON.parse(new TextDecoder().decode(stdout)), {
        results: rounds,
        failures: 0,
        stale: 0,
        reconnects: 0,
        stop_reason: "done",
      });
    }
  },
});
