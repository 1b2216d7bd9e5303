/**
 * An edge aggregator in a process of its own, for the tests that kill one:
 * `deno run -A tests/nats_edge_process.ts SERVERS JOB NAME SECRET PORT`.
 * Prints `ready` once its server listens and its consumer is set up, then
 * takes tasks until the root stops the job.
 *
 * @module
 */

import { edge } from "../nats.ts";

const [servers, job, name, secret, port] = Deno.args;
const e = await edge({
  nats: { servers },
  job,
  name,
  secret,
  chunkBytes: 1024,
  listen: { port: Number(port), resumeTimeout: 0 },
});
const running = e.run();
console.log("ready");
await running;
await e.close();
