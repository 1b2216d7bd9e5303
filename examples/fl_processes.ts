/**
 * The processes of the FL job (`fl_job.ts`) and what they report: starting
 * the coordinator and the sites, following the coordinator's JSON lines,
 * printing each round, and killing the coordinator once (`SIGKILL`) to show
 * that the job goes on from its checkpoint.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import type { RoundRecord } from "../fl.ts";
import type { CoordinatorSettings } from "./fl_coordinator.ts";
import type { SiteSettings } from "./fl_site.ts";
import { formatBytes } from "./progress.ts";

/** Which sites to start, and with which Python. */
export interface SiteCommands {
  /** Deno site processes (named `deno-1`, …; the first names). */
  denoSites: number;
  /** The Python interpreter of the Python sites. */
  python: string;
}

/** When to kill the coordinator. */
export interface RestartPlan {
  /** The train rounds. */
  rounds: number;
  /** Kill the coordinator once, while the round after the middle one trains. */
  restart: boolean;
}

/** A child process of the job. */
export interface Child {
  readonly label: string;
  readonly process: Deno.ChildProcess;
  readonly status: Promise<Deno.CommandStatus>;
}

const HERE = fileURLToPath(new URL(".", import.meta.url));
const SCRIPT = fileURLToPath(new URL("./fl_job.ts", import.meta.url));
/** The repository's root, with a trailing slash. */
export const REPO: string = fileURLToPath(new URL("..", import.meta.url));

function spawn(label: string, command: string, args: string[], stdout: "piped" | "inherit"): Child {
  const process = new Deno.Command(command, {
    args,
    stdin: "null",
    stdout,
    stderr: "inherit",
    env: { PYTHONPATH: `${REPO}python`, PYTHONDONTWRITEBYTECODE: "1", NO_COLOR: "1" },
  }).spawn();
  return { label, process, status: process.status };
}

/**
 * The lines of a stream of text (a child's stdout), the last one also
 * without its newline.
 *
 * @param stream The bytes.
 * @returns The lines, without their newlines.
 */
export async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buffer = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffer += chunk;
    for (let end = buffer.indexOf("\n"); end >= 0; end = buffer.indexOf("\n")) {
      yield buffer.slice(0, end);
      buffer = buffer.slice(end + 1);
    }
  }
  if (buffer !== "") yield buffer;
}

/** What the job has seen of its coordinators so far. */
export interface Progress {
  train: Map<number, RoundRecord>;
  printed: Set<number>;
  accuracy: number | undefined;
  restarts: number;
  resumedFrom: number | undefined;
  result: { rounds: number; resumedFrom: number; state: string } | undefined;
}

export function row(...cells: string[]): string {
  const widths = [5, 11, 10, 9, 7, 10, 8];
  return cells.map((cell, i) => cell.padStart(widths[i])).join(" ");
}

function printRound(evaluation: RoundRecord, progress: Progress, print: Print): void {
  const train = progress.train.get(evaluation.round);
  const { loss, accuracy } = evaluation.metrics;
  progress.accuracy = accuracy;
  const again = progress.printed.has(evaluation.round) ? "  (again, after the restart)" : "";
  progress.printed.add(evaluation.round);
  print(
    row(
      String(evaluation.round),
      train?.metrics.loss?.toFixed(4) ?? "-",
      loss?.toFixed(4) ?? "-",
      accuracy === undefined ? "-" : `${(accuracy * 100).toFixed(1)}%`,
      `${train?.answered.length ?? 0}/${train?.sampled.length ?? 0}`,
      formatBytes(
        (train?.bytesIn ?? 0) + (train?.bytesOut ?? 0) + evaluation.bytesIn +
          evaluation.bytesOut,
      ),
      `${(((train?.ms ?? 0) + evaluation.ms) / 1000).toFixed(2)} s`,
    ) + again,
  );
}

/** How the job's report is printed: by default, `console.log`. */
export type Print = (line: string) => void;

/**
 * Follows one coordinator process: prints its rounds, and kills it when the
 * round after `killAfter` starts training.
 *
 * @returns Whether it was killed.
 */
async function follow(
  coordinator: Child,
  progress: Progress,
  killAfter: number | undefined,
  print: Print,
): Promise<boolean> {
  let killed = false;
  for await (const line of lines(coordinator.process.stdout)) {
    let event;
    try {
      event = JSON.parse(line);
    } catch {
      print(line);
      continue;
    }
    if (event.event === "round") {
      const record = event.record as RoundRecord;
      if (record.kind === "train") progress.train.set(record.round, record);
      else printRound(record, progress, print);
    } else if (event.event === "training") {
      if (progress.restarts > 0 && progress.resumedFrom === undefined) {
        progress.resumedFrom = event.resumedFrom;
        print(
          `coordinator restarted: resumed from the checkpoint after round ${event.resumedFrom}`,
        );
      }
      if (event.round === killAfter && !killed) {
        killed = true;
        print(
          `killing the coordinator (SIGKILL, pid ${coordinator.process.pid}) in round ${event.round}`,
        );
        coordinator.process.kill("SIGKILL");
      }
    } else if (event.event === "done") {
      progress.result = event.result;
    }
  }
  return killed;
}

/** Starts the sites: the Deno ones, then the Python ones. */
export function startSites(
  settings: SiteCommands,
  names: string[],
  dir: string,
  port: number,
): Child[] {
  return names.map((name, i) => {
    const site: SiteSettings = {
      name,
      port,
      pki: `${dir}/pki/sites/${name}`,
      data: `${dir}/data/${name}.json`,
    };
    if (i < settings.denoSites) {
      return spawn(
        name,
        Deno.execPath(),
        ["run", "-A", SCRIPT, "site", JSON.stringify(site)],
        "inherit",
      );
    }
    return spawn(name, settings.python, [
      `${HERE}fl_site.py`,
      "--name",
      name,
      "--port",
      String(port),
      "--pki",
      site.pki,
      "--data",
      site.data,
    ], "inherit");
  });
}

/** Runs the coordinator, restarting it once when asked; its result goes to `progress.result`. */
export async function coordinate(
  settings: RestartPlan,
  coordinatorSettings: CoordinatorSettings,
  progress: Progress,
  print: Print,
  children: Set<Child>,
): Promise<void> {
  const killAfter = settings.restart ? Math.floor(settings.rounds / 2) + 1 : undefined;
  while (true) {
    const coordinator = spawn(
      "coordinator",
      Deno.execPath(),
      ["run", "-A", SCRIPT, "coordinator", JSON.stringify(coordinatorSettings)],
      "piped",
    );
    children.add(coordinator);
    const killed = await follow(
      coordinator,
      progress,
      progress.restarts === 0 ? killAfter : undefined,
      print,
    );
    const status = await coordinator.status;
    children.delete(coordinator);
    if (killed) {
      progress.restarts++;
      print(
        `coordinator ${
          status.signal ? `killed by ${status.signal}` : `exited with ${status.code}`
        }; starting it again on ${coordinatorSettings.dir}`,
      );
      continue;
    }
    if (!status.success || progress.result === undefined) {
      throw new Error(`The coordinator exited with code ${status.code}`);
    }
    return;
  }
}
