/**
 * A model over 4 GiB through the NATS layer: `deno task bench --only=nats-huge`,
 * or `deno run -A bench/nats_huge.ts [--quick]`.
 *
 * Starts `nats-server -js` with its store in a temporary directory (on
 * `/dev/shm` when the tmpfs and the memory have room for the store as well as
 * one side's model, else on `/tmp`; the run stops with a clear message when
 * neither has room). Then two processes, one after the other, so that each
 * side's RSS is its own:
 *
 * - the root's side (`put`) fills a model of 4.5 GiB of float32, `big`
 *   (4.25 GiB, one tensor over MessagePack's 4 GiB binary limit) and
 *   `small` (256 MiB, a 2-D `NdArray`), with a pattern that depends on each
 *   element's index, and puts it the way `root.round()` publishes a round's
 *   model: `putPack(context, packParts({}, weights))`, into the job's object
 *   store, named by its SHA-256;
 * - the edge's side (`get`) fetches it the way an edge does,
 *   `getPack(context, name)` (read chunk by chunk straight into one array
 *   per tensor, checked against its name), checks every element against the
 *   pattern and the SHA-256 of the tensor bytes against the put side's; then
 *   two sites ask for the model by name through a cache that works like the
 *   edge's (`NatsEdge` fetches a round's model once, whatever its sites): the
 *   second is served without a second fetch, which the NATS connection's
 *   byte count confirms (`fetches`, `in_bytes_ratio`: bytes received over the
 *   pack's size).
 *
 * Prints one JSON line (`impl`, `bench`, `bytes`, `put_gbps`, `get_gbps`,
 * `equal`, `peak_rss_ratio_put`, `peak_rss_ratio_get`: each side's peak RSS
 * above its RSS before the model existed, over the model's bytes; then the
 * store's place, the sides' and nats-server's peaks in MiB) and a human
 * line. Exits 1 if the model came back different, was fetched twice, or
 * anything failed; bounded: everything is killed after 20 minutes (2 with
 * `--quick`). `--quick` moves a 64 MiB model (48 + 16 MiB), a smoke test.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { checkJobOptions, type JobContext, openJob } from "../_nats/context.ts";
import { packParts } from "../_nats/pack.ts";
import { getPack, putPack } from "../_nats/store.ts";
import { until } from "../_nats/retry.ts";
import type { Weights } from "../_fl/weights.ts";
import { NdArray } from "../tensor.ts";
import { NatsServer } from "../tests/nats_server.ts";

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const JOB = "huge";
/** A side's NATS operations must be done by then. */
const SIDE_MS = 15 * 60_000;
/** Columns of `small`, a 2-D tensor. */
const COLUMNS = 1024;
/** Slices hashed at a time (node:crypto is given views of at most this). */
const HASH_SLICE = 64 * MiB;

/** The model's tensors: `[name, bytes]`. */
function layout(quick: boolean): [string, number][] {
  return quick
    ? [["big", 48 * MiB], ["small", 16 * MiB]]
    : [["big", 4 * GiB + 256 * MiB], ["small", 256 * MiB]];
}

/** The process's resident set now and at its peak (`/proc/self/status`), in bytes. */
function rss(): { now: number; peak: number } {
  const status = Deno.readTextFileSync("/proc/self/status");
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)![1]);
  return { now: kib("VmRSS") * 1024, peak: kib("VmHWM") * 1024 };
}

/**
 * The pattern's bits for element `i` of the model (counted across its
 * tensors): a float32 in [1, 2) whose 23 mantissa bits are a hash of `i`.
 */
function bitsAt(i: number): number {
  let x = Math.imul(i ^ (i >>> 16), 0x45d9f3b);
  x = Math.imul(x ^ (x >>> 16), 0x45d9f3b);
  return (0x3f800000 | ((x ^ (x >>> 16)) & 0x7fffff)) >>> 0;
}

