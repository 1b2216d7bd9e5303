/**
 * Small-message throughput: one client sends COUNT small objects
 * `{ i, loss, tag }` as fast as it can; the server consumes them through
 * `uploads()` and checks their order. Prints one JSON line with messages/s.
 *
 * ```sh
 * deno run -A bench/messages.ts server PORT COUNT
 * deno run -A bench/messages.ts client PORT COUNT
 * ```
 *
 * @module
 */

import { connect, listen } from "../mod.ts";

const [role, portArg, countArg] = Deno.args;
const port = Number(portArg);
const count = Number(countArg);

if (role === "server") {
  await using server = listen({ port, clients: 1 });
  await server.ready({ timeout: 60_000 });
  let expected = 0;
  let start = 0;
  for await (const { value } of server.uploads({ ids: [0], count })) {
    if (expected === 0) start = performance.now();
    const message = value as { i: number; loss: number; tag: string };
    if (message.i !== expected++ || message.tag !== "train") {
      throw new Error(`Out of order: got ${message.i}, expected ${expected - 1}`);
    }
  }
  const seconds = (performance.now() - start) / 1000;
  console.log(JSON.stringify({
    impl: "fedcomm",
    bench: "messages",
    count,
    seconds: Number(seconds.toPrecision(4)),
    messages_per_s: Math.round((count - 1) / seconds),
  }));
} else {
  await using client = await connect({ port, timeout: 60_000, waitForServer: true });
  for (let i = 0; i < count; i++) await client.send({ i, loss: 1 / (i + 1), tag: "train" });
  await client.flush();
}
