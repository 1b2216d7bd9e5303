/**
 * What the benchmark programs share: arguments, the median, the JSON line.
 *
 * @module
 */

/** The parsed command line of a round benchmark process. */
export interface RoundArgs {
  role: "server" | "client";
  port: number;
  clients: number;
  size: number;
  rounds: number;
}

/**
 * Parses `server PORT N SIZE ROUNDS` or `client PORT N`.
 *
 * @param args The command-line arguments.
 * @returns The parsed values.
 */
export function parseArgs(args: string[]): RoundArgs {
  const [role, port, clients, size = "0", rounds = "0"] = args;
  const numbers = [port, clients, size, rounds].map(Number);
  if ((role !== "server" && role !== "client") || numbers.some((n) => !Number.isSafeInteger(n))) {
    console.error("usage: server PORT N SIZE ROUNDS | client PORT N");
    Deno.exit(2);
  }
  if (role === "server" && (numbers[2] % 4 !== 0 || numbers[2] <= 0 || numbers[3] <= 0)) {
    console.error("SIZE must be a positive multiple of 4 and ROUNDS positive");
    Deno.exit(2);
  }
  return { role, port: numbers[0], clients: numbers[1], size: numbers[2], rounds: numbers[3] };
}

/**
 * The median of a list of numbers.
 *
 * @param values The numbers (not empty).
 * @returns The median.
 */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/**
 * Prints the result line: `{"impl","bench":"round","clients","size","rounds","median_round_s","gbps"}`.
 *
 * @param impl The implementation's name.
 * @param clients N.
 * @param size The payload bytes.
 * @param rounds How many rounds ran.
 * @param medianRound The median round time in seconds.
 */
export function report(
  impl: string,
  clients: number,
  size: number,
  rounds: number,
  medianRound: number,
): void {
  const gbps = (2 * clients * size) / medianRound / 1e9;
  console.log(JSON.stringify({
    impl,
    bench: "round",
    clients,
    size,
    rounds,
    median_round_s: Number(medianRound.toPrecision(4)),
    gbps: Number(gbps.toPrecision(4)),
  }));
}

/**
 * Calls `attempt` until it stops failing with `Deno.errors.ConnectionRefused`
 * (the server process may not be listening yet), for up to 20 seconds.
 *
 * @param attempt Connects once.
 * @returns What `attempt` resolved to.
 */
export async function retryRefused<T>(attempt: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 20_000;
  while (true) {
    try {
      return await attempt();
    } catch (error) {
      if (!(error instanceof Deno.errors.ConnectionRefused) || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}