/** Fills `words` with the pattern from element `first` on. */
function fill(words: Uint32Array, first: number): void {
  for (let i = 0; i < words.length; i++) words[i] = bitsAt(first + i);
}

/** The index of the first element of `words` off the pattern, or -1. */
function firstMismatch(words: Uint32Array, first: number): number {
  for (let i = 0; i < words.length; i++) if (words[i] !== bitsAt(first + i)) return i;
  return -1;
}

/** A tensor's float32 data. */
function dataOf(tensor: Weights[string]): Float32Array {
  const data = tensor instanceof NdArray ? tensor.data : tensor;
  if (!(data instanceof Float32Array)) throw new TypeError("Model tensor is not float32");
  return data;
}

/** The SHA-256 of the tensors' bytes, in order, in hex. */
function tensorDigest(weights: Weights, names: string[]): string {
  const hash = createHash("sha256");
  for (const name of names) {
    const data = dataOf(weights[name]);
    for (let at = 0; at < data.byteLength; at += HASH_SLICE) {
      const length = Math.min(HASH_SLICE, data.byteLength - at);
      hash.update(new Uint8Array(data.buffer, data.byteOffset + at, length));
    }
  }
  return hash.digest("hex");
}

/** The model: the tensors of `layout`, filled with the pattern. */
function makeModel(tensors: [string, number][]): Weights {
  const weights: Weights = {};
  let first = 0;
  for (const [name, bytes] of tensors) {
    const data = new Float32Array(bytes / 4);
    fill(new Uint32Array(data.buffer), first);
    first += data.length;
    weights[name] = name === "small" ? new NdArray(data, [data.length / COLUMNS, COLUMNS]) : data;
  }
  return weights;
}

/** Opens the job's stream and object store, as `root()` and `edge()` do. */
function openContext(servers: string, who: string): Promise<JobContext> {
  const options = { nats: { servers }, job: JOB };
  return openJob(options, checkJobOptions(options), `fedcomm bench ${who}`);
}

/** The root's side: `put SERVERS QUICK`; prints `{ name, size, digest, seconds, … }`. */
async function putSide(servers: string, quick: boolean): Promise<void> {
  const context = await openContext(servers, "root");
  try {
    const base = rss().now;
    const tensors = layout(quick);
    const weights = makeModel(tensors);
    const digest = tensorDigest(weights, tensors.map(([name]) => name));
    const start = performance.now();
    const stored = await putPack(context, packParts({}, weights), until(SIDE_MS));
    const seconds = (performance.now() - start) / 1000;
    console.log(JSON.stringify({ ...stored, digest, seconds, base, peak: rss().peak }));
  } finally {
    await context.nc.close();
  }
}

/** A site's way to the round's model: fetched once by name, as `NatsEdge` does. */
class ModelCache {
  readonly #context: JobContext;
  #model: { name: string; weights: Weights } | undefined;
  fetches = 0;

  constructor(context: JobContext) {
    this.#context = context;
  }

