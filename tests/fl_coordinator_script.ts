/**
 * The coordinator process of `fl_restart_test.ts`: a job on a fixed port and
 * job directory, that the test kills with SIGKILL mid-round and starts again.
 * Run: `deno run -A tests/fl_coordinator_script.ts --port P --dir D`; it
 * prints its `JobResult` (without the weights) as one JSON line. Not published.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { listen, type ListenOptions, NdArray } from "../mod.ts";
import { Coordinator, type CoordinatorOptions, FedAdam } from "../fl.ts";

/** The job's sites. */
export const SITES = ["site-0", "site-1", "site-2"];
/** The round whose train tasks make the test kill the coordinator. */
export const KILL_ROUND = 3;

/** Each site's own secret. */
export function secretOf(name: string): string {
  return `restart test: the secret of ${name}, 32+ bytes`;
}

/** The server: open membership, per-site secrets (so names are proven). */
export function serverOptions(port: number): ListenOptions {
  const clients = Object.fromEntries(SITES.map((name) => [name, secretOf(name)]));
  return { port, clients: 8, open: true, auth: { clients } };
}

/** The job: FedAdam (its moments are checkpointed), 2 of 3 sites a round, evaluation every 2. */
export function jobOptions(dir: string): CoordinatorOptions {
  return {
    job: "restart",
    model: {
      w: new NdArray(new Float32Array([0.25, -0.5, 1, 2, 0, 3]), [2, 3]),
      b: new Float32Array([1, -1]),
    },
    rounds: 5,
    strategy: new FedAdam({ eta: 0.1 }),
    sitesPerRound: 2,
    minSites: SITES.length,
    evaluateEvery: 2,
    seed: 11,
    roundTimeout: 30_000,
    dir,
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { port: { type: "string" }, dir: { type: "string" } },
    strict: true,
  });
  await using server = listen(serverOptions(Number(values.port)));
  const coordinator = new Coordinator(server, jobOptions(values.dir!));
  const { weights: _, ...result } = await coordinator.run();
  console.log(JSON.stringify(result));
}
