import type { Dataset } from "./data.ts";
import { describeArchitecture, initParameters, Network, parameterCount } from "./model.ts";
import { seededRandom } from "./random.ts";
import { trainLocal } from "./train.ts";

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

/** A small random classification problem: 3 classes, each around its own centre. */
function toyDataset(count: number, dims: number, classes: number, seed: number): Dataset {
  const random = seededRandom(seed);
  const centres = Array.from({ length: classes * dims }, () => random());
  const features = new Float32Array(count * dims);
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    labels[i] = i % classes;
    for (let d = 0; d < dims; d++) {
      // Some exact zeros, like blank pixels, to exercise the zero-skipping paths.
      const value = centres[labels[i] * dims + d] + 0.3 * (random() - 0.5);
      features[i * dims + d] = value < 0.15 ? 0 : value;
    }
  }
  return { features, labels, count, dims, classes };
}

Deno.test("parameterCount counts weights and biases of every layer", () => {
  assert(parameterCount({ inputs: 64, hidden: [], classes: 10 }) === 650, "softmax regression");
  assert(
    parameterCount({ inputs: 64, hidden: [32, 16], classes: 10 }) ===
      64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10,
    "two hidden layers",
  );
  assert(
    describeArchitecture({ inputs: 64, hidden: [32], classes: 10 }) === "64 → 32 → 10 MLP (ReLU)",
    "description",
  );
});

Deno.test("the gradient matches finite differences", () => {
  const architecture = { inputs: 5, hidden: [6, 4], classes: 3 };
  const data = toyDataset(8, 5, 3, 11);
  const network = new Network(architecture);
  const params = initParameters(architecture, seededRandom(5));
  const batch = [0, 1, 2, 3, 4, 5, 6, 7];
  const grad = new Float32Array(network.size);
  network.lossAndGradient(params, data, batch, grad);
  const scratch = new Float32Array(network.size);
  const h = 3e-3;
  let worst = 0;
  for (let i = 0; i < params.length; i++) {
    const saved = params[i];
    params[i] = saved + h;
    const up = network.lossAndGradient(params, data, batch, scratch);
    params[i] = saved - h;
    const down = network.lossAndGradient(params, data, batch, scratch);
    params[i] = saved;
    worst = Math.max(worst, Math.abs((up - down) / (2 * h) - grad[i]));
  }
  assert(worst < 1e-3, `largest gradient error ${worst}`);
});

Deno.test("a gradient step lowers the loss", () => {
  for (const hidden of [[], [16]]) {
    const architecture = { inputs: 4, hidden, classes: 3 };
    const data = toyDataset(30, 4, 3, 3);
    const network = new Network(architecture);
    const params = initParameters(architecture, seededRandom(9));
    const grad = new Float32Array(network.size);
    const batch = Array.from({ length: data.count }, (_, i) => i);
    const before = network.lossAndGradient(params, data, batch, grad);
    for (let i = 0; i < params.length; i++) params[i] -= 0.1 * grad[i];
    const after = network.evaluate(params, data).loss;
    assert(after < before, `hidden [${hidden}]: loss ${before} → ${after}`);
  }
});

Deno.test("local training fits a separable problem", () => {
  const architecture = { inputs: 4, hidden: [8], classes: 3 };
  const data = toyDataset(60, 4, 3, 4);
  const network = new Network(architecture);
  const params = initParameters(architecture, seededRandom(2));
  const indices = Array.from({ length: data.count }, (_, i) => i);
  const start = network.evaluate(params, data);
  const result = trainLocal(network, params, data, indices, {
    epochs: 30,
    batchSize: 8,
    learningRate: 0.5,
    random: seededRandom(1),
  });
  const end = network.evaluate(params, data);
  assert(result.samples === 60 && result.steps === 30 * 8, `result ${JSON.stringify(result)}`);
  assert(end.loss < start.loss / 2, `loss ${start.loss} → ${end.loss}`);
  assert(end.accuracy > 0.9, `accuracy ${end.accuracy}`);
});

Deno.test("local training stops after maxSteps", () => {
  const architecture = { inputs: 4, hidden: [], classes: 3 };
  const data = toyDataset(30, 4, 3, 4);
  const network = new Network(architecture);
  const params = initParameters(architecture, seededRandom(2));
  const result = trainLocal(network, params, data, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], {
    epochs: 5,
    batchSize: 4,
    learningRate: 0.1,
    maxSteps: 4,
    random: seededRandom(1),
  });
  assert(result.steps === 4, `steps ${result.steps}`);
});

Deno.test("the network rejects parameters of the wrong size", () => {
  const network = new Network({ inputs: 4, hidden: [], classes: 3 });
  const data = toyDataset(3, 4, 3, 1);
  let error: unknown;
  try {
    network.evaluate(new Float32Array(3), data);
  } catch (caught) {
    error = caught;
  }
  assert(error instanceof RangeError, "expected a RangeError");
});