  /** The model named `name`: the one held, or fetched from the object store. */
  async model(name: string): Promise<Weights> {
    if (this.#model?.name === name) return this.#model.weights;
    this.#model = undefined;
    const { tensors } = await getPack(this.#context, name, until(SIDE_MS));
    this.fetches++;
    this.#model = { name, weights: tensors };
    return tensors;
  }
}

/** Checks every element of the fetched model against the pattern; returns what is wrong. */
function checkModel(weights: Weights, tensors: [string, number][]): string[] {
  const wrong: string[] = [];
  let first = 0;
  for (const [name, bytes] of tensors) {
    const tensor = weights[name];
    if (tensor === undefined) {
      wrong.push(`"${name}" is missing`);
      continue;
    }
    const data = dataOf(tensor);
    if (data.byteLength !== bytes) wrong.push(`"${name}" has ${data.byteLength} bytes`);
    const at = firstMismatch(new Uint32Array(data.buffer, data.byteOffset, data.length), first);
    if (at >= 0) wrong.push(`"${name}" differs from element ${at} on`);
    first += bytes / 4;
  }
  const extra = Object.keys(weights).filter((name) => !tensors.some(([n]) => n === name));
  if (extra.length > 0) wrong.push(`extra tensors: ${extra.join(", ")}`);
  return wrong;
}

/** The edge's side: `get SERVERS QUICK NAME SIZE DIGEST`; prints its figures. */
async function getSide(
  servers: string,
  quick: boolean,
  stored: { name: string; size: number; digest: string },
): Promise<void> {
  const context = await openContext(servers, "edge");
  try {
    const base = rss().now;
    const inBefore = context.nc.stats().inBytes;
    const cache = new ModelCache(context);
    const start = performance.now();
    const weights = await cache.model(stored.name); // the first site
    const seconds = (performance.now() - start) / 1000;
    const second = await cache.model(stored.name); // the second site: no fetch
    const inBytes = context.nc.stats().inBytes - inBefore;
    const tensors = layout(quick);
    const wrong = checkModel(weights, tensors);
    const digest = tensorDigest(weights, tensors.map(([name]) => name));
    if (digest !== stored.digest) wrong.push(`the tensors' SHA-256 is "${digest}"`);
    if (second !== weights) wrong.push("the second site got another model");
    console.log(JSON.stringify({
      seconds,
      base,
      peak: rss().peak,
      fetches: cache.fetches,
      in_bytes_ratio: inBytes / stored.size,
      wrong,
    }));
  } finally {
    await context.nc.close();
  }
}

if (import.meta.main) {
  const [mode, servers, quick, ...rest] = Deno.args;
  if (mode === "put") await putSide(servers, quick === "1");
  else if (mode === "get") {
    await getSide(servers, quick === "1", {
      name: rest[0],
      size: Number(rest[1]),
      digest: rest[2],
    });
  } else await main();
}

/** Bytes free in the file system holding `dir` (`df`), or 0 if it cannot be read. */
function freeBytes(dir: string): number {
  try {
    const out = new Deno.Command("df", { args: ["-B1", "--output=avail", dir], stdout: "piped" })
      .outputSync();
    return Number(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)) || 0;
  } catch {
    return 0;
  }
}

/** `MemAvailable` of `/proc/meminfo`, in bytes. */
function memAvailable(): number {
  const info = Deno.readTextFileSync("/proc/meminfo");
  return Number(/^MemAvailable:\s+(\d+) kB/m.exec(info)![1]) * 1024;
}

/**
 * Where the store goes: `/dev/shm` if it and the memory have room for the
 * store (up to twice the model) and one side's model, else `/tmp` if it has
 * room for the store and the memory for one side; else a message saying why not.
 */
function storePlace(bytes: number): { dir: string } | { error: string } {
  const store = 2 * bytes + 512 * MiB;
  const side = Math.ceil(1.5 * bytes) + GiB;
  const memory = memAvailable();
  const shm = freeBytes("/dev/shm");
  if (shm >= store && memory >= store + side) return { dir: "/dev/shm" };
  const tmp = freeBytes("/tmp");
  const gib = (n: number) => `${(n / GiB).toFixed(1)} GiB`;
  if (tmp < store) {
    return {
      error: `Not enough disk for the object store: it needs ${gib(store)}, /tmp has ` +
        `${gib(tmp)} free and /dev/shm ${gib(shm)}`,
    };
  }
  if (memory < side) {
    return {
      error: `Not enough memory for one side's model: it needs ${gib(side)}, ` +
        `${gib(memory)} is available`,
    };
  }
  return { dir: "/tmp" };
}

/** Runs `bench/nats_huge.ts ARGS…`; resolves with its last stdout line, parsed. */
async function side(args: string[], signal: AbortSignal): Promise<Record<string, unknown>> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "inherit",
    signal,
  }).output();
  const { success, code, stdout } = await child;
  if (!success) throw new Error(`bench/nats_huge.ts ${args[0]} exited with ${code}`);
  return JSON.parse(new TextDecoder().decode(stdout).trim().split("\n").at(-1)!);
}

