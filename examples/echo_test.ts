import { deepEqual, equal, match } from "node:assert/strict";
import { connect } from "../mod.ts";
import type { Output } from "./command_line.ts";
import { main } from "./echo.ts";
import { pathOf, spawnDeno } from "./subprocess.ts";

const SCRIPT = pathOf("./echo.ts", import.meta.url);
const LISTENING = /listening on 127\.0\.0\.1:(\d+)/;

/** Collects what a command writes. */
function capture(): Output & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: (line) => stdout.push(line), err: (line) => stderr.push(line) };
}

/** A port nothing listens on (it was free a moment ago). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

Deno.test("examples/echo.ts echoes each client's messages back to it, several clients at once", async () => {
  await using server = spawnDeno(SCRIPT, ["server", "--port", "0", "--clients", "3"]);
  const port = (await server.waitFor(LISTENING))[1];
  const runs = [["alpha", "2"], ["beta", "1"], ["gamma", "3"]].map(([message, count]) =>
    spawnDeno(SCRIPT, ["client", "--port", port, "--message", message, "--count", count])
  );
  try {
    const results = await Promise.all(runs.map((run) => run.finish(20_000)));
    for (
      const [i, expected] of [
        ['echo: "alpha #1"\necho: "alpha #2"'],
        ['echo: "beta"'],
        ['echo: "gamma #1"\necho: "gamma #2"\necho: "gamma #3"'],
      ].entries()
    ) {
      const { code, stdout, stderr } = results[i];
      equal(code, 0, stderr);
      match(stdout, /^connected as client [012] of 3\n/);
      deepEqual(stdout.split("\n").filter((l) => l.startsWith("echo:")).join("\n"), expected[0]);
    }
  } finally {
    for (const run of runs) await run.kill();
  }
  const { code, stdout, stderr } = await server.finish(10_000);
  equal(code, 0, stderr);
  match(stdout, /all 3 client\(s\) joined/);
  match(stdout, /client [012] sent "gamma #3"/);
  match(stdout, /all clients left: 6 message\(s\) echoed\n$/);
});

Deno.test("examples/echo.ts keeps serving the others when a client leaves or stays silent", async () => {
  await using server = spawnDeno(SCRIPT, ["server", "--port", "0", "--clients", "3"]);
  const port = Number((await server.waitFor(LISTENING))[1]);
  const leaver = await connect({ port });
  const silent = await connect({ port });
  deepEqual([leaver.id, silent.id], [0, 1]);
  await leaver.close();
  // The third client is a process: it gets its echoes while client 0 has left
  // and client 1 sends nothing (the seed's blocking recv() would have hung on it).
  await using talker = spawnDeno(SCRIPT, ["client", "--port", `${port}`, "--count", "3"]);
  const talked = await talker.finish(20_000);
  equal(talked.code, 0, talked.stderr);
  deepEqual(talked.stdout.match(/^echo: "hello #\d"$/gm), [
    'echo: "hello #1"',
    'echo: "hello #2"',
    'echo: "hello #3"',
  ]);
  await server.waitFor(/client 0 left/);
  // Any MessagePack value comes back as it was sent, typed arrays included.
  await silent.send({ late: true, weights: new Float32Array([0.5, 1.5]) });
  deepEqual(await silent.recv({ timeout: 10_000 }), {
    late: true,
    weights: new Float32Array([0.5, 1.5]),
  });
  await silent.close();
  const { code, stdout, stderr } = await server.finish(10_000);
  equal(code, 0, stderr);
  match(stdout, /client 1 sent \{ late: true, weights: Float32Array\(2\) \[ 0\.5, 1\.5 \] \}/);
  match(stdout, /client 1 left\n/);
  match(stdout, /all clients left: 4 message\(s\) echoed\n$/);
});

Deno.test("examples/echo.ts gives a one-line error instead of hanging", async () => {
  const nothing = freePort();
  await using refused = spawnDeno(SCRIPT, ["client", "--port", `${nothing}`]);
  const refusal = await refused.finish(20_000);
  equal(refusal.code, 1);
  deepEqual(
    refusal.stderr,
    `error: Nothing listening at 127.0.0.1:${nothing}: connection refused\n`,
  );

  // Two clients expected, one comes: the client gets no echo, the server gives up on joining.
  await using server = spawnDeno(SCRIPT, [
    "server",
    "--port",
    "0",
    "--clients",
    "2",
    "--timeout",
    "6",
  ]);
  const port = (await server.waitFor(LISTENING))[1];
  await using lonely = spawnDeno(SCRIPT, ["client", "--port", port, "--timeout", "1"]);
  const client = await lonely.finish(20_000);
  equal(client.code, 1);
  match(client.stderr, /^error: No echo within 1000 ms: the server is still waiting/);
  deepEqual(client.stderr.split("\n").length, 2, "one line");
  const served = await server.finish(20_000);
  equal(served.code, 1);
  deepEqual(served.stderr, "error: Waiting for clients timed out after 6000 ms: 1 of 2 joined\n");
});

Deno.test("examples/echo.ts main() rejects bad command lines with exit code 2", async () => {
  const cases: [string[], string][] = [
    [["client", "--port", "7000", "--nope"], "error: Unknown flag: --nope"],
    [["client", "--port"], "error: Missing value for --port"],
    [["server", "--port", "0"], "error: Missing flag: --clients"],
    [
      ["server", "--port", "0", "--clients", "0"],
      'error: Invalid --clients: "0" is not an integer ≥ 1',
    ],
    [
      ["client", "--port", "70000"],
      'error: Invalid --port: "70000" is not an integer from 1 to 65535',
    ],
    [["dance"], 'error: Unknown mode: "dance" (expected server or client)'],
  ];
  for (const [args, line] of cases) {
    const output = capture();
    deepEqual(await main(args, output), 2, args.join(" "));
    deepEqual(output.stderr, [line, 'hint: run "deno run -A examples/echo.ts --help"']);
  }
  const help = capture();
  deepEqual(await main(["server", "--help"], help), 0);
  match(help.stdout[0], /^Usage: deno run -A examples\/echo\.ts server/);
});
