/**
 * The FL coordinator's memory: `deno task bench --only=fl`, or
 * `deno run -A bench/fl_memory.ts [--quick]`.
 *
 * A real {@linkcode Coordinator} (FedAvg, no job directory) in a process of
 * its own runs 3 rounds of a 256 MiB float32 model (four tensors of 64 MiB;
 * `--quick`: 16 MiB, floors not checked) with 4 sites, which run in a
 * second process (`runSite`; each adds 1 to the weights it got, in place,
 * and sends them back), so that the coordinator's RSS is its own. The
 * coordinator's server has `receiveBufferBytes` = 1 model: an upload is
 * read only while no other is reserved, and its reservation ends when the
 * round takes it, so the server holds at most the upload being read and the
 * one being folded; their buffers are recycled into the server's pool for
 * the next uploads. The sites' loss is 1 in round 1 (an integer on the
 * wire, 1 byte) and a float after (9 bytes): round 2's uploads are larger
 * than round 1's, and still land in round 1's buffers (the pool's headroom;
 * when it reused only buffers of the same length, this cost one model more).
 *
 * The coordinator measures its RSS before the model is allocated (after
 * `listen`), its peak (`VmHWM`, `/proc/self/status`) over the whole job,
 * and the peak within each window between `"round"` events (the peak is
 * reset through `/proc/self/clear_refs` at each): window 1 is round 1,
 * window k the update after round k − 1 and round k, the last one the last
 * update and the end. Nothing calls the garbage collector (the peak is what
 * a job would see), and nothing but the job holds the initial model. It
 * checks the final model (every value 3: each round adds 1).
 *
 * Prints one JSON line (`impl`, `bench`, `model_mib`, `rounds`, `sites`,
 * `peak_rss_ratio`: the peak above the RSS before the model, over the
 * model; `steady_growth_mib`: window 3's peak minus window 2's; the peaks
 * in MiB) and a human line. Exits 1 when `peak_rss_ratio` exceeds
 * {@linkcode PEAK_FLOOR} or `steady_growth_mib` exceeds
 * {@linkcode GROWTH_FLOOR_MIB} (not with `--quick`).
 *
 * The floor, in models: what the job needs at once is the global model (1),
 * the f64 weighted sum (2), and the receive memory: the upload being read
 * (1, the budget) and the one being folded (1), whose buffers the server's
 * pool keeps between uploads. The first update makes the next model in new
 * memory while the initial model (the caller's, which the coordinator never
 * writes) still lives (1); later updates write it in place, but the initial
 * model stays resident until V8 collects it, and once rounds allocate
 * nothing model-sized nothing makes V8 collect. That is 6; 0.5 more is the
 * slack for the runtime and garbage not yet collected (128 MiB for a
 * 256 MiB model). The growth floor, 32 MiB, is the runtime's noise: a
 * coordinator that allocated a model-sized buffer per round grew 256 MiB.
 *
 * Measured on 2 shared cores (Deno 2.9.6, ~35 s): before the coordinator
 * reused its sum and wrote models in place, peak 9.05 × the model, window
 * peaks 1292, 2060, 2316, 2317 MiB (growth 256 MiB); after, 6.05 ×, 1292,
 * 1548, 1549, 1549 MiB (growth 1 MiB).
 *
 * ```sh
 * deno run -A bench/fl_memory.ts coordinator BYTES ROUNDS SITES   # prints {"port": …} first
 * deno run -A bench/fl_memory.ts sites PORT SITES
 * ```
 *
 * @module
 */

import { listen } from "../mod.ts";
import { Coordinator, runSite, type Weights } from "../fl.ts";
import { lines } from "../examples/fl_processes.ts";

/** The most the coordinator's peak may be above its RSS before the model, in models. */
const PEAK_FLOOR = 6.5;
/** The most round 3's peak may be above round 2's, in MiB. */
const GROWTH_FLOOR_MIB = 32;
const MiB = 2 ** 20;
const TENSORS = 4;
const quick = Deno.args.includes("--quick");
const MODEL_BYTES = quick ? 16 * MiB : 256 * MiB;
const ROUNDS = 3;
const SITES = 4;
const LONG = 600_000;

/** The process's resident set now and at its peak (`/proc/self/status`), in bytes. */
function rss(): { now: number; peak: number } {
  const status = Deno.readTextFileSync("/proc/self/status");
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)![1]);
  return { now: kib("VmRSS") * 1024, peak: kib("VmHWM") * 1024 };
}

/** Resets the peak (`VmHWM`) to the RSS now. */
function resetPeak(): void {
  Deno.writeTextFileSync("/proc/self/clear_refs", "5");
}

/** What the coordinator process prints. */
interface CoordinatorLine {
  base_mib: number;
  peak_mib: number;
  round_peaks_mib: number[];
  seconds: number;
}

/** A model of `bytes` bytes: {@linkcode TENSORS} float32 tensors of zeros. */
function zeros(bytes: number): Weights {
  const model: Weights = {};
  for (let t = 0; t < TENSORS; t++) model[`layer${t}`] = new Float32Array(bytes / 4 / TENSORS);
  return model;
}