/** nats-server's peak RSS in bytes, found by its store directory (0 if not found). */
function serverPeak(dir: string): number {
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const cmdline = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).split("\0");
      if (!cmdline[0].endsWith("nats-server") || !cmdline.includes(dir)) continue;
      const status = Deno.readTextFileSync(`/proc/${entry.name}/status`);
      return Number(/^VmHWM:\s+(\d+) kB/m.exec(status)![1]) * 1024;
    } catch {
      // The process exited, or is not ours to read.
    }
  }
  return 0;
}

async function main(): Promise<void> {
  const quick = Deno.args.includes("--quick");
  const tensors = layout(quick);
  const bytes = tensors.reduce((n, [, b]) => n + b, 0);
  const place = storePlace(bytes);
  if ("error" in place) {
    console.error(`bench/nats_huge.ts: ${place.error}`);
    Deno.exit(1);
  }
  Deno.env.set("TMPDIR", place.dir); // NatsServer.start() makes its store directory there
  const limit = AbortSignal.timeout(quick ? 120_000 : 20 * 60_000);
  let line: Record<string, unknown>;
  {
    await using nats = await NatsServer.start();
    const q = quick ? "1" : "0";
    const put = await side(["put", nats.url, q], limit);
    const get = await side(
      ["get", nats.url, q, put.name as string, String(put.size), put.digest as string],
      limit,
    );
    line = figures(bytes, put, get, place.dir, serverPeak(nats.dir));
  }
  console.log(JSON.stringify(line));
  const wrong = line.wrong as string[];
  console.log(
    `nats-huge: ${(bytes / GiB).toFixed(2)} GiB model (tensor "big" ${
      (tensors[0][1] / GiB).toFixed(2)
    } GiB) through the object store (${place.dir}): put ${line.put_gbps} GB/s, ` +
      `get ${line.get_gbps} GB/s, equal: ${line.equal}, fetched once for 2 sites: ` +
      `${line.fetched_once} (${line.in_bytes_ratio} x the pack received); peak RSS above ` +
      `idle ${line.put_peak_mib} MiB put (${line.peak_rss_ratio_put} x), ` +
      `${line.get_peak_mib} MiB get (${line.peak_rss_ratio_get} x), ` +
      `nats-server ${line.nats_rss_mib} MiB${
        wrong.length > 0 ? `; wrong: ${wrong.join("; ")}` : ""
      }`,
  );
  if (!line.equal || !line.fetched_once) Deno.exit(1);
}

/** The JSON line from the two sides' figures. */
function figures(
  bytes: number,
  put: Record<string, unknown>,
  get: Record<string, unknown>,
  dir: string,
  natsPeak: number,
): Record<string, unknown> {
  const wrong = get.wrong as string[];
  const above = (s: Record<string, unknown>) => (s.peak as number) - (s.base as number);
  const round = (n: number, digits: number) => Number(n.toFixed(digits));
  // One fetch: the connection received the pack once (plus the chunks' message headers).
  const fetchedOnce = get.fetches === 1 && (get.in_bytes_ratio as number) < 1.05;
  return {
    impl: "fedcomm",
    bench: "nats-huge",
    bytes,
    put_gbps: round(bytes / (put.seconds as number) / 1e9, 3),
    get_gbps: round(bytes / (get.seconds as number) / 1e9, 3),
    equal: wrong.length === 0,
    peak_rss_ratio_put: round(above(put) / bytes, 3),
    peak_rss_ratio_get: round(above(get) / bytes, 3),
    pack_bytes: put.size,
    store: dir,
    fetched_once: fetchedOnce,
    fetches: get.fetches,
    in_bytes_ratio: round(get.in_bytes_ratio as number, 4),
    put_peak_mib: Math.round(above(put) / MiB),
    get_peak_mib: Math.round(above(get) / MiB),
    nats_rss_mib: Math.round(natsPeak / MiB),
    wrong,
  };
}
