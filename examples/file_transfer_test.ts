import { deepEqual, equal, match, rejects, throws } from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { connect } from "../mod.ts";
import type { Output } from "./command_line.ts";
import { type FileHeader, main, receiveFile, sendFile, targetPath } from "./file_transfer.ts";
import { type DenoChild, pathOf, runDeno, spawnDeno } from "./subprocess.ts";

const SCRIPT = pathOf("./file_transfer.ts", import.meta.url);
const LISTENING = /listening on 127\.0\.0\.1:(\d+)/;

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function randomBytes(size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 65_536) crypto.getRandomValues(bytes.subarray(i, i + 65_536));
  return bytes;
}

/** A temporary directory, removed with everything in it when disposed. */
async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "fedcomm_file_transfer_" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

function silent(): Output {
  return { out: () => {}, err: () => {} };
}

/** Starts a receiver process and returns it with its port. */
async function startReceiver(out: string): Promise<{ receiver: DenoChild; port: number }> {
  const receiver = spawnDeno(SCRIPT, ["receive", "--port", "0", "--out", out, "--timeout", "20"]);
  return { receiver, port: Number((await receiver.waitFor(LISTENING))[1]) };
}

/**
 * A hand-made sender that can lie: sends `header`, and `chunks` if the
 * receiver is ready; returns every answer of the receiver.
 */
async function fakeSender(port: number, header: FileHeader, chunks: Uint8Array[]) {
  await using client = await connect({ port });
  await client.send(header);
  const answers = [await client.recv({ timeout: 10_000 }) as { kind: string; message?: string }];
  if (answers[0].kind === "ready") {
    for (const chunk of chunks) await client.send(chunk);
    answers.push(await client.recv({ timeout: 10_000 }) as { kind: string; message?: string });
  }
  return answers;
}

Deno.test("examples/file_transfer.ts sends a file in chunks; the receiver saves and verifies it", async () => {
  await using dir = await tempDir();
  const data = randomBytes(9 * 1024 * 1024 + 123); // two 4 MiB chunks and a short one
  const input = join(dir.path, "model.bin");
  await Deno.writeFile(input, data);
  const out = join(dir.path, "received");
  const { receiver, port } = await startReceiver(out);
  await using _receiver = receiver;
  const sent = await runDeno(SCRIPT, ["send", "--port", `${port}`, input]);
  equal(sent.code, 0, sent.stderr);
  match(
    sent.stdout,
    new RegExp(
      `^sent model\\.bin: 9\\.4 MB in [\\d.]+ s .*, sha256 ${
        sha256(data)
      } verified by the receiver\\n$`,
    ),
  );
  const received = await receiver.finish(20_000);
  equal(received.code, 0, received.stderr);
  match(
    received.stdout,
    /receiving model\.bin: 9\.4 MB\nsaved .*model\.bin: 9\.4 MB in [\d.]+ s .*, sha256 verified\n$/,
  );
  deepEqual(await Deno.readFile(join(out, "model.bin")), data);
  deepEqual([...Deno.readDirSync(out)].map((e) => e.name), ["model.bin"]);
});

Deno.test("sendFile() and receiveFile() move a file in many small chunks", async () => {
  await using dir = await tempDir();
  const data = randomBytes(100_000);
  const input = join(dir.path, "weights.f32");
  await Deno.writeFile(input, data);
  const out = join(dir.path, "out");
  const lines: string[] = [];
  const { promise: listening, resolve } = Promise.withResolvers<number>();
  const receiving = receiveFile({
    port: 0,
    out,
    timeoutMs: 10_000,
    output: {
      out: (line) => {
        lines.push(line);
        const port = line.match(LISTENING)?.[1];
        if (port) resolve(Number(port));
      },
      err: () => {},
    },
  });
  const port = await listening;
  const sent = await sendFile({ path: input, port, chunkBytes: 1000, output: silent() });
  const received = await receiving;
  equal(sent.sha256, sha256(data));
  equal(received.sha256, sent.sha256);
  equal(received.size, 100_000);
  deepEqual(await Deno.readFile(join(out, "weights.f32")), data);
  match(lines[1], /^receiving weights\.f32: 100\.0 kB$/);
});

Deno.test("examples/file_transfer.ts gives one-line errors for a missing file and an unusable directory", async () => {
  await using dir = await tempDir();
  const missing = join(dir.path, "nope.bin");
  const send = await runDeno(SCRIPT, ["send", "--port", "9", missing]);
  equal(send.code, 1);
  equal(send.stderr, `error: Cannot read ${missing}: No such file or directory\n`);

  // An output directory under a regular file cannot be created (ENOTDIR).
  const file = join(dir.path, "plain-file");
  await Deno.writeTextFile(file, "not a directory");
  const receive = await runDeno(SCRIPT, ["receive", "--port", "0", "--out", join(file, "out")]);
  equal(receive.code, 1);
  equal(receive.stdout, "", "it fails before listening");
  equal(
    receive.stderr,
    `error: Cannot use output directory ${join(file, "out")}: Not a directory\n`,
  );
});

