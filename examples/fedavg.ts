/**
 * Federated averaging (FedAvg, McMahan et al., 2017) over fedcomm, on the
 * UCI handwritten digits.
 *
 * One command starts a server and N client processes on 127.0.0.1. The
 * server splits the digits into a training and a test set, deals the
 * training set out to the clients, and runs rounds: it broadcasts the global
 * model, every client trains it for a few local epochs on its own samples and
 * uploads it, and the server folds the uploads, in order of arrival, into a
 * running sum weighted by sample count, then evaluates the average on the
 * test set.
 *
 * ```sh
 * deno task demo                                   # 4 clients, 10 rounds
 * deno task demo --clients 8 --partition iid
 * deno task demo --hidden 4096,4096 --rounds 3 --steps 5   # a 68 MB model
 * ```
 *
 * Run with `--help` for every flag. The file is also the client program:
 * the server starts `fedavg.ts client --port P --id-hint I` once per client.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import {
  type Client,
  connect,
  FedcommError,
  listen,
  PeerDisconnectedError,
  TimeoutError,
} from "../mod.ts";
import { classCounts, DIGITS_PATH, loadDigits, splitTrainTest, subset } from "./data.ts";
import {
  type Architecture,
  describeArchitecture,
  initParameters,
  Network,
  parameterCount,
} from "./model.ts";
import { partition, type PartitionKind, PARTITIONS } from "./partition.ts";
import { formatBytes, showStatus, withProgress } from "./progress.ts";
import { seededRandom } from "./random.ts";
import { trainLocal } from "./train.ts";

/** The settings of a demo run, from the command line. */
export interface Settings {
  /** How many client processes. */
  clients: number;
  /** How many rounds of federated averaging. */
  rounds: number;
  /** Hidden layer widths; empty for softmax regression. */
  hidden: number[];
  /** Local epochs per round. */
  epochs: number;
  /** Local minibatch size. */
  batchSize: number;
  /** Local SGD step size. */
  learningRate: number;
  /** The most local SGD steps per round; 0 for no limit. */
  steps: number;
  /** How the training set is split among clients. */
  partition: PartitionKind;
  /** With the `"shards"` partition: label-sorted shards per client. */
  shards: number;
  /** Share of the samples held out for testing. */
  testFraction: number;
  /** Seeds the split, the partition, the initial model and the batch order. */
  seed: number;
  /** The TCP port; 0 lets the system pick one. */
  port: number;
  /** Milliseconds allowed for joining and for each round's transfers and training. */
  timeoutMs: number;
  /** For testing failure handling: the id of a client that crashes, or -1. */
  crashClient: number;
  /** The round in which `crashClient` crashes. */
  crashRound: number;
}

/** What the server sends each client once, after the client said hello. */
interface Setup {
  kind: "setup";
  indices: Uint32Array;
  hidden: number[];
  epochs: number;
  batchSize: number;
  learningRate: number;
  steps: number;
  seed: number;
  crashRound: number;
}

const USAGE = `Usage: deno task demo [flags]
       deno run -A examples/fedavg.ts [flags]

Federated averaging on the UCI handwritten digits: one server, N client processes.

Flags:
  --clients N       client processes (default 4)
  --rounds R        rounds of federated averaging (default 10)
  --hidden H[,H…]   hidden layer widths, e.g. 64 or 4096,4096 (default: none,
                    softmax regression)
  --epochs E        local epochs per round (default 2)
  --batch B         local minibatch size (default 16)
  --lr X            local SGD learning rate (default 0.5, or 0.02 with two or
                    more hidden layers: deep wide ReLU stacks need smaller steps)
  --steps S         at most S local SGD steps per round (default 0: no limit)
  --partition P     iid or shards: each client gets a few label-sorted shards,
                    so it sees only some digits (default shards)
  --shards K        shards per client with --partition shards (default 3)
  --test-fraction F share of samples held out for testing (default 0.25)
  --seed S          random seed (default 1)
  --port P          TCP port of the server (default 0: any free port)
  --timeout S       seconds allowed to join and for each round (default 120)
  --crash-client I  for testing: client I exits with code 3 ...
  --crash-round R   ... at the start of round R (default 1)
  -h, --help        show this help`;

/** An invalid command line: the message is shown with the usage. */
export class UsageError extends Error {
  /**
   * Creates the error.
   *
   * @param message What is wrong with the command line.
   */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

function integer(name: string, text: string | undefined, fallback: number, min: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < min) {
    throw new UsageError(`Invalid --${name}: "${text}" is not an integer ≥ ${min}`);
  }
  return value;
}

