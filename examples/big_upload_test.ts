import assert from "node:assert/strict";
import { main } from "./big_upload.ts";

function capture(): { out(line: string): void; err(line: string): void; lines: string[] } {
  const lines: string[] = [];
  return { out: (line) => lines.push(line), err: (line) => lines.push(line), lines };
}

Deno.test("examples/big_upload.ts shows both sides' progress climbing to 100% and checks the weights", async () => {
  const output = capture();
  assert.equal(await main(["--megabytes", "48"], output), 0, output.lines.join("\n"));
  for (const side of ["client send", "server receive"]) {
    const bars = output.lines.filter((line) => line.startsWith(side));
    assert.ok(bars.length >= 3, `${side}: several progress lines`);
    assert.match(bars.at(-1)!, /\[#{30}\] 48\.0\/48\.0 MB$/, `${side}: ends full`);
  }
  assert.match(output.lines.at(-1)!, /^uploaded 48\.0 MB in [\d.]+ s .* every weight checked$/);
});

Deno.test("examples/big_upload.ts answers --help and refuses a bad flag", async () => {
  const help = capture();
  assert.equal(await main(["--help"], help), 0);
  assert.match(help.lines[0], /^Usage: /);
  const bad = capture();
  assert.equal(await main(["--megabytes", "lots"], bad), 2);
  assert.match(bad.lines[0], /^error: /);
});
