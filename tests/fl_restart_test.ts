/**
 * A coordinator killed with SIGKILL mid-round (a real `kill -9` of a child
 * process running `fl_coordinator_script.ts`) and started again on the same
 * job directory resumes after its last checkpoint, recognises the sites by
 * name with their history when they connect again, and ends with the very
 * model of a run that was never killed.
 */

import assert from "node:assert/strict";
import { listen } from "../mod.ts";
import { Coordinator, loadCheckpoint, type RoundRecord } from "../fl.ts";
import { jobOptions, KILL_ROUND, secretOf, serverOptions, SITES } from "./fl_coordinator_script.ts";
import { type Handler, honest, resultOf, runSite } from "./fl_sites.ts";

const SCRIPT = new URL("./fl_coordinator_script.ts", import.meta.url).pathname;

function startCoordinator(port: number, dir: string): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCRIPT, "--port", String(port), "--dir", dir],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

async function records(dir: string): Promise<RoundRecord[]> {
  const text = await Deno.readTextFile(`${dir}/rounds.jsonl`);
  return text.trim().split("\n").map((line) => JSON.parse(line));
}

/** The run without a kill, in this process: the reference. */
async function reference(dir: string) {
  await using server = listen(serverOptions(0));
  const coordinator = new Coordinator(server, jobOptions(dir));
  const sites = SITES.map((name) =>
    runSite({ name, port: server.port, secret: secretOf(name), handler: honest })
  );
  const result = await coordinator.run();
  await Promise.all(sites);
  return { result, histories: coordinator.cohort.histories() };
}

Deno.test("Coordinator.run() resumes after a kill -9 mid-round and ends with the unkilled model", async () => {
  const refDir = await Deno.makeTempDir({ prefix: "fl_restart_ref_" });
  const dir = await Deno.makeTempDir({ prefix: "fl_restart_" });
  const port = freePort();
  let first: Deno.ChildProcess | undefined = startCoordinator(port, dir);
  let second: Deno.ChildProcess | undefined;
  try {
    const expected = await reference(refDir);
    let killed = false;
    const handler: Handler = (task, site) => {
      if (task.round === KILL_ROUND && site.session === 1) {
        // Mid-round: the task is out, no result is in yet.
        if (!killed) first!.kill("SIGKILL");
        killed = true;
        return undefined;
      }
      return resultOf(task, site.name);
    };
    const sites = SITES.map((name) =>
      runSite({ name, port, secret: secretOf(name), handler, reconnect: true, timeout: 60_000 })
    );
    const status = await first.status;
    await first.stdout.cancel();
    first = undefined;
    assert.equal(status.signal, "SIGKILL");
    assert.equal((await loadCheckpoint(dir))?.round, KILL_ROUND - 1);

    second = startCoordinator(port, dir);
    const output = new TextDecoder().decode((await second.output()).stdout);
    const secondStatus = await second.status;
    second = undefined;
    assert.ok(secondStatus.success, `the restarted coordinator exited with ${secondStatus.code}`);
    const result = JSON.parse(output);
    assert.deepStrictEqual([result.state, result.rounds, result.resumedFrom], [
      "done",
      5,
      KILL_ROUND - 1,
    ]);

    const logs = await Promise.all(sites);
    assert.deepStrictEqual(
      logs.map((log) => [log.sessions, log.stop]),
      SITES.map(() => [2, "done"]),
    );
    const checkpoint = (await loadCheckpoint(dir))!;
    assert.deepStrictEqual(checkpoint.weights, expected.result.weights);
    // Known by name across the restart, with the history of both sessions.
    assert.deepStrictEqual(
      checkpoint.sites.map((s) => [s.name, s.sessions, s.rounds, s.taken]),
      expected.histories.map((s) => [s.name, 2, s.rounds, s.taken]),
    );
    // One record per round and kind: the killed round's is the restarted coordinator's.
    const got = (await records(dir)).map((r) => [r.round, r.kind, r.sampled, r.answered]);
    const want = (await records(refDir)).map((r) => [r.round, r.kind, r.sampled, r.answered]);
    assert.deepStrictEqual(got, want);
    assert.equal(result.totals.rounds, 5);
  } finally {
    for (const child of [first, second]) {
      if (child === undefined) continue;
      try {
        child.kill("SIGKILL");
      } catch {
        // It exited meanwhile.
      }
      await child.status;
      await child.stdout.cancel().catch(() => {});
    }
    await Deno.remove(refDir, { recursive: true });
    await Deno.remove(dir, { recursive: true });
  }
});
