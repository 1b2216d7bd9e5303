/**
 * Memory while aggregating: N clients each upload one SIZE-byte
 * Float32Array; the server folds them into a running sum through
 * `uploads()`. Prints the server's peak resident memory above its idle size
 * (Linux: VmHWM after resetting it, minus VmRSS at idle), in MiB and in
 * multiples of SIZE.
 *
 * ```sh
 * deno run -A bench/memory.ts server PORT N SIZE
 * deno run -A bench/memory.ts client PORT N SIZE
 * ```
 *
 * @module
 */

import { connect, listen } from "../mod.ts";

const [role, portArg, clientsArg, sizeArg] = Deno.args;
const port = Number(portArg);
const clients = Number(clientsArg);
const size = Number(sizeArg);

/** Reads a field (kB) of /proc/self/status, in bytes. */
function status(field: string): number {
  const text = Deno.readTextFileSync("/proc/self/status");
  const match = text.match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
  if (match === null) throw new Error(`No ${field} in /proc/self/status`);
  return Number(match[1]) * 1024;
}

if (role === "server") {
  await using server = listen({ port, clients });
  await server.ready({ timeout: 60_000 });
  const sum = new Float32Array(size / 4).fill(0);
  await server.broadcast("go");
  const idle = status("VmRSS");
  Deno.writeTextFileSync("/proc/self/clear_refs", "5"); // reset VmHWM to the current RSS
  const start = performance.now();
  for await (const { value } of server.uploads({ timeout: 120_000 })) {
    const weights = value as Float32Array;
    for (let i = 0; i < sum.length; i++) sum[i] += weights[i];
  }
  const seconds = (performance.now() - start) / 1000;
  if (sum[0] !== clients) throw new Error(`Wrong sum: ${sum[0]}, expected ${clients}`);
  const peak = status("VmHWM") - idle;
  console.log(JSON.stringify({
    impl: "fedcomm",
    bench: "memory",
    clients,
    size,
    seconds: Number(seconds.toPrecision(4)),
    peak_above_idle_mib: Math.round(peak / 2 ** 20),
    peak_in_uploads: Number((peak / size).toFixed(2)),
  }));
} else {
  const weights = new Float32Array(size / 4).fill(1);
  const all = [];
  for (let i = 0; i < clients; i++) {
    all.push(await connect({ port, timeout: 60_000, waitForServer: true }));
  }
  await Promise.all(all.map(async (client) => {
    await client.recv();
    await client.send(weights);
    for await (const _ of client) {
      // Wait for the server to close.
    }
    await client.close();
  }));
}