Deno.test("examples/file_transfer.ts refuses a name that escapes the output directory", async () => {
  await using dir = await tempDir();
  const out = join(dir.path, "out");
  const { receiver, port } = await startReceiver(out);
  await using _receiver = receiver;
  const data = new TextEncoder().encode("escaped");
  const answers = await fakeSender(
    port,
    { kind: "file", name: "../x", size: data.byteLength, sha256: sha256(data) },
    [data],
  );
  deepEqual(answers, [{
    kind: "error",
    message: 'Unsafe file name: "../x" would escape the output directory',
  }]);
  const { code, stderr } = await receiver.finish(20_000);
  equal(code, 1);
  equal(stderr, 'error: Unsafe file name: "../x" would escape the output directory\n');
  deepEqual([...Deno.readDirSync(dir.path)].map((e) => e.name), ["out"]);
  deepEqual([...Deno.readDirSync(out)], []);
});

Deno.test("examples/file_transfer.ts refuses a file larger than the free space before writing", async () => {
  await using dir = await tempDir();
  const out = join(dir.path, "out");
  const { receiver, port } = await startReceiver(out);
  await using _receiver = receiver;
  const answers = await fakeSender(
    port,
    { kind: "file", name: "huge.bin", size: 2 ** 52, sha256: "0".repeat(64) },
    [],
  );
  equal(answers.length, 1);
  match(
    answers[0].message!,
    /^Not enough space in .*: huge\.bin needs 4503\.6 TB, [\d.]+ [kMGT]?B free$/,
  );
  const { code, stderr } = await receiver.finish(20_000);
  equal(code, 1);
  match(
    stderr,
    /^error: Not enough space in .*: huge\.bin needs 4503\.6 TB, [\d.]+ [kMGT]?B free\n$/,
  );
  deepEqual([...Deno.readDirSync(out)], []);
});

Deno.test("examples/file_transfer.ts rejects a checksum mismatch and keeps no partial file", async () => {
  await using dir = await tempDir();
  const out = join(dir.path, "out");
  const { receiver, port } = await startReceiver(out);
  await using _receiver = receiver;
  const data = randomBytes(10_000);
  const announced = sha256(new Uint8Array(10_000));
  const answers = await fakeSender(
    port,
    { kind: "file", name: "corrupt.bin", size: data.byteLength, sha256: announced },
    [data.subarray(0, 4000), data.subarray(4000)],
  );
  const mismatch = `Checksum mismatch: corrupt.bin has sha256 ${sha256(data)}, ` +
    `the sender announced ${announced}`;
  deepEqual(answers, [{ kind: "ready" }, { kind: "error", message: mismatch }]);
  const { code, stderr } = await receiver.finish(20_000);
  equal(code, 1);
  equal(stderr, `error: ${mismatch}\n`);
  deepEqual([...Deno.readDirSync(out)], []);
});

Deno.test("examples/file_transfer.ts send reports the receiver's refusal to overwrite a file", async () => {
  await using dir = await tempDir();
  const out = join(dir.path, "out");
  await Deno.mkdir(out);
  await Deno.writeTextFile(join(out, "notes.txt"), "keep me");
  const input = join(dir.path, "notes.txt");
  await Deno.writeTextFile(input, "new notes");
  const { receiver, port } = await startReceiver(out);
  await using _receiver = receiver;
  const sent = await runDeno(SCRIPT, ["send", "--port", `${port}`, input]);
  const exists = `File exists: ${join(out, "notes.txt")}; move it away or choose another --out`;
  equal(sent.code, 1);
  equal(sent.stderr, `error: Receiver refused notes.txt: ${exists}\n`);
  const { code, stderr } = await receiver.finish(20_000);
  equal(code, 1);
  equal(stderr, `error: ${exists}\n`);
  equal(await Deno.readTextFile(join(out, "notes.txt")), "keep me");
});

Deno.test("targetPath() accepts plain file names only", () => {
  equal(targetPath("/srv/in", "model.bin"), "/srv/in/model.bin");
  equal(targetPath("/srv/in", "..model"), "/srv/in/..model");
  for (const name of ["../x", "..", ".", "../../etc/passwd", "/etc/passwd", "a\\b"]) {
    throws(() => targetPath("/srv/in", name), /would escape the output directory/, name);
  }
  for (const name of ["", "sub/model.bin", "a\0b"]) {
    throws(() => targetPath("/srv/in", name), /is not a plain file name/, name);
  }
});

Deno.test("examples/file_transfer.ts main() rejects bad command lines with exit code 2", async () => {
  const cases: [string[], string][] = [
    [["send", "--port", "7000"], "error: Missing FILE"],
    [["send", "--port", "7000", "a", "b"], "error: Expected one FILE"],
    [["receive", "--port", "0"], "error: Missing flag: --out"],
    [["receive", "--port", "0", "--out", "x", "extra"], 'error: Unexpected argument: "extra"'],
    [
      ["receive", "--out", "x", "--timeout", "0"],
      'error: Invalid --timeout: "0" is not a positive number of seconds',
    ],
    [["upload"], 'error: Unknown mode: "upload" (expected receive or send)'],
  ];
  for (const [args, line] of cases) {
    const stderr: string[] = [];
    const code = await main(args, { out: () => {}, err: (l) => stderr.push(l) });
    equal(code, 2, args.join(" "));
    deepEqual(stderr, [line, 'hint: run "deno run -A examples/file_transfer.ts --help"']);
  }
  await rejects(
    sendFile({ path: "/nonexistent/file", port: 9, output: silent() }),
    /^Error: Cannot read \/nonexistent\/file: No such file or directory$/,
  );
});