async function coordinator(bytes: number, rounds: number, sites: number) {
  await using server = listen({
    port: 0,
    clients: sites,
    open: true,
    receiveBufferBytes: bytes,
    idleTimeout: LONG,
  });
  console.log(JSON.stringify({ port: server.port }));
  const base = rss().now;
  const peaks: number[] = [];
  // The initial model is the job's alone: this function keeps no reference to it.
  const job = new Coordinator(server, {
    job: "fl-memory",
    model: zeros(bytes),
    rounds,
    minSites: sites,
    roundTimeout: LONG,
    waitTimeout: 120_000,
  });
  job.addEventListener("round", () => {
    peaks.push(rss().peak);
    resetPeak();
  });
  const start = performance.now();
  const result = await job.run();
  const seconds = (performance.now() - start) / 1000;
  peaks.push(rss().peak);
  const last = Object.values(result.weights) as Float32Array[];
  for (const tensor of last) {
    for (const i of [0, 1, tensor.length >> 1, tensor.length - 1]) {
      if (tensor[i] !== rounds) {
        throw new Error(`Bad model: a value is ${tensor[i]}, not ${rounds}`);
      }
    }
  }
  const mib = (b: number) => Math.round((b - base) / MiB);
  const line: CoordinatorLine = {
    base_mib: Math.round(base / MiB),
    peak_mib: mib(Math.max(...peaks)),
    round_peaks_mib: peaks.map(mib),
    seconds: Number(seconds.toFixed(2)),
  };
  console.log(JSON.stringify(line));
}

async function siteProcess(port: number, sites: number): Promise<void> {
  const one = (k: number) =>
    runSite({
      port,
      name: `site-${k}`,
      timeout: 10_000,
      reconnectTimeout: 60_000,
      idleTimeout: LONG,
      train: (task) => {
        for (const tensor of Object.values(task.weights) as Float32Array[]) {
          for (let i = 0; i < tensor.length; i++) tensor[i] += 1;
        }
        return {
          weights: task.weights,
          samples: 10 * (k + 1),
          metrics: { loss: 1 / task.round },
        };
      },
    });
  const results = await Promise.all(Array.from({ length: sites }, (_, k) => one(k)));
  if (results.some((r) => r.stopReason !== "done" || r.failures > 0)) {
    throw new Error(`A site did not finish cleanly: ${JSON.stringify(results)}`);
  }
}

async function main(): Promise<void> {
  const self = new URL(import.meta.url).pathname;
  const spawn = (args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", self, ...args],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  const text = async (stream: ReadableStream<Uint8Array>) =>
    (await new Response(stream).text()).trim();
  // The coordinator listens on a free port and says which; then the sites start.
  const coord = spawn(["coordinator", String(MODEL_BYTES), String(ROUNDS), String(SITES)]);
  const coordErr = text(coord.stderr);
  const out = lines(coord.stdout);
  const first = await out.next();
  if (first.done) {
    console.error(`fl_memory: the coordinator failed:\n${await coordErr}`);
    Deno.exit(1);
  }
  const { port } = JSON.parse(first.value) as { port: number };
  const sites = spawn(["sites", String(port), String(SITES)]);
  const sitesErr = text(sites.stderr);
  const sitesOut = text(sites.stdout);
  // Either failing ends the other (the coordinator would wait for its sites).
  const end = (child: Deno.ChildProcess) => (status: Deno.CommandStatus) => {
    if (status.success) return;
    try {
      child.kill();
    } catch {
      // It has ended.
    }
  };
  sites.status.then(end(coord));
  coord.status.then(end(sites));
  let last = "";
  for await (const line of out) last = line;
  const [coordStatus, sitesStatus] = await Promise.all([coord.status, sites.status]);
  await sitesOut;
  if (!coordStatus.success || !sitesStatus.success) {
    console.error(`fl_memory failed:\n${await coordErr}\n${await sitesErr}`);
    Deno.exit(1);
  }
  const line = JSON.parse(last) as CoordinatorLine;
  const modelMib = MODEL_BYTES / MiB;
  const ratio = line.peak_mib / modelMib;
  // Window 1 is round 1 (the model's allocation and round 1); 2 and 3 follow; 4 is the last update.
  const growth = line.round_peaks_mib[2] - line.round_peaks_mib[1];
  console.log(JSON.stringify({
    impl: "fedcomm",
    bench: "fl_memory",
    model_mib: modelMib,
    rounds: ROUNDS,
    sites: SITES,
    peak_rss_ratio: Number(ratio.toFixed(3)),
    steady_growth_mib: growth,
    peak_mib: line.peak_mib,
    round_peaks_mib: line.round_peaks_mib,
    base_mib: line.base_mib,
    seconds: line.seconds,
  }));
  console.log(
    `FL coordinator memory (FedAvg, ${SITES} sites, ${ROUNDS} rounds of a ${modelMib} MiB model, ` +
      `receive budget 1 model): peak RSS ${line.peak_mib} MiB above idle = ${ratio.toFixed(2)} × ` +
      `the model; window peaks ${line.round_peaks_mib.join(", ")} MiB, window 3 over 2 ` +
      `${growth} MiB ` +
      (quick
        ? "(--quick: floors not checked)"
        : `(floors ${PEAK_FLOOR} × the model, ${GROWTH_FLOOR_MIB} MiB growth)`),
  );
  if (!quick && (ratio > PEAK_FLOOR || growth > GROWTH_FLOOR_MIB)) Deno.exit(1);
}

const [role, ...rest] = Deno.args;
if (role === "coordinator") {
  const [bytes, rounds, sites] = rest.map(Number);
  await coordinator(bytes, rounds, sites);
} else if (role === "sites") {
  await siteProcess(Number(rest[0]), Number(rest[1]));
} else await main();