function real(
  name: string,
  text: string | undefined,
  fallback: number,
  ok: (x: number) => boolean,
): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || !ok(value)) {
    throw new UsageError(`Invalid --${name}: "${text}" is out of range`);
  }
  return value;
}

/**
 * Reads the server's command line.
 *
 * @param args The arguments, without the program name.
 * @returns The settings, or `undefined` if help was asked for.
 * @throws {UsageError} If a flag is unknown or a value is invalid.
 */
export function parseSettings(args: string[]): Settings | undefined {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        clients: { type: "string" },
        rounds: { type: "string" },
        hidden: { type: "string" },
        epochs: { type: "string" },
        batch: { type: "string" },
        lr: { type: "string" },
        steps: { type: "string" },
        partition: { type: "string" },
        shards: { type: "string" },
        "test-fraction": { type: "string" },
        seed: { type: "string" },
        port: { type: "string" },
        timeout: { type: "string" },
        "crash-client": { type: "string" },
        "crash-round": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const v = parsed.values;
  if (v.help) return undefined;
  const hidden = v.hidden === undefined || v.hidden.trim() === "" || v.hidden === "0"
    ? []
    : v.hidden.split(",").map((width) => integer("hidden", width.trim(), 0, 1));
  const partitionKind = v.partition ?? "shards";
  if (!(PARTITIONS as readonly string[]).includes(partitionKind)) {
    throw new UsageError(
      `Invalid --partition: "${partitionKind}" is not one of ${PARTITIONS.join(", ")}`,
    );
  }
  const clients = integer("clients", v.clients, 4, 1);
  const crashClient = integer("crash-client", v["crash-client"], -1, 0);
  if (v["crash-client"] !== undefined && crashClient >= clients) {
    throw new UsageError(`Invalid --crash-client: "${crashClient}" is not a client id`);
  }
  return {
    clients,
    rounds: integer("rounds", v.rounds, 10, 1),
    hidden,
    epochs: integer("epochs", v.epochs, 2, 1),
    batchSize: integer("batch", v.batch, 16, 1),
    learningRate: real("lr", v.lr, hidden.length >= 2 ? 0.02 : 0.5, (x) => x > 0),
    steps: integer("steps", v.steps, 0, 0),
    partition: partitionKind as PartitionKind,
    shards: integer("shards", v.shards, 3, 1),
    testFraction: real("test-fraction", v["test-fraction"], 0.25, (x) => x > 0 && x < 1),
    seed: integer("seed", v.seed, 1, 0),
    port: integer("port", v.port, 0, 0),
    timeoutMs: real("timeout", v.timeout, 120, (x) => x > 0) * 1000,
    crashClient,
    crashRound: integer("crash-round", v["crash-round"], 1, 1),
  };
}

/** A client process the server started, and what is known about it. */
interface Child {
  /** The order in which it was started (its `--id-hint`). */
  readonly hint: number;
  readonly process: Deno.ChildProcess;
  /** Settles when the process exits. */
  readonly exit: Promise<Deno.CommandStatus>;
  /** Set once it exited. */
  status?: Deno.CommandStatus;
}

/** How the parent's output looks: by default, `console.log`. */
export type Print = (line: string) => void;

