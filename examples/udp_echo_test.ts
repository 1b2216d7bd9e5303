import { equal, match } from "node:assert/strict";
import { pathOf, runDeno, spawnDeno } from "./subprocess.ts";

const SCRIPT = pathOf("./udp_echo.ts", import.meta.url);
const UNSTABLE = { denoFlags: ["-A", "--unstable-net"] };
const LISTENING = /listening on udp 127\.0\.0\.1:(\d+)/;

Deno.test("examples/udp_echo.ts echoes each datagram, up to the 65,507-byte limit", async () => {
  await using server = spawnDeno(SCRIPT, ["server", "--port", "0", "--count", "3"], UNSTABLE);
  const port = (await server.waitFor(LISTENING))[1];
  const small = await runDeno(SCRIPT, ["client", "--port", port, "--count", "2"], UNSTABLE);
  equal(small.code, 0, small.stderr);
  equal(small.stdout, 'echo: "hello #1"\necho: "hello #2"\n');
  const largest = await runDeno(SCRIPT, ["client", "--port", port, "--size", "65507"], UNSTABLE);
  equal(largest.code, 0, largest.stderr);
  equal(largest.stdout, "echo: 65507 bytes\n");
  const served = await server.finish(10_000);
  equal(served.code, 0, served.stderr);
  match(
    served.stdout,
    /from 127\.0\.0\.1:\d+: "hello #2" \(echoed\)\nfrom 127\.0\.0\.1:\d+: 65507 bytes \(echoed\)\n$/,
  );
});

Deno.test("examples/udp_echo.ts reports a lost datagram after the timeout instead of blocking", async () => {
  await using server = spawnDeno(
    SCRIPT,
    ["server", "--port", "0", "--count", "3", "--lose", "2"],
    UNSTABLE,
  );
  const port = (await server.waitFor(LISTENING))[1];
  const started = performance.now();
  const client = await runDeno(
    SCRIPT,
    ["client", "--port", port, "--count", "3", "--timeout", "0.5"],
    UNSTABLE,
  );
  equal(client.code, 1);
  equal(client.stdout, 'echo: "hello #1"\necho: "hello #3"\n');
  equal(
    client.stderr,
    'no echo for "hello #2" within 500 ms: lost (UDP does not resend)\n' +
      "error: 1 of 3 datagram(s) got no echo\n",
  );
  const elapsed = performance.now() - started;
  equal(elapsed < 10_000, true, `${elapsed} ms`);
  const served = await server.finish(10_000);
  equal(served.code, 0, served.stderr);
  match(served.stdout, /"hello #2" \(dropped: --lose 2\)/);
});

Deno.test("examples/udp_echo.ts says it needs --unstable-net, and refuses oversized datagrams", async () => {
  const stable = await runDeno(SCRIPT, ["client", "--port", "9"]);
  equal(stable.code, 1);
  equal(stable.stderr, "error: Deno.listenDatagram is unstable: run with --unstable-net\n");
  const tooLarge = await runDeno(SCRIPT, ["client", "--port", "9", "--size", "65508"], UNSTABLE);
  equal(tooLarge.code, 1);
  match(
    tooLarge.stderr,
    /^error: Datagram too large: 65508 bytes exceeds the UDP limit of 65507 bytes; send large values over TCP/,
  );
});

Deno.test("examples/udp_echo.ts rejects a bad command line with exit code 2", async () => {
  const { code, stderr } = await runDeno(
    SCRIPT,
    ["server", "--port", "0", "--timeout", "1"],
    UNSTABLE,
  );
  equal(code, 2);
  equal(
    stderr,
    "error: Unknown flag for server: --timeout\n" +
      'hint: run "deno run -A --unstable-net examples/udp_echo.ts --help"\n',
  );
});
