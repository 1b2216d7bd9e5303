import { deepEqual, equal, match } from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { main } from "../cli.ts";
import { connect, listen, PROTOCOL_VERSION } from "../mod.ts";
import type { Output } from "../examples/command_line.ts";
import { pathOf, runDeno } from "../examples/subprocess.ts";

/** Collects what a command writes; `lines` resolves a waiter when a line matches. */
function capture(): Output & {
  stdout: string[];
  stderr: string[];
  waitFor(pattern: RegExp): Promise<RegExpMatchArray>;
} {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const waiters: [RegExp, (match: RegExpMatchArray) => void][] = [];
  return {
    stdout,
    stderr,
    out(line) {
      stdout.push(line);
      for (const [pattern, resolve] of waiters) {
        const found = line.match(pattern);
        if (found) resolve(found);
      }
    },
    err: (line) => stderr.push(line),
    waitFor(pattern) {
      for (const line of stdout) {
        const found = line.match(pattern);
        if (found) return Promise.resolve(found);
      }
      const { promise, resolve } = Promise.withResolvers<RegExpMatchArray>();
      waiters.push([pattern, resolve]);
      return promise;
    },
  };
}

/** Runs `main(args)` and expects exit code 2 with `line` and the hint for `command`. */
async function expectUsageError(args: string[], line: string, command: string): Promise<void> {
  const output = capture();
  equal(await main(args, output), 2, args.join(" "));
  deepEqual(output.stderr, [line, `hint: run "fedcomm ${command}--help"`]);
  deepEqual(output.stdout, []);
}

/** Runs `main([...args, "--help"])` and expects exit code 0 and the usage on stdout. */
async function expectHelp(args: string[], usage: RegExp): Promise<void> {
  for (const flag of ["--help", "-h"]) {
    const output = capture();
    equal(await main([...args, flag], output), 0, `${args.join(" ")} ${flag}`);
    match(output.stdout.join("\n"), usage);
    deepEqual(output.stderr, []);
  }
}