function percent(x: number): string {
  return `${(x * 100).toFixed(1)}%`;
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

function describeStatus(status: Deno.CommandStatus): string {
  return status.signal ? `was killed by ${status.signal}` : `exited with code ${status.code}`;
}

/** Bytes of a round frame beyond the weights: map keys, the numpy header, the frame length. */
const FRAME_OVERHEAD = 128;

/**
 * Runs the server side of the demo: starts the clients, runs the rounds and
 * prints one line per round and a summary.
 *
 * @param settings The run's settings.
 * @param print Where the report goes (default `console.log`).
 * @returns The exit code: 0 if every round ran and every client exited cleanly.
 */
export async function runServer(settings: Settings, print: Print = console.log): Promise<number> {
  const started = performance.now();
  const random = seededRandom(settings.seed);
  const digits = await loadDigits();
  const { train, test } = splitTrainTest(digits.count, settings.testFraction, random);
  const testSet = subset(digits, test);
  const shares = partition(train, digits.labels, {
    kind: settings.partition,
    clients: settings.clients,
    shardsPerClient: settings.shards,
    random,
  });
  const architecture: Architecture = {
    inputs: digits.dims,
    hidden: settings.hidden,
    classes: digits.classes,
  };
  const network = new Network(architecture);
  const weights = initParameters(architecture, random);
  const sum = new Float64Array(weights.length);

  print(
    `FedAvg on the UCI handwritten digits: ${digits.count} samples of ${digits.dims} pixels ` +
      `(${train.length} train, ${test.length} test), ${digits.classes} classes`,
  );
  print(
    `model: ${describeArchitecture(architecture)}, ${parameterCount(architecture)} parameters ` +
      `(${formatBytes(weights.byteLength)} as float32)`,
  );
  print(
    `${settings.clients} client processes, ${settings.partition} partition` +
      (settings.partition === "shards" ? ` (${settings.shards} label-sorted shards each)` : "") +
      `, ${settings.epochs} local epoch${settings.epochs === 1 ? "" : "s"}` +
      (settings.steps > 0 ? ` (at most ${settings.steps} steps)` : "") +
      `, batch ${settings.batchSize}, lr ${settings.learningRate}`,
  );

  const server = listen({ clients: settings.clients, port: settings.port });
  const children = spawnClients(settings.clients, server.port);
  const byId = new Map<number, { child: Child; pid: number }>();
  const who = (id: number) => {
    const known = byId.get(id);
    return known ? `client ${id} (process ${known.child.hint}, pid ${known.pid})` : `client ${id}`;
  };
  const timeout = settings.timeoutMs;
  let round = 0;
  try {
    // Join: every client connects and says hello, unless one dies first.
    await Promise.race([
      server.ready({ timeout }),
      ...children.map(async (child) => {
        const status = await child.exit;
        throw new Error(
          `client process ${child.hint} (pid ${child.process.pid}) ${
            describeStatus(status)
          } before joining`,
        );
      }),
    ]);
    for (const [id, hello] of await server.gather({ timeout })) {
      const { hint, pid } = hello as { hint: number; pid: number };
      const child = children[hint];
      if (child === undefined) throw new FedcommError(`Unknown process ${hint}`, { clientId: id });
      byId.set(id, { child, pid });
    }
    // A client process that exits cannot resume its session: fail the round
    // at once instead of waiting for it (a dropped connection alone is
    // resumed by the library, within the server's resumeTimeout).
    const idOf = new Map([...byId].map(([id, { child }]) => [child, id]));
    const exited = Promise.race(children.map(async (child) => {
      const status = await child.exit;
      throw new FedcommError(`Its process ${describeStatus(status)}`, {
        clientId: idOf.get(child),
      });
    }));
    exited.catch(() => {}); // the normal exits at the end
    const orExit = <T>(promise: Promise<T>): Promise<T> => Promise.race([promise, exited]);
    await server.send(
      new Map(shares.map((indices, id): [number, Setup] => [id, {
        kind: "setup",
        indices,
        hidden: settings.hidden,
        epochs: settings.epochs,
        batchSize: settings.batchSize,
        learningRate: settings.learningRate,
        steps: settings.steps,
        seed: settings.seed * 1000 + id,
        crashRound: id === settings.crashClient ? settings.crashRound : 0,
      }])),
      { timeout },
    );
    shares.forEach((indices, id) => {
      const classes = classCounts(digits, indices)
        .flatMap((count, label) => count > 0 ? [label] : []);
      print(`${who(id)}: ${indices.length} samples, digits ${classes.join(" ")}`);
    });

    const initial = network.evaluate(weights, testSet);
    print("");
    print("round  train loss  test loss  test acc   bytes moved      time");
    print(row("0", "-", initial.loss.toFixed(4), percent(initial.accuracy), "-", "-"));

    let accuracy = initial.accuracy;
    // Bytes moved per client in the current transfer, from the server's progress events.
    const moving = { send: new Map<number, number>(), receive: new Map<number, number>() };
    const movedSoFar = (direction: "send" | "receive") => {
      let bytes = 0;
      for (const loaded of moving[direction].values()) bytes += loaded;
      return bytes;
    };
    server.addEventListener("progress", (event) => {
      moving[event.direction].set(event.clientId, event.loaded);
    });
    for (round = 1; round <= settings.rounds; round++) {
      const roundStart = performance.now();
      const sent = server.bytesSent, received = server.bytesReceived;
      const frameTotal = settings.clients * (weights.byteLength + FRAME_OVERHEAD);
      moving.send.clear();
      moving.receive.clear();
      await withProgress(orExit(server.broadcast({ kind: "round", round, weights }, { timeout })), {
        label: `round ${round} broadcast`,
        total: frameTotal,
        done: () => movedSoFar("send"),
      });

      // Fold each upload into the running sum as it arrives: never N models at once.
      sum.fill(0);
      let samples = 0, lossSum = 0, uploaded = 0;
      const fold = async () => {
        for await (const { id, value } of server.uploads({ timeout })) {
          const update = checkUpdate(value, round, weights.length, id);
          for (let i = 0; i < sum.length; i++) sum[i] += update.samples * update.weights[i];
          samples += update.samples;
          lossSum += update.samples * update.loss;
          uploaded++;
        }
      };
      await withProgress(orExit(fold()), {
        label: `round ${round} train+upload`,
        total: frameTotal,
        done: () => movedSoFar("receive"),
        detail: () => `${uploaded}/${settings.clients} clients`,
      });
      // The broadcast has resolved, so the weights may change now.
      for (let i = 0; i < weights.length; i++) weights[i] = sum[i] / samples;

      const evaluating = showStatus(`round ${round} evaluating on ${testSet.count} test samples`);
      const evaluation = network.evaluate(weights, testSet);
      evaluating();
      accuracy = evaluation.accuracy;
      const moved = server.bytesSent - sent + server.bytesReceived - received;
      print(row(
        String(round),
        (lossSum / samples).toFixed(4),
        evaluation.loss.toFixed(4),
        percent(evaluation.accuracy),
        formatBytes(moved),
        seconds(performance.now() - roundStart),
      ));
    }
    round = 0;

    await server.broadcast({ kind: "done" }, { timeout });
    const failed = await stopClients(children, timeout);
    await server.close();
    for (const child of failed) {
      console.error(
        `error: client process ${child.hint} (pid ${child.process.pid}) ${
          describeStatus(child.status!)
        }`,
      );
    }
    const total = server.bytesSent + server.bytesReceived;
    print("");
    print(
      `done: final test accuracy ${percent(accuracy)} after ${settings.rounds} rounds, ` +
        `${formatBytes(total)} moved, ${seconds(performance.now() - started)} total`,
    );
    return failed.length === 0 ? 0 : 1;
  } catch (error) {
    const during = round > 0 ? ` in round ${round}` : "";
    const clientId = error instanceof TimeoutError
      ? error.clientIds[0]
      : error instanceof FedcommError
      ? error.clientId
      : undefined;
    let message = (error as Error)?.message ?? String(error);
    if (clientId !== undefined) {
      const child = byId.get(clientId)?.child;
      const status = child && await Promise.race([child.exit, delay(2000)]);
      message = `${who(clientId)} failed${during}: ${message}` +
        (status ? `; its process ${describeStatus(status)}` : "");
    } else if (during !== "") {
      message = `stopped${during}: ${message}`;
    }
    console.error(`error: ${message}`);
    await server.close();
    await stopClients(children, 5000);
    return 1;
  }
}

function row(...cells: string[]): string {
  const widths = [5, 11, 10, 9, 13, 9];
  return cells.map((cell, i) => cell.padStart(widths[i])).join(" ");
}

function delay(ms: number): Promise<undefined> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), ms);
    Deno.unrefTimer(timer);
  });
}

