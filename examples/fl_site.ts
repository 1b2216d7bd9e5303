/**
 * The Deno site of the FL job (`fl_job.ts`): it holds its own share of the
 * UCI digits (the indices the job gave it, in its data file), and answers
 * the coordinator's tasks with `runSite` from `@fedcomm/fedcomm/fl`: a train
 * task trains the digits MLP of `model.ts` for a few local epochs on its
 * training share, an evaluate task measures the model on its test share. It
 * connects over TLS with its own secret (from provisioning), and connects
 * again, with the same name, when the coordinator restarts.
 *
 * The model travels as named tensors, one weight matrix (`[inputs, outputs]`,
 * row-major, as `model.ts` lays it out) and one bias vector per layer:
 * `fc1.weight`, `fc1.bias`, `fc2.weight`, …, the layout the Python site
 * (`fl_site.py`) trains with numpy.
 *
 * @module
 */

import { NdArray } from "../mod.ts";
import { runSite, type SiteResult, type Task, type TaskResult, type Weights } from "../fl.ts";
import { type Dataset, loadDigits, subset } from "./data.ts";
import { type Architecture, Network, parameterCount } from "./model.ts";
import { seededRandom } from "./random.ts";
import { trainLocal } from "./train.ts";

/** Where a site finds its share of the data: a JSON file the job writes. */
export interface SiteData {
  /** Indices of the site's training samples in the digits file. */
  train: number[];
  /** Indices of the site's test samples. */
  test: number[];
  /** Seeds the site's batch order. */
  seed: number;
}

/** What a site process needs: its name, its secret and CA, the coordinator's port, its data. */
export interface SiteSettings {
  /** The site's name, as provisioned. */
  name: string;
  /** The coordinator's port on 127.0.0.1. */
  port: number;
  /** The site's folder from provisioning: `secret` and `ca.pem`. */
  pki: string;
  /** The site's data file ({@linkcode SiteData}). */
  data: string;
}

/**
 * The named tensors of a flat parameter array, as views (no copy).
 *
 * @param architecture The layer sizes.
 * @param flat The parameters, laid out as `model.ts` does.
 * @returns `fc1.weight` (`[inputs, outputs]`), `fc1.bias`, … per layer.
 */
export function toNamed(architecture: Architecture, flat: Float32Array): Weights {
  const sizes = [architecture.inputs, ...architecture.hidden, architecture.classes];
  const weights: Weights = {};
  let offset = 0;
  for (let l = 1; l < sizes.length; l++) {
    const inputs = sizes[l - 1], outputs = sizes[l];
    weights[`fc${l}.weight`] = new NdArray(
      flat.subarray(offset, offset + inputs * outputs),
      [inputs, outputs],
    );
    offset += inputs * outputs;
    weights[`fc${l}.bias`] = flat.subarray(offset, offset + outputs);
    offset += outputs;
  }
  return weights;
}

/**
 * The architecture and flat parameters (a copy) of named tensors made by {@linkcode toNamed}.
 *
 * @param weights The named tensors.
 * @returns The layer sizes and the parameters.
 * @throws {TypeError} If the tensors are not `fc1.weight`, `fc1.bias`, … of matching sizes.
 */
export function fromNamed(weights: Weights): { architecture: Architecture; flat: Float32Array } {
  const sizes: number[] = [];
  for (let l = 1; `fc${l}.weight` in weights; l++) {
    const w = weights[`fc${l}.weight`];
    if (!(w instanceof NdArray) || w.shape.length !== 2) {
      throw new TypeError(`Invalid model: "fc${l}.weight" is not a matrix`);
    }
    if (l === 1) sizes.push(w.shape[0]);
    else if (w.shape[0] !== sizes[l - 1]) {
      throw new TypeError(`Invalid model: "fc${l}.weight" takes ${w.shape[0]} inputs`);
    }
    sizes.push(w.shape[1]);
  }
  if (sizes.length < 2) throw new TypeError(`Invalid model: no "fc1.weight"`);
  const architecture = {
    inputs: sizes[0],
    hidden: sizes.slice(1, -1),
    classes: sizes[sizes.length - 1],
  };
  const flat = new Float32Array(parameterCount(architecture));
  const views = toNamed(architecture, flat);
  if (Object.keys(views).length !== Object.keys(weights).length) {
    throw new TypeError(`Invalid model: tensors ${Object.keys(weights).join(", ")}`);
  }
  for (const [name, view] of Object.entries(views)) {
    const source = weights[name];
    const data = source instanceof NdArray ? source.data : source;
    const into = view instanceof NdArray ? view.data : view;
    if (data === undefined || data.length !== into.length) {
      throw new TypeError(`Invalid model: "${name}" has the wrong size`);
    }
    into.set(data);
  }
  return { architecture, flat };
}

/** A number setting of a task's config, or the fallback. */
function setting(task: Task, key: string, fallback: number): number {
  const value = task.config[key];
  return typeof value === "number" ? value : fallback;
}

/** Trains epoch by epoch, yielding between epochs so that a cancel can stop it. */
async function train(task: Task, digits: Dataset, data: SiteData): Promise<TaskResult> {
  const { architecture, flat } = fromNamed(task.weights);
  const network = new Network(architecture);
  const random = seededRandom(data.seed * 1000 + task.round);
  const epochs = setting(task, "epochs", 1);
  let loss = 0;
  for (let epoch = 0; epoch < epochs; epoch++) {
    await new Promise((resolve) => setTimeout(resolve, 0));
    task.signal.throwIfAborted(); // cancelled, or the coordinator went away: stop
    loss = trainLocal(network, flat, digits, data.train, {
      epochs: 1,
      batchSize: setting(task, "batch", 16),
      learningRate: setting(task, "lr", 0.1),
      random,
    }).loss;
  }
  return { weights: toNamed(architecture, flat), samples: data.train.length, metrics: { loss } };
}

function evaluate(task: Task, digits: Dataset, data: SiteData): TaskResult {
  const { architecture, flat } = fromNamed(task.weights);
  const { loss, accuracy } = new Network(architecture).evaluate(flat, subset(digits, data.test));
  return { samples: data.test.length, metrics: { loss, accuracy } };
}

/**
 * Runs a site until the coordinator stops the job.
 *
 * @param settings The site's name, port, provisioning folder and data file.
 * @returns What the site did.
 */
export async function runDenoSite(settings: SiteSettings): Promise<SiteResult> {
  const digits = await loadDigits();
  const data = JSON.parse(await Deno.readTextFile(settings.data)) as SiteData;
  const secret = (await Deno.readTextFile(`${settings.pki}/secret`)).trim();
  const ca = await Deno.readTextFile(`${settings.pki}/ca.pem`);
  let sessions = 0;
  return await runSite({
    hostname: "127.0.0.1",
    port: settings.port,
    tls: { caCerts: [ca] },
    name: settings.name,
    secret,
    props: { runtime: "deno" },
    reconnectTimeout: 60_000,
    onSession: () => {
      if (sessions++ > 0) console.log(`  ${settings.name}: connected again (new session)`);
    },
    train: (task) => train(task, digits, data),
    evaluate: (task) => evaluate(task, digits, data),
  });
}
