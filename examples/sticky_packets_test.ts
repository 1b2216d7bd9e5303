import { deepEqual, equal, match, ok } from "node:assert/strict";
import { demonstrate, MESSAGES } from "./sticky_packets.ts";
import { pathOf, runDeno } from "./subprocess.ts";

const SCRIPT = pathOf("./sticky_packets.ts", import.meta.url);

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

Deno.test("demonstrate() shows raw chunks that do not match the messages, and framing that does", async () => {
  const report = await demonstrate();
  const decoder = new TextDecoder();
  // Raw: every byte arrives, but the first two messages share a chunk and the
  // third comes in pieces.
  equal(decoder.decode(concat(report.raw)), MESSAGES.join(""));
  ok(decoder.decode(report.raw[0]).startsWith("kinght love aym"), "the first two stuck together");
  ok(report.raw.length >= 2, `${report.raw.length} raw chunks`);
  // Framed: the same kind of chunks, exactly the messages.
  ok(report.framedChunks.length >= 2, `${report.framedChunks.length} framed chunks`);
  deepEqual(report.values, MESSAGES);
  deepEqual(report.echoes, MESSAGES);
});

Deno.test("examples/sticky_packets.ts prints both views and exits 0", async () => {
  const { code, stdout, stderr } = await runDeno(SCRIPT, []);
  equal(code, 0, stderr);
  equal(stderr, "");
  match(
    stdout,
    /^1\. Raw: the chunks conn\.readable delivered\n {2}chunk +1: +\d+ bytes {2}"kinght love aym/m,
  );
  match(stdout, /3 messages arrived as \d+ chunks: chunk boundaries are not message boundaries/);
  match(
    stdout,
    /^ {2}message 1: "kinght love "\n {2}message 2: "aym"\n {2}message 3: "xin正在学习"$/m,
  );
  match(stdout, /read exactly 3 echoes back on the same connection/);
});

Deno.test("examples/sticky_packets.ts rejects an unknown flag with exit code 2", async () => {
  const { code, stdout, stderr } = await runDeno(SCRIPT, ["--nope"]);
  equal(code, 2);
  equal(stdout, "");
  equal(
    stderr,
    'error: Unknown flag: --nope\nhint: run "deno run -A examples/sticky_packets.ts --help"\n',
  );
});
