/**
 * The Python client at speed: `deno task bench --only=python`, or
 * `deno run -A bench/python.ts [--quick]`.
 *
 * A fedcomm server in this process, for one client, broadcasts
 * `{ round, weights: Float32Array(100 MiB / 4) }` each round; the client
 * replies `{ round, weights }` with the weights it received, and the server
 * gathers the reply and checks its round, length and a few elements. The
 * client is, in turn, a Deno client (this file's `client PORT` mode, a child
 * process) and the Python client (`_python_client.py`, numpy, a child
 * process run with `/usr/bin/python3` and `PYTHONPATH=python`), interleaved:
 * 3 repetitions of 2 warm-up and 5 timed rounds each. The rate is
 * 2 × 100 MiB over the median of all timed round times (both directions).
 * Prints one JSON line (`impl`, `bench`, `size`, `rounds`, `repeats`,
 * `python_gbps`, `deno_gbps`, `ratio`) and a human line; exits 1 when the
 * Python client's rate is below 0.8 × the Deno client's (not with `--quick`,
 * whose 2 rounds are a smoke test, too few to hold a floor to).
 *
 * ```sh
 * deno run -A bench/python.ts              # the benchmark
 * deno run -A bench/python.ts client PORT  # the Deno client
 * ```
 *
 * @module
 */

import { connect, listen } from "../mod.ts";
import { median } from "./common.ts";

const FLOOR = 0.8;
const SIZE = 100 * 2 ** 20;
const quick = Deno.args.includes("--quick");
const WARMUP = quick ? 1 : 2;
const ROUNDS = quick ? 2 : 5;
const REPEATS = quick ? 1 : 3;
const root = new URL("..", import.meta.url).pathname;

interface Round {
  round: number;
  weights: Float32Array;
}

/** The Deno client: echoes every round's weights until "stop". */
async function denoClient(port: number): Promise<void> {
  await using client = await connect({
    port,
    timeout: 120_000,
    waitForServer: true,
  });
  for await (const message of client) {
    if (message === "stop") break;
    const { round, weights } = message as Round;
    await client.reply({ round, weights });
  }
}

const impls = {
  deno: (port: number) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(import.meta.url).pathname, "client", String(port)],
      stdout: "null",
      stderr: "piped",
    }),
  python: (port: number) =>
    new Deno.Command("/usr/bin/python3", {
      args: [`${root}bench/_python_client.py`, String(port)],
      env: { PYTHONPATH: `${root}python` },
      stdout: "null",
      stderr: "piped",
    }),
};
let nextPort = 29_000 + Math.floor(Math.random() * 10_000);
const weights = new Float32Array(SIZE / 4).fill(0.5);
const last = weights.length - 1;
const mid = weights.length >> 1;

/** Runs one client through the warm-up and the timed rounds; returns the timed round seconds. */
async function session(impl: keyof typeof impls): Promise<number[]> {
  const port = nextPort++;
  await using server = listen({ port, clients: 1 });
  const child = impls[impl](port).spawn();
  const times: number[] = [];
  try {
    await server.ready({ timeout: 120_000 });
    for (let round = -WARMUP; round < ROUNDS; round++) {
      weights[0] = round;
      weights[mid] = round * 2;
      weights[last] = -round;
      const start = performance.now();
      await server.broadcast({ round, weights });
      const replies = await server.gather({ timeout: 120_000 });
      const seconds = (performance.now() - start) / 1000;
      const reply = replies.get(0) as Round | undefined;
      const w = reply?.weights;
      if (
        reply?.round !== round || !(w instanceof Float32Array) || w.length !== weights.length ||
        w[0] !== round || w[mid] !== round * 2 || w[last] !== -round || w[1] !== 0.5
      ) {
        throw new Error(`Bad reply from the ${impl} client in round ${round}`);
      }
      if (round >= 0) times.push(seconds);
    }
    await server.broadcast("stop");
  } finally {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const status = await Promise.race([
      child.status,
      new Promise<undefined>((resolve) => timer = setTimeout(() => resolve(undefined), 10_000)),
    ]);
    clearTimeout(timer);
    if (status === undefined) child.kill();
    const stderr = new TextDecoder().decode((await child.output()).stderr).trim();
    if (stderr !== "") console.error(`${impl} client: ${stderr}`);
  }
  return times;
}

if (Deno.args[0] === "client") {
  await denoClient(Number(Deno.args[1]));
} else {
  const times = { deno: [] as number[], python: [] as number[] };
  for (let r = 0; r < REPEATS; r++) {
    for (const impl of ["deno", "python"] as const) times[impl].push(...await session(impl));
  }
  const gbps = (t: number) => 2 * SIZE / t / 1e9;
  const deno = gbps(median(times.deno));
  const python = gbps(median(times.python));
  const ratio = python / deno;
  const round3 = (x: number) => Number(x.toFixed(3));
  console.log(JSON.stringify({
    impl: "fedcomm",
    bench: "python",
    size: SIZE,
    rounds: ROUNDS,
    repeats: REPEATS,
    python_gbps: round3(python),
    deno_gbps: round3(deno),
    ratio: round3(ratio),
  }));
  console.log(
    `Python client (numpy, 100 MiB round trip): ${python.toFixed(3)} GB/s = ` +
      `${ratio.toFixed(2)} × the Deno client's ${deno.toFixed(3)} GB/s ` +
      (quick ? "(--quick: floor not checked)" : `(floor ${FLOOR})`),
  );
  if (ratio < FLOOR && !quick) Deno.exit(1);
}