/** A port nothing listens on (it was free a moment ago). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

Deno.test("main() shows the top-level help and rejects a missing or unknown command", async () => {
  await expectHelp(
    [],
    /^Usage: fedcomm <command> \[flags\]\n[\s\S]*\n {2}probe {9}run the handshake/,
  );
  await expectUsageError([], "error: Missing command", "");
  await expectUsageError(["launch"], 'error: Unknown command: "launch"', "");
  await expectUsageError(["--verbose"], "error: Unknown flag: --verbose", "");
});

Deno.test("main() echo server and echo client echo a message; --help; a bad flag", async () => {
  const serverOutput = capture();
  const serving = main(["echo", "server", "--port", "0", "--clients", "1"], serverOutput);
  const port = (await serverOutput.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1];
  const clientOutput = capture();
  const code = await main(
    ["echo", "client", "--port", port, "--message", "Message 1 from client", "--count", "2"],
    clientOutput,
  );
  equal(code, 0, clientOutput.stderr.join("\n"));
  deepEqual(clientOutput.stdout, [
    "connected as client 0 of 1",
    'echo: "Message 1 from client #1"',
    'echo: "Message 1 from client #2"',
  ]);
  equal(await serving, 0, serverOutput.stderr.join("\n"));
  equal(serverOutput.stdout.at(-1), "all clients left: 2 message(s) echoed");

  await expectHelp(["echo"], /^Usage: fedcomm echo server --port P --clients N/);
  await expectHelp(["echo", "client"], /^Usage: fedcomm echo server/);
  await expectUsageError(
    ["echo", "client", "--port", "1", "--nope"],
    "error: Unknown flag: --nope",
    "echo ",
  );
  await expectUsageError(
    ["echo", "server", "--port", "0"],
    "error: Missing flag: --clients",
    "echo ",
  );
  await expectUsageError(
    ["echo", "relay"],
    'error: Unknown mode: "relay" (expected server or client)',
    "echo ",
  );
  const nothing = freePort();
  const refused = capture();
  equal(await main(["echo", "client", "--port", `${nothing}`], refused), 1);
  deepEqual(refused.stderr, [
    `error: Nothing listening at 127.0.0.1:${nothing}: connection refused`,
  ]);
});

Deno.test("main() send-file and receive-file move a file; --help; bad flags", async () => {
  const dir = await Deno.makeTempDir({ prefix: "fedcomm_cli_" });
  try {
    const data = crypto.getRandomValues(new Uint8Array(50_000));
    await Deno.writeFile(join(dir, "update.bin"), data);
    const receiverOutput = capture();
    const receiving = main(
      ["receive-file", "--port", "0", "--out", join(dir, "in")],
      receiverOutput,
    );
    const port = (await receiverOutput.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1];
    const senderOutput = capture();
    const sent = await main(
      ["send-file", `127.0.0.1:${port}`, join(dir, "update.bin")],
      senderOutput,
    );
    equal(sent, 0, senderOutput.stderr.join("\n"));
    const digest = createHash("sha256").update(data).digest("hex");
    match(
      senderOutput.stdout[0],
      new RegExp(`^sent update\\.bin: 50\\.0 kB .* sha256 ${digest} verified`),
    );
    equal(await receiving, 0, receiverOutput.stderr.join("\n"));
    deepEqual(await Deno.readFile(join(dir, "in", "update.bin")), data);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  await expectHelp(["send-file"], /^Usage: fedcomm send-file HOST:PORT FILE/);
  await expectHelp(["receive-file"], /^Usage: fedcomm receive-file --port P --out DIR/);
  await expectUsageError(
    ["send-file", "127.0.0.1:9", "a.bin", "--chunk", "1"],
    "error: Unknown flag: --chunk",
    "send-file ",
  );
  await expectUsageError(
    ["send-file", "127.0.0.1:9", "a.bin", "--tls-ca", "ca.pem"],
    "error: Unknown flag: --tls-ca",
    "send-file ",
  );
  await expectUsageError(["send-file", "127.0.0.1:9"], "error: Missing FILE", "send-file ");
  await expectUsageError(
    ["send-file", "localhost", "a.bin"],
    'error: Invalid address: "localhost" is not HOST:PORT',
    "send-file ",
  );
  await expectUsageError(
    ["receive-file", "--port", "0"],
    "error: Missing flag: --out",
    "receive-file ",
  );
  await expectUsageError(
    ["receive-file", "--out"],
    "error: Missing value for --out",
    "receive-file ",
  );
});

Deno.test("main() demo runs examples/fedavg.ts for one round; --help; bad flags", async () => {
  const output = capture();
  const code = await main(
    ["demo", "--clients", "2", "--rounds", "1", "--partition", "iid"],
    output,
  );
  equal(code, 0, output.stderr.join("\n"));
  match(output.stdout.join("\n"), /^ +1 +[\d.]+ +[\d.]+ +[\d.]+% /m);
  match(output.stdout.at(-1)!, /^done: final test accuracy [\d.]+% after 1 rounds/);
  await expectHelp(["demo"], /^Usage: fedcomm demo \[flags of examples\/fedavg\.ts\]/);
  const flags = capture();
  equal(await main(["demo", "--flags"], flags), 0);
  match(flags.stdout.join("\n"), /--crash-client I/);
  await expectUsageError(["demo", "--nope"], "error: Unknown flag: --nope", "demo ");
  await expectUsageError(
    ["demo", "--clients", "0"],
    'error: Invalid --clients: "0" is not an integer ≥ 1',
    "demo ",
  );
});

Deno.test("main() bench shows --help and rejects a bad flag", async () => {
  // A real run takes minutes (even --quick), so it is left to "deno task bench".
  await expectHelp(["bench"], /^Usage: fedcomm bench \[--quick\] \[--no-peers\]/);
  await expectUsageError(["bench", "--fast"], "error: Unknown flag: --fast", "bench ");
  await expectUsageError(["bench", "--quick=yes"], "error: Flag --quick takes no value", "bench ");
});

Deno.test("main() probe reports a welcome, a reject, nothing listening and no answer; --help; bad flags", async () => {
  {
    await using server = listen({ clients: 2 });
    const output = capture();
    equal(
      await main(["probe", `127.0.0.1:${server.port}`, "--join"], output),
      0,
      output.stderr.join("\n"),
    );
    equal(output.stdout[0], `fedcomm server at 127.0.0.1:${server.port}`);
    equal(output.stdout[1], `  protocol:   version ${PROTOCOL_VERSION}`);
    equal(output.stdout[2], "  welcome:    client id 0 of 2");
    equal(output.stdout[3], "  tls:        no");
    equal(output.stdout[4], "  auth:       none");
    match(output.stdout[5], /^ {2}handshake: {2}[\d.]+ ms \(TCP connect \+ hello\/welcome\)$/);
    equal(server.joined, 1, "the probe took a slot");
  }
  {
    await using server = listen({ clients: 1 });
    await using _client = await connect({ port: server.port });
    const output = capture();
    equal(
      await main(["probe", `127.0.0.1:${server.port}`, "--join", "--timeout", "3000"], output),
      1,
    );
    equal(output.stdout[2], "  rejected:   full: Server full: all 1 clients have joined");
    deepEqual(output.stderr, [
      `error: Rejected by 127.0.0.1:${server.port}: full: Server full: all 1 clients have joined`,
    ]);
  }
  {
    const nothing = freePort();
    const output = capture();
    equal(await main(["probe", `127.0.0.1:${nothing}`], output), 1);
    deepEqual(output.stderr, [
      `error: Nothing listening at 127.0.0.1:${nothing}: connection refused`,
    ]);
  }
  {
    // Something that accepts and never answers.
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const accepted: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const conn of listener) accepted.push(conn);
    })();
    const output = capture();
    equal(await main(["probe", `127.0.0.1:${listener.addr.port}`, "--timeout", "300"], output), 1);
    deepEqual(output.stderr, [
      `error: No answer within 300 ms from 127.0.0.1:${listener.addr.port}: ` +
      "not a fedcomm server, or one that is stuck",
    ]);
    listener.close();
    await accepting.catch(() => {});
    for (const conn of accepted) conn.close();
  }
  {
    // Something that answers in another protocol.
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const answering = (async () => {
      const conn = await listener.accept();
      await conn.write(new TextEncoder().encode("HTTP/1.1 400 Bad Request\r\n\r\n"));
      await conn.read(new Uint8Array(64)).catch(() => null);
      conn.close();
    })();
    const output = capture();
    equal(await main(["probe", `127.0.0.1:${listener.addr.port}`], output), 1);
    match(
      output.stderr[0],
      new RegExp(
        `^error: Unexpected answer from 127\\.0\\.0\\.1:${listener.addr.port} \\(not a fedcomm server\\?\\): `,
      ),
    );
    equal(output.stderr.length, 1);
    await answering;
  }
  await expectHelp(["probe"], /The probe takes no client slot/);
  await expectUsageError(["probe"], "error: Missing HOST:PORT", "probe ");
  await expectUsageError(
    ["probe", "127.0.0.1:7000", "--verbose"],
    "error: Unknown flag: --verbose",
    "probe ",
  );
  await expectUsageError(
    ["probe", "127.0.0.1:7000", "--timeout", "soon"],
    'error: Invalid --timeout: "soon" is not an integer ≥ 1',
    "probe ",
  );
});

Deno.test("cli.ts run as a program exits with main()'s code", async () => {
  const script = pathOf("../cli.ts", import.meta.url);
  const help = await runDeno(script, ["--help"]);
  equal(help.code, 0);
  match(help.stdout, /^Usage: fedcomm <command>/);
  const bad = await runDeno(script, ["probe", "127.0.0.1:7000", "--nope"]);
  equal(bad.code, 2);
  equal(bad.stdout, "");
  equal(bad.stderr, 'error: Unknown flag: --nope\nhint: run "fedcomm probe --help"\n');
});

Deno.test("main() probe reports TLS and mutual authentication, a server that requires a secret, and TLS it lacks or distrusts", async () => {
  const tls = new URL("../testdata/tls/", import.meta.url);
  const secret = "probe secret, thirty-two bytes..";
  await using server = listen({
    clients: 1,
    tls: {
      cert: await Deno.readTextFile(new URL("server.pem", tls)),
      key: await Deno.readTextFile(new URL("server.key", tls)),
    },
    auth: { secret },
  });
  const dir = await Deno.makeTempDir();
  try {
    const secretFile = join(dir, "secret");
    await Deno.writeTextFile(secretFile, `${secret}\n`);
    const ca = new URL("ca.pem", tls).pathname;
    const address = `127.0.0.1:${server.port}`;
    const plain = capture();
    equal(await main(["probe", address], plain), 1);
    match(plain.stderr.join("\n"), /Server speaks TLS: pass --tls-ca FILE \(its CA certificate\)/);
    const untrusted = capture();
    const otherCa = new URL("other_ca.pem", tls).pathname;
    equal(await main(["probe", address, "--tls-ca", otherCa], untrusted), 1);
    match(
      untrusted.stderr.join("\n"),
      /TLS certificate verification failed .*: pass its CA in tls\.caCerts/,
    );
    const refused = capture();
    const flags = ["--tls-ca", ca, "--tls-name", "localhost"];
    equal(await main(["probe", address, ...flags], refused), 1);
    match(refused.stdout.join("\n"), /rejected: {3}auth: Authentication required/);
    match(refused.stdout.join("\n"), /hint: .*--secret-file/);
    const output = capture();
    equal(await main(["probe", address, ...flags, "--secret-file", secretFile], output), 0);
    match(output.stdout.join("\n"), /tls: {8}yes/);
    match(output.stdout.join("\n"), /auth: {7}mutual/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
