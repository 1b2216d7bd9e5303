/**
 * The coordinator process of the FL job (`fl_job.ts`): a fedcomm server over
 * TLS that admits only the provisioned sites (each proves its own secret),
 * and a `Coordinator` from `@fedcomm/fedcomm/fl` running FedAvg on them, with
 * its checkpoint, `rounds.jsonl` and `audit.jsonl` in the job directory.
 * Started on a directory that holds a checkpoint, it resumes after the last
 * completed round.
 *
 * It reports to its parent on stdout, one JSON object per line:
 * `{ event: "started", port }`, `{ event: "round", record }` (each train
 * round and evaluation), `{ event: "training", round, resumedFrom }` (once
 * per round, when its first site took the task) and `{ event: "done", result }`.
 *
 * @module
 */

import { listen } from "../mod.ts";
import { Coordinator, FedAvg, type RoundRecord, type SiteSnapshot } from "../fl.ts";
import { loadProvisioned } from "../_cli/provision.ts";
import { initParameters } from "./model.ts";
import { seededRandom } from "./random.ts";
import { toNamed } from "./fl_site.ts";

/** What the coordinator process is told by the job. */
export interface CoordinatorSettings {
  /** The job directory: checkpoint and records. */
  dir: string;
  /** The provisioning directory (`server.json`, `sites.json`, the certificate). */
  pki: string;
  /** The port to listen on (the provisioned one). */
  port: number;
  /** The train rounds. */
  rounds: number;
  /** How many sites each round needs and samples. */
  sites: number;
  /** Hidden layer widths of the MLP. */
  hidden: number[];
  /** Local epochs, minibatch size and learning rate, sent to the sites in each task's config. */
  epochs: number;
  /** The local minibatch size. */
  batch: number;
  /** The local learning rate. */
  lr: number;
  /** Seeds the initial model and the site sampling. */
  seed: number;
  /** Milliseconds each round has, and to wait for the sites. */
  timeoutMs: number;
}

/** The job's name, in every task and in the checkpoint. */
export const JOB = "digits-fedavg";

/** The digits: 64 pixels, 10 classes. */
const DIGITS = { inputs: 64, classes: 10 };

function report(event: Record<string, unknown>): void {
  console.log(JSON.stringify(event));
}

/**
 * Runs the job to its end (or from its checkpoint to its end).
 *
 * @param settings The job.
 * @returns The exit code: 0 when the job is done.
 */
export async function runCoordinator(settings: CoordinatorSettings): Promise<number> {
  const { tls, auth } = await loadProvisioned(settings.pki);
  await using server = listen({
    hostname: "127.0.0.1",
    port: settings.port,
    clients: 2 * settings.sites,
    open: true,
    tls,
    auth,
  });
  const architecture = { ...DIGITS, hidden: settings.hidden };
  const coordinator = new Coordinator(server, {
    job: JOB,
    model: toNamed(architecture, initParameters(architecture, seededRandom(settings.seed))),
    rounds: settings.rounds,
    strategy: new FedAvg({
      config: { epochs: settings.epochs, batch: settings.batch, lr: settings.lr },
    }),
    sitesPerRound: settings.sites,
    minSites: settings.sites,
    evaluateEvery: 1,
    roundTimeout: settings.timeoutMs,
    waitTimeout: settings.timeoutMs,
    seed: settings.seed,
    dir: settings.dir,
  });
  let training = 0;
  coordinator.addEventListener("site", (event) => {
    const site = (event as CustomEvent<SiteSnapshot>).detail;
    const round = coordinator.snapshot().round;
    if (site.state === "training" && round > training) {
      training = round;
      report({ event: "training", round, resumedFrom: coordinator.snapshot().resumedFrom });
    }
  });
  coordinator.addEventListener("round", (event) => {
    report({ event: "round", record: (event as CustomEvent<RoundRecord>).detail });
  });
  report({ event: "started", port: server.port });
  const result = await coordinator.run();
  const { weights: _, ...summary } = result;
  report({ event: "done", result: summary });
  return result.state === "done" ? 0 : 1;
}
