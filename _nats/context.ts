/**
 * One job's NATS resources: the connection (credentials, TLS), the JetStream
 * stream that carries the job's messages, and the object store that holds its
 * models and partial aggregates.
 *
 * Names, for a job `J` and an edge `E`:
 *
 * | what                           | name                      |
 * | ------------------------------ | ------------------------- |
 * | stream (file storage)          | `FEDCOMM_J`               |
 * | root → edges: tasks, stop      | subject `fedcomm.J.task`  |
 * | edge → root: taken, partial    | subject `fedcomm.J.up.E`  |
 * | object store bucket            | `fedcomm-J`               |
 * | the root's durable consumer    | `root`                    |
 * | an edge's durable consumer     | `edge-E`                  |
 *
 * @module
 */

import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node";
import {
  DiscardPolicy,
  jetstream,
  type JetStreamClient,
  type JetStreamManager,
  jetstreamManager,
  StorageType,
} from "@nats-io/jetstream";
import { type ObjectStore, Objm, setSha256Backend } from "@nats-io/obj";
import { connectError, connectionOptions } from "./connection.ts";
import { NatsError } from "./errors.ts";
import type { JobOptions } from "./types.ts";

/** Default object-store chunk: 256 KiB (within NATS's default 1 MiB payload). */
export const DEFAULT_CHUNK_BYTES = 256 * 1024;
/** Default time NATS keeps the job's messages and objects: 24 hours. */
export const DEFAULT_RETENTION_MS = 24 * 60 * 60 * 1000;
/** Default largest model or partial aggregate taken from the object store: 16 GiB. */
export const DEFAULT_MAX_MODEL_BYTES = 16 * 1024 ** 3;

const NAME = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Checks a job or edge name: 1–64 letters, digits, `_` or `-` (a NATS subject token).
 *
 * @param name The name.
 * @param what What it names, for the error: `"job"`, `"edge"`.
 * @returns The name.
 * @throws {TypeError} If it is not such a string.
 */
export function checkName(name: unknown, what: string): string {
  if (typeof name !== "string" || !NAME.test(name)) {
    throw new TypeError(
      `Invalid ${what} name: "${String(name)}" is not 1-64 letters, digits, "_" or "-"`,
    );
  }
  return name;
}

function checkPositive(value: number | undefined, what: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
    throw new RangeError(`Invalid ${what}: "${value}" is not a positive integer`);
  }
  return value;
}

/** A job's NATS resources, open. */
export interface JobContext {
  readonly job: string;
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly store: ObjectStore;
  readonly stream: string;
  readonly taskSubject: string;
  /** `fedcomm.J.up.E` for one edge, `fedcomm.J.up.>` for all. */
  readonly upSubject: (edge: string) => string;
  readonly chunkBytes: number;
  readonly maxModelBytes: number;
  /** Milliseconds of the stream's and the bucket's max age. */
  readonly retention: number;
}

/** The job's settings, checked, before anything is connected. */
export interface JobSettings {
  readonly job: string;
  readonly chunkBytes: number;
  readonly maxModelBytes: number;
  readonly retention: number;
}

/**
 * Checks a job's options.
 *
 * @param options The options.
 * @returns The settings with their defaults.
 * @throws {TypeError} If the job name, the server list, the credentials or the TLS options are
 * invalid (see `connectionOptions`).
 * @throws {RangeError} If a size or duration is not a positive integer.
 */
export function checkJobOptions(options: JobOptions): JobSettings {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("Invalid options: not an object");
  }
  const servers = options.nats?.servers;
  const list = typeof servers === "string" ? [servers] : servers;
  if (!Array.isArray(list) || list.length === 0 || list.some((s) => typeof s !== "string")) {
    throw new TypeError(`Invalid nats.servers: "${String(servers)}" is not a server address`);
  }
  connectionOptions(options.nats, ""); // the credentials and TLS options, checked
  return {
    job: checkName(options.job, "job"),
    chunkBytes: checkPositive(options.chunkBytes, "chunkBytes", DEFAULT_CHUNK_BYTES),
    maxModelBytes: checkPositive(options.maxModelBytes, "maxModelBytes", DEFAULT_MAX_MODEL_BYTES),
    retention: checkPositive(options.retention, "retention", DEFAULT_RETENTION_MS),
  };
}

/**
 * Connects to NATS and makes sure the job's stream and bucket exist.
 *
 * @param options The job's options.
 * @param settings The checked settings.
 * @param name The connection's name, shown by NATS monitoring: `fedcomm root J`.
 * @returns The open context.
 * @throws {TypeError} If a credential or TLS option is malformed (see `connectionOptions`), or
 * the client cannot parse a server address.
 * @throws {NatsError} If NATS cannot be reached, refuses the credentials or the TLS handshake,
 * or has no JetStream.
 */
export async function openJob(
  options: JobOptions,
  settings: JobSettings,
  name: string,
): Promise<JobContext> {
  setSha256Backend("native"); // node:crypto: 2x the object store's rate of the pure-JS hash here
  const { job } = settings;
  const clientOptions = connectionOptions(options.nats, name);
  let nc: NatsConnection;
  try {
    nc = await natsConnect(clientOptions);
  } catch (error) {
    throw connectError(error, options.nats);
  }
  try {
    const stream = `FEDCOMM_${job}`;
    const jsm = await jetstreamManager(nc);
    const config = {
      name: stream,
      subjects: [`fedcomm.${job}.>`],
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      max_age: settings.retention * 1_000_000,
    };
    await jsm.streams.add(config).catch(async () => await jsm.streams.update(stream, config));
    const store = await new Objm(nc).create(`fedcomm-${job}`, {
      storage: StorageType.File,
      ttl: settings.retention * 1_000_000,
    });
    return {
      ...settings,
      nc,
      js: jetstream(nc),
      jsm,
      store,
      stream,
      taskSubject: `fedcomm.${job}.task`,
      upSubject: (edge) => `fedcomm.${job}.up.${edge}`,
    };
  } catch (error) {
    await nc.close().catch(() => {});
    const message = (error as Error)?.message ?? String(error);
    const hint = /jetstream is not enabled/i.test(message) ? " (start nats-server with -js)" : "";
    throw new NatsError(
      `Could not set up the job's stream and bucket in NATS: ${message}${hint}`,
      { cause: error },
    );
  }
}
