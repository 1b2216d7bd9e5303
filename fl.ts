/**
 * fedcomm's federated-learning layer (`@fedcomm/fedcomm/fl`), built on the
 * public transport API only.
 *
 * - **Messages**: the FL task convention (fl version 1, PROTOCOL.md's
 *   appendix): `task`, `cancel` and `stop` from the coordinator, `result` and
 *   `failure` from a site, as ordinary fedcomm values, with a parser for each
 *   ({@linkcode parseTask}, {@linkcode parseResult}, …) that throws a
 *   `TypeError` naming the bad field.
 * - **Weights**: a map from parameter name to a float32 or float64 tensor (a
 *   typed array, or an `NdArray` with its shape: how numpy arrays arrive),
 *   checked against the model by {@linkcode checkCompatible} and
 *   {@linkcode checkFinite}.
 * - **Aggregation**: {@linkcode WeightedSum} folds updates as they arrive
 *   into one f64 copy of the model, validating each first, and merges edge
 *   aggregators' partial sums; {@linkcode aggregateMetrics} takes the
 *   sample-weighted mean of the sites' metrics.
 * - **Strategies**: {@linkcode FedAvg}, {@linkcode FedProx},
 *   {@linkcode FedAdam} and {@linkcode FedYogi}, whose state goes into
 *   checkpoints.
 *
 * `NdArray` and `TypedArray` are the transport's (`@fedcomm/fedcomm`),
 * re-exported here for convenience.
 *
 * @example One round's aggregation, by hand
 * ```ts
 * import assert from "node:assert/strict";
 * import { NdArray } from "@fedcomm/fedcomm";
 * import { FedAvg, parseResult, WeightedSum } from "@fedcomm/fedcomm/fl";
 *
 * const global = { w: new NdArray(new Float32Array([0, 0, 0, 0]), [2, 2]) };
 * const strategy = new FedAvg();
 * const sum = new WeightedSum(global);
 * const received = [
 *   { fl: 1, type: "result", task: 1, round: 1, samples: 30, metrics: { loss: 0.5 },
 *     weights: { w: new NdArray(new Float32Array([1, 1, 1, 1]), [2, 2]) } },
 *   { fl: 1, type: "result", task: 2, round: 1, samples: 10, metrics: { loss: 0.9 },
 *     weights: { w: new NdArray(new Float32Array([5, 5, 5, 5]), [2, 2]) } },
 * ];
 * for (const value of received) {
 *   const result = parseResult(value, "train");
 *   sum.add(result.weights!, result.samples);
 * }
 * const next = strategy.update(global, sum, 1).w as NdArray<Float32Array>;
 * assert.deepStrictEqual(next.shape, [2, 2]);
 * assert.deepStrictEqual(next.data, new Float32Array([2, 2, 2, 2]));
 * ```
 *
 * @module
 */

export {
  aggregateMetrics,
  type MetricsItem,
  type PartialSum,
  WeightedSum,
} from "./_fl/aggregate.ts";
export {
  type CancelMessage,
  type CancelReason,
  type Config,
  type FailureMessage,
  FL_VERSION,
  type Metrics,
  parseCancel,
  parseFailure,
  parseResult,
  parseServerMessage,
  parseSiteMessage,
  parseStop,
  parseTask,
  type ResultMessage,
  type ServerMessage,
  type SiteMessage,
  type StopMessage,
  type TaskKind,
  type TaskMessage,
} from "./_fl/messages.ts";
export {
  type ConfigSource,
  FedAdam,
  FedAvg,
  type FedAvgOptions,
  FedOpt,
  type FedOptOptions,
  FedProx,
  type FedProxOptions,
  FedYogi,
  type Strategy,
} from "./_fl/strategy.ts";
export {
  checkCompatible,
  checkFinite,
  cloneWeights,
  describe,
  type Dtype,
  type FloatArray,
  type Tensor,
  type TensorInfo,
  type Weights,
} from "./_fl/weights.ts";
export { NdArray, type TypedArray } from "./mod.ts";
export { type StaleReason, Task, TaskCancelledError, type TaskResult } from "./_fl/task.ts";
export { tasks, type TasksOptions, TaskStream } from "./_fl/tasks.ts";
export { runSite, type SiteOptions, type SiteResult, type TaskHandler } from "./_fl/site.ts";
export {
  Cohort,
  type CohortOptions,
  MAX_ROUNDS_KEPT,
  type MemberStats,
  type SiteHistory,
  type SiteSnapshot,
  type SiteState,
} from "./_fl/cohort.ts";
export {
  type Checkpoint,
  CHECKPOINT_FILE,
  loadCheckpoint,
  saveCheckpoint,
} from "./_fl/checkpoint.ts";
export { Coordinator, type CoordinatorEventMap } from "./_fl/coordinator.ts";
export {
  type OperatorOptions,
  type OperatorServer,
  type OperatorSource,
  serveOperator,
} from "./_fl/operator.ts";
export {
  type CoordinatorOptions,
  type JobResult,
  type JobSnapshot,
  type JobState,
} from "./_fl/job.ts";
export {
  AUDIT_FILE,
  AUDIT_PER_MINUTE,
  type AuditEntry,
  type JobTotals,
  Records,
  type RefusedLogin,
  type RoundRecord,
  ROUNDS_FILE,
  Totals,
} from "./_fl/records.ts";
