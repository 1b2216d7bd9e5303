/**
 * A complete federated-learning job on the FL layer (`@fedcomm/fedcomm/fl`),
 * in one command: FedAvg on the UCI handwritten digits with Deno and Python
 * sites, each its own process, over TLS with a secret per site, and a
 * coordinator that is killed (`SIGKILL`) in the middle of the job, started
 * again, and finishes the job from its checkpoint.
 *
 * ```sh
 * deno task fl                                    # 5 rounds, 2 Deno + 2 Python sites
 * deno task fl --rounds 8 --deno-sites 3 --python-sites 1 --hidden 64
 * deno task fl --no-restart
 * ```
 *
 * What it does, in a fresh temporary job directory:
 *
 * 1. provisions the job with `deno task cli provision` (`cli.ts provision`):
 *    a private CA, a server certificate, and a random secret per site;
 * 2. splits the digits into a training and a test set and deals both out to
 *    the sites (a data file per site: the site's own samples);
 * 3. starts the coordinator (`fl_coordinator.ts`: `listen()` with TLS and the
 *    sites' secrets, and a `Coordinator` checkpointing to the job directory)
 *    and the sites (`fl_site.ts` with `runSite`, `fl_site.py` with
 *    `fedcomm.fl.run_site`), which train the same MLP;
 * 4. kills the coordinator while the round after the middle one trains, and
 *    starts it again on the same directory: it resumes after the last
 *    checkpointed round, and the sites connect again by themselves;
 * 5. prints each round's test accuracy (each site evaluates the new model on
 *    its share of the test set; the coordinator takes the sample-weighted
 *    mean), and exits 0 once the job is done and every site stopped cleanly.
 *
 * The file is also the coordinator's and the Deno sites' program
 * (`fl_job.ts coordinator <json>`, `fl_job.ts site <json>`).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type CoordinatorSettings, runCoordinator } from "./fl_coordinator.ts";
import { runDenoSite, type SiteData, type SiteSettings } from "./fl_site.ts";
import { loadDigits, splitTrainTest } from "./data.ts";
import { UsageError } from "./fedavg.ts";
import { partition } from "./partition.ts";
import {
  type Child,
  coordinate,
  type Print,
  type Progress,
  REPO,
  row,
  startSites,
} from "./fl_processes.ts";
import { seededRandom } from "./random.ts";

export { UsageError };

/** The job's settings, from the command line. */
export interface JobSettings {
  /** Train rounds. */
  rounds: number;
  /** Deno site processes. */
  denoSites: number;
  /** Python site processes. */
  pythonSites: number;
  /** Kill the coordinator once and start it again (default true). */
  restart: boolean;
  /** Hidden layer widths of the MLP (empty: softmax regression). */
  hidden: number[];
  /** Local epochs per round. */
  epochs: number;
  /** Local minibatch size. */
  batch: number;
  /** Local learning rate. */
  lr: number;
  /** Seeds the split, the deal, the model and the sampling. */
  seed: number;
  /** Seconds the whole job may take. */
  timeout: number;
  /** The Python interpreter (with numpy and msgpack). */
  python: string;
  /** Keep the job directory (default: removed at the end). */
  keep: boolean;
}

const USAGE = `Usage: deno task fl [flags]
       deno run -A examples/fl_job.ts [flags]

A federated-learning job (FedAvg on the UCI digits) with Deno and Python site
processes over TLS, per-site secrets, a checkpointing coordinator, and a
coordinator restart in the middle of the job.

Flags:
  --rounds R         train rounds (default 5)
  --deno-sites N     Deno site processes (default 2)
  --python-sites N   Python site processes (default 2)
  --no-restart       do not kill and restart the coordinator
  --hidden H[,H…]    hidden layer widths (default 32; 0: softmax regression)
  --epochs E         local epochs per round (default 2)
  --batch B          local minibatch size (default 16)
  --lr X             local learning rate (default 0.1)
  --seed S           random seed (default 1)
  --timeout S        seconds the whole job may take (default 300)
  --python PATH      the Python interpreter (default /usr/bin/python3)
  --keep             keep the job directory (checkpoint, rounds.jsonl, keys)
  -h, --help         show this help`;