/** Checks a client's upload, naming the client in the error. */
function checkUpdate(
  value: unknown,
  round: number,
  size: number,
  clientId: number,
): { weights: Float32Array; samples: number; loss: number } {
  const update = value as Record<string, unknown> | null;
  const problem = typeof update !== "object" || update === null || update.kind !== "update"
    ? "not an update"
    : update.round !== round
    ? `round ${update.round}, expected ${round}`
    : !(update.weights instanceof Float32Array) || update.weights.length !== size
    ? `weights are not ${size} float32 values`
    : !(Number.isSafeInteger(update.samples) && (update.samples as number) > 0)
    ? `sample count "${update.samples}" is not a positive integer`
    : typeof update.loss !== "number" || !Number.isFinite(update.loss)
    ? `loss "${update.loss}" is not a finite number`
    : undefined;
  if (problem !== undefined) {
    throw new FedcommError(`Invalid upload: ${problem}`, { clientId });
  }
  return update as unknown as { weights: Float32Array; samples: number; loss: number };
}

/** Starts `count` client processes running this file in client mode. */
function spawnClients(count: number, port: number): Child[] {
  const script = fileURLToPath(import.meta.url);
  return Array.from({ length: count }, (_, hint) => {
    const process = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-prompt",
        `--allow-net=127.0.0.1:${port}`,
        `--allow-read=${fileURLToPath(DIGITS_PATH)}`,
        script,
        "client",
        "--port",
        String(port),
        "--id-hint",
        String(hint),
      ],
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    const child: Child = {
      hint,
      process,
      exit: process.status.then((status) => child.status = status),
    };
    return child;
  });
}

