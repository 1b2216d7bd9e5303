/**
 * A model-sized upload with progress on both ends, from the library's
 * `"progress"` events (no polling): a server and a client in one process on
 * 127.0.0.1; the client uploads one `Float32Array` of `--megabytes` MB
 * (default 300) and both sides draw a bar; at the end the server checks
 * every weight and prints the throughput.
 *
 * ```sh
 * deno run -A examples/big_upload.ts --megabytes 300
 * ```
 *
 * The bar is drawn on a terminal; elsewhere (a pipe, a test) each side
 * prints one line per 10% instead. Both ends share one process and one
 * event loop here, so the throughput printed is well below what two
 * processes reach (see `deno task bench`).
 *
 * @module
 */

import { connect, listen, type TransferEvent } from "../mod.ts";
import { CONSOLE, integerFlag, type Output, parseFlags, reportFailure } from "./command_line.ts";
import { formatBytes, progressBar } from "./progress.ts";

const USAGE = `Usage: deno run -A examples/big_upload.ts [--megabytes N]

Uploads one Float32Array of N MB (default 300) from a client to a server on
127.0.0.1 and shows the progress both sides see, from the library's events.`;

/** Reports a transfer's progress: a bar on a terminal, a line per 10% elsewhere. */
function reporter(label: string, output: Output, terminal: boolean): (e: TransferEvent) => void {
  let shownTenths = -1;
  const encoder = new TextEncoder();
  return (event) => {
    const bar = `${label} ${progressBar(event.loaded, event.total)}`;
    if (terminal) {
      Deno.stderr.writeSync(encoder.encode(`\r${bar}\x1b[K`));
      if (event.loaded === event.total) Deno.stderr.writeSync(encoder.encode("\n"));
      return;
    }
    const tenths = Math.floor((event.loaded / event.total) * 10);
    if (tenths > shownTenths) {
      shownTenths = tenths;
      output.out(bar);
    }
  };
}

/**
 * Runs the upload.
 *
 * @param megabytes The size of the upload, in MB (10⁶ bytes).
 * @param output Where to print.
 * @param terminal Whether to draw bars in place.
 * @returns The exit code.
 */
export async function upload(
  megabytes: number,
  output: Output,
  terminal: boolean,
): Promise<number> {
  const floats = Math.floor((megabytes * 1e6) / 4);
  await using server = listen({ clients: 1 });
  await using client = await connect({ port: server.port });
  await server.ready({ timeout: 10_000 });
  client.addEventListener("progress", reporter("client send   ", output, terminal));
  server.addEventListener("progress", reporter("server receive", output, terminal));
  const weights = new Float32Array(floats).map((_, i) => i % 1000);
  const started = performance.now();
  const [, answers] = await Promise.all([
    client.send({ weights }),
    server.gather({ timeout: 600_000 }),
  ]);
  const seconds = (performance.now() - started) / 1000;
  const got = (answers.get(0) as { weights: Float32Array }).weights;
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== i % 1000) throw new Error(`Weight ${i} arrived as ${got[i]}, not ${i % 1000}`);
  }
  output.out(
    `uploaded ${formatBytes(weights.byteLength)} in ${seconds.toFixed(2)} s ` +
      `(${formatBytes(weights.byteLength / seconds)}/s), every weight checked`,
  );
  return 0;
}

/**
 * The command line.
 *
 * @param args The arguments.
 * @param output Where to print.
 * @returns The exit code.
 */
export async function main(args: string[], output: Output = CONSOLE): Promise<number> {
  try {
    const { values } = parseFlags({
      args,
      options: { megabytes: { type: "string" }, help: { type: "boolean", short: "h" } },
    });
    if (values.help) {
      output.out(USAGE);
      return 0;
    }
    const megabytes = integerFlag("megabytes", values.megabytes, 300, 1);
    return await upload(megabytes, output, Deno.stderr.isTerminal());
  } catch (error) {
    return reportFailure(error, output, "deno run -A examples/big_upload.ts --help");
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