function count(name: string, text: string | undefined, fallback: number, min: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (text.trim() === "" || !Number.isSafeInteger(value) || value < min) {
    throw new UsageError(`Invalid --${name}: "${text}" is not an integer ≥ ${min}`);
  }
  return value;
}

/**
 * Reads the command line.
 *
 * @param args The arguments.
 * @returns The settings, or `undefined` for `--help`.
 * @throws {UsageError} If a flag is unknown or a value invalid.
 */
export function parseJobArgs(args: string[]): JobSettings | undefined {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      options: {
        rounds: { type: "string" },
        "deno-sites": { type: "string" },
        "python-sites": { type: "string" },
        "no-restart": { type: "boolean" },
        hidden: { type: "string" },
        epochs: { type: "string" },
        batch: { type: "string" },
        lr: { type: "string" },
        seed: { type: "string" },
        timeout: { type: "string" },
        python: { type: "string" },
        keep: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) return undefined;
  const lr = Number(values.lr ?? 0.1), timeout = Number(values.timeout ?? 300);
  if (!(lr > 0 && Number.isFinite(lr))) throw new UsageError(`Invalid --lr: "${values.lr}"`);
  if (!(timeout > 0)) throw new UsageError(`Invalid --timeout: "${values.timeout}"`);
  const hidden = values.hidden === undefined
    ? [32]
    : values.hidden === "0"
    ? []
    : values.hidden.split(",").map((width) => count("hidden", width, 0, 1));
  const settings: JobSettings = {
    rounds: count("rounds", values.rounds, 5, 1),
    denoSites: count("deno-sites", values["deno-sites"], 2, 0),
    pythonSites: count("python-sites", values["python-sites"], 2, 0),
    restart: !values["no-restart"],
    hidden,
    epochs: count("epochs", values.epochs, 2, 1),
    batch: count("batch", values.batch, 16, 1),
    lr,
    seed: count("seed", values.seed, 1, 0),
    timeout,
    python: values.python ?? "/usr/bin/python3",
    keep: values.keep ?? false,
  };
  if (settings.denoSites + settings.pythonSites === 0) {
    throw new UsageError("Invalid sites: --deno-sites and --python-sites are both 0");
  }
  return settings;
}

