/**
 * A transfer progress bar on the terminal: `[#####.....] 12.3/40.0 MB`,
 * redrawn in place while a promise is pending, by polling a byte counter.
 *
 * @module
 */

const UNITS = ["B", "kB", "MB", "GB", "TB"];

function unitOf(bytes: number): number {
  let unit = 0;
  while (unit + 1 < UNITS.length && Math.abs(bytes) >= 1000 ** (unit + 1)) unit++;
  return unit;
}

/**
 * Formats a byte count with a decimal (SI) unit: `"950 B"`, `"41.9 kB"`, `"268.4 MB"`.
 *
 * @param bytes The count.
 * @returns The count, rounded to one decimal above 1 kB.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatBytes } from "./progress.ts";
 *
 * assert.equal(formatBytes(12_345_678), "12.3 MB");
 * ```
 */
export function formatBytes(bytes: number): string {
  const unit = unitOf(bytes);
  return unit === 0 ? `${bytes} B` : `${(bytes / 1000 ** unit).toFixed(1)} ${UNITS[unit]}`;
}

/**
 * Draws a bar and the two byte counts, both in the unit of the total.
 *
 * @param done The bytes transferred so far.
 * @param total The bytes expected.
 * @param width The number of cells between the brackets (default 30).
 * @returns The bar, e.g. `"[#####.....] 12.3/40.0 MB"`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { progressBar } from "./progress.ts";
 *
 * assert.equal(progressBar(12_300_000, 40_000_000, 10), "[###.......] 12.3/40.0 MB");
 * ```
 */
export function progressBar(done: number, total: number, width = 30): string {
  const fraction = total > 0 ? Math.min(Math.max(done / total, 0), 1) : 1;
  const filled = Math.round(fraction * width);
  const unit = unitOf(total);
  const scale = 1000 ** unit;
  const digits = unit === 0 ? 0 : 1;
  const shown = (Math.min(Math.max(done, 0), total) / scale).toFixed(digits);
  return `[${"#".repeat(filled)}${".".repeat(width - filled)}] ` +
    `${shown}/${(total / scale).toFixed(digits)} ${UNITS[unit]}`;
}

/** Where {@linkcode withProgress} draws: by default, `Deno.stderr`. */
export interface ProgressOutput {
  /** Whether the output is a terminal; the bar is drawn only there. */
  isTerminal(): boolean;
  /** Writes bytes synchronously. */
  writeSync(bytes: Uint8Array): number;
}

/** Options for {@linkcode withProgress}. */
export interface ProgressOptions {
  /** Text before the bar, such as `"round 3 broadcast"`. */
  readonly label: string;
  /** The bytes expected. */
  readonly total: number;
  /** Reads the bytes transferred so far. */
  readonly done: () => number;
  /** Text after the bar, such as `"2/4 clients"`. */
  readonly detail?: () => string;
  /** Milliseconds between redraws (default 100). */
  readonly intervalMs?: number;
  /** Where to draw (default `Deno.stderr`). */
  readonly output?: ProgressOutput;
}

/**
 * Awaits `task` while redrawing a progress bar every `intervalMs` on a
 * terminal. The first frame is drawn only after one interval, so quick
 * transfers leave no trace; the line is cleared when the task settles.
 * Where the output is not a terminal, nothing is drawn.
 *
 * @param task The transfer to wait for.
 * @param options What to show and how often.
 * @returns What `task` resolves to.
 * @throws Whatever `task` rejects with.
 */
export async function withProgress<T>(task: Promise<T>, options: ProgressOptions): Promise<T> {
  const output = options.output ?? Deno.stderr;
  if (!output.isTerminal()) return await task;
  const encoder = new TextEncoder();
  let drawn = false;
  const draw = () => {
    const detail = options.detail ? `  ${options.detail()}` : "";
    const line = `${options.label} ${progressBar(options.done(), options.total)}${detail}`;
    output.writeSync(encoder.encode(`\r${line}\x1b[K`));
    drawn = true;
  };
  const timer = setInterval(draw, options.intervalMs ?? 100);
  try {
    return await task;
  } finally {
    clearInterval(timer);
    if (drawn) output.writeSync(encoder.encode("\r\x1b[K"));
  }
}

/**
 * Shows a line of status on a terminal, such as `"round 3 evaluating"`,
 * for work that blocks the event loop and so cannot animate a bar. Where
 * the output is not a terminal, nothing is shown.
 *
 * @param text The status.
 * @param output Where to show it (default `Deno.stderr`).
 * @returns A function that clears the line.
 */
export function showStatus(text: string, output: ProgressOutput = Deno.stderr): () => void {
  if (!output.isTerminal()) return () => {};
  const encoder = new TextEncoder();
  output.writeSync(encoder.encode(`\r${text}\x1b[K`));
  return () => output.writeSync(encoder.encode("\r\x1b[K"));
}