/**
 * Waits up to `ms` for the client processes to exit, then kills the rest.
 *
 * @returns The children that did not exit with code 0.
 */
async function stopClients(children: Child[], ms: number): Promise<Child[]> {
  await Promise.race([Promise.all(children.map((c) => c.exit)), delay(ms)]);
  for (const child of children) {
    if (child.status === undefined) {
      try {
        child.process.kill("SIGKILL");
      } catch {
        // It exited meanwhile.
      }
    }
  }
  await Promise.all(children.map((c) => c.exit));
  return children.filter((c) => !c.status!.success);
}

/** The client's command line: `client --port P --id-hint I`. */
export interface ClientSettings {
  /** The server's TCP port on 127.0.0.1. */
  port: number;
  /** The order in which the server started this process; sent back so it can tell processes apart. */
  hint: number;
}

function parseClientSettings(args: string[]): ClientSettings {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      options: { port: { type: "string" }, "id-hint": { type: "string" } },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.port === undefined) throw new UsageError("Missing --port for client mode");
  return {
    port: integer("port", values.port, 0, 1),
    hint: integer("id-hint", values["id-hint"], 0, 0),
  };
}

/**
 * Runs one client: joins the server, receives its samples and the training
 * settings, then trains and uploads once per round until the server says done.
 *
 * @param settings The server's port and this process's place among the clients.
 * @returns The exit code: 0 after the server said done.
 * @throws {FedcommError} If the server goes away or times out.
 */
export async function runClient(settings: ClientSettings): Promise<number> {
  const dataset = await loadDigits();
  await using client = await connect({ port: settings.port });
  await client.send({ kind: "hello", hint: settings.hint, pid: Deno.pid });
  const setup = await client.recv() as Setup;
  if (setup?.kind !== "setup" || !(setup.indices instanceof Uint32Array)) {
    throw new TypeError("Invalid setup from the server");
  }
  const network = new Network({
    inputs: dataset.dims,
    hidden: setup.hidden,
    classes: dataset.classes,
  });
  const random = seededRandom(setup.seed);
  while (true) {
    const message = await client.recv() as { kind: string; round: number; weights: Float32Array };
    if (message?.kind === "done") return 0;
    if (message?.kind !== "round" || !(message.weights instanceof Float32Array)) {
      throw new TypeError(`Invalid message from the server: "${message?.kind}"`);
    }
    if (message.round === setup.crashRound) crash(client);
    // The received weights are this process's own buffer: train them in place.
    const result = trainLocal(network, message.weights, dataset, setup.indices, {
      epochs: setup.epochs,
      batchSize: setup.batchSize,
      learningRate: setup.learningRate,
      maxSteps: setup.steps > 0 ? setup.steps : Infinity,
      random,
    });
    // A reply: tied to this round's message, so were it late, the server
    // would never take it for an answer to a later round.
    await client.reply({
      kind: "update",
      round: message.round,
      weights: message.weights,
      samples: result.samples,
      loss: result.loss,
    });
  }
}

/** Simulates a crash for `--crash-client`: exits at once, without closing the connection. */
function crash(client: Client): never {
  console.error(`client ${client.id}: crashing on purpose (--crash-client)`);
  Deno.exit(3);
}

if (import.meta.main) {
  const [mode, ...rest] = Deno.args;
  let who = "fedavg";
  try {
    if (mode === "client") {
      const settings = parseClientSettings(rest);
      who = `client process ${settings.hint}`;
      Deno.exitCode = await runClient(settings);
    } else {
      const settings = parseSettings(Deno.args);
      if (settings === undefined) console.log(USAGE);
      else Deno.exitCode = await runServer(settings);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`${USAGE}\n\nerror: ${error.message}`);
      Deno.exitCode = 2;
    } else if (mode === "client" && error instanceof PeerDisconnectedError) {
      // The server closed the connection without saying done: it reports why.
      console.error(`${who}: the server closed the connection; stopping`);
      Deno.exitCode = 1;
    } else {
      console.error(`${who}: ${error instanceof Error ? error.message : error}`);
      Deno.exitCode = 1;
    }
  }
}