/** A port nothing listens on now, for the coordinator (the same one across its restart). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

/** Provisions the job with the command line's `provision` command, for the coordinator's port. */
async function provision(pki: string, sites: string[], port: number): Promise<void> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${REPO}cli.ts`,
      "provision",
      "--sites",
      sites.join(","),
      "--out",
      pki,
      "--port",
      String(port),
    ],
    stdin: "null",
  }).output();
  if (!output.success) {
    throw new Error(`Provisioning failed: ${new TextDecoder().decode(output.stderr).trim()}`);
  }
}

/** Splits the digits and writes each site's data file; returns the shares' sizes. */
async function dealData(dir: string, sites: string[], seed: number): Promise<number[][]> {
  const digits = await loadDigits();
  const random = seededRandom(seed);
  const { train, test } = splitTrainTest(digits.count, 0.25, random);
  const kind = "iid" as const, clients = sites.length;
  const trains = partition(train, digits.labels, { kind, clients, random });
  const tests = partition(test, digits.labels, { kind, clients, random });
  await Deno.mkdir(`${dir}/data`);
  await Promise.all(sites.map((name, i) => {
    const data: SiteData = { train: [...trains[i]], test: [...tests[i]], seed: seed + i };
    return Deno.writeTextFile(`${dir}/data/${name}.json`, JSON.stringify(data));
  }));
  return sites.map((_, i) => [trains[i].length, tests[i].length]);
}

/** Provisions the job, deals the data out and says so; returns the coordinator's settings. */
async function prepare(
  settings: JobSettings,
  dir: string,
  names: string[],
  print: Print,
): Promise<CoordinatorSettings> {
  const port = freePort();
  await provision(`${dir}/pki`, names, port);
  print(`provisioned a CA, a server certificate and ${names.length} site secrets (${dir}/pki)`);
  const shares = await dealData(dir, names, settings.seed);
  names.forEach((name, i) =>
    print(`  ${name}: ${shares[i][0]} training and ${shares[i][1]} test samples`)
  );
  await Deno.mkdir(`${dir}/job`);
  print(
    `FedAvg, ${settings.rounds} rounds, MLP 64 → ${[...settings.hidden, 10].join(" → ")}, ` +
      `${settings.denoSites} Deno + ${settings.pythonSites} Python sites over TLS on ` +
      `127.0.0.1:${port}`,
  );
  return {
    dir: `${dir}/job`,
    pki: `${dir}/pki`,
    port,
    rounds: settings.rounds,
    sites: names.length,
    hidden: settings.hidden,
    epochs: settings.epochs,
    batch: settings.batch,
    lr: settings.lr,
    seed: settings.seed,
    timeoutMs: settings.timeout * 1000,
  };
}

/** The last line: the final accuracy, the rounds, the restarts. */
function summary(progress: Progress, seconds: number, dir: string | undefined): string {
  const { result, restarts } = progress;
  return `done: final test accuracy ${((progress.accuracy ?? 0) * 100).toFixed(1)}% after ` +
    `${result!.rounds} rounds; ${restarts} coordinator restart${restarts === 1 ? "" : "s"}` +
    (restarts > 0 ? ` (resumed after round ${result!.resumedFrom})` : "") +
    `; ${seconds.toFixed(1)} s` + (dir === undefined ? "" : `; job directory ${dir}`);
}

/** Kills the children still running and waits for them. */
async function killAll(children: Set<Child>): Promise<void> {
  for (const child of children) {
    try {
      child.process.kill("SIGKILL");
    } catch {
      // Exited meanwhile.
    }
  }
  await Promise.all([...children].map((child) => child.status));
}

/**
 * Runs the whole job: provisioning, data, coordinator and sites, the restart.
 *
 * @param settings The job's settings.
 * @param print Where the report goes.
 * @returns The exit code: 0 when every round ran and every site stopped cleanly.
 */
export async function runJob(settings: JobSettings, print: Print = console.log): Promise<number> {
  const started = performance.now();
  const dir = await Deno.makeTempDir({ prefix: "fedcomm-fl-job-" });
  const names = [
    ...Array.from({ length: settings.denoSites }, (_, i) => `deno-${i + 1}`),
    ...Array.from({ length: settings.pythonSites }, (_, i) => `python-${i + 1}`),
  ];
  const children = new Set<Child>();
  const timer = setTimeout(() => {
    console.error(`error: the job took longer than ${settings.timeout} s; stopping it`);
    killAll(children);
  }, settings.timeout * 1000);
  try {
    const coordinatorSettings = await prepare(settings, dir, names, print);
    print(row("round", "train loss", "test loss", "accuracy", "sites", "moved", "time"));
    const progress: Progress = {
      train: new Map(),
      printed: new Set(),
      accuracy: undefined,
      restarts: 0,
      resumedFrom: undefined,
      result: undefined,
    };
    const sites = startSites(settings, names, dir, coordinatorSettings.port);
    for (const site of sites) children.add(site);
    await coordinate(settings, coordinatorSettings, progress, print, children);
    const statuses = await Promise.all(sites.map((site) => site.status));
    const failed = sites.filter((_, i) => !statuses[i].success).map((site) => site.label);
    print("");
    print(summary(progress, (performance.now() - started) / 1000, settings.keep ? dir : undefined));
    if (failed.length > 0) console.error(`error: sites ${failed.join(", ")} did not stop cleanly`);
    return failed.length === 0 && progress.result!.rounds === settings.rounds ? 0 : 1;
  } catch (error) {
    console.error(`error: ${(error as Error)?.message ?? error}`);
    await killAll(children);
    return 1;
  } finally {
    clearTimeout(timer);
    if (!settings.keep) await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const [mode, json] = Deno.args;
  try {
    if (mode === "coordinator") {
      Deno.exitCode = await runCoordinator(JSON.parse(json) as CoordinatorSettings);
    } else if (mode === "site") {
      const site = JSON.parse(json) as SiteSettings;
      const outcome = await runDenoSite(site);
      Deno.exitCode = outcome.stopReason === "done" ? 0 : 1;
    } else {
      const settings = parseJobArgs(Deno.args);
      if (settings === undefined) console.log(USAGE);
      else Deno.exitCode = await runJob(settings);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`${USAGE}\n\nerror: ${error.message}`);
      Deno.exitCode = 2;
    } else {
      console.error(`${mode === "site" || mode === "coordinator" ? mode : "fl_job"}: ${error}`);
      Deno.exitCode = 1;
    }
  }
}
