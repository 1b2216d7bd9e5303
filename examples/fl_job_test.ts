import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { parseJobArgs, UsageError } from "./fl_job.ts";

const SCRIPT = fileURLToPath(new URL("./fl_job.ts", import.meta.url));
const PYTHON = "/usr/bin/python3";

function pythonHasNumpy(): boolean {
  try {
    return new Deno.Command(PYTHON, { args: ["-c", "import numpy, msgpack"], stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** A round line: round, train loss, test loss, accuracy, sites, bytes, time. */
const ROUND_LINE =
  /^\s*(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)%\s+(\d+)\/(\d+)\s+[\d.]+ k?B\s+[\d.]+ s(.*)$/gm;

Deno.test({
  name: "runJob() runs 2 rounds with a Deno and a Python site through a coordinator restart",
  ignore: !pythonHasNumpy(),
  async fn() {
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        SCRIPT,
        "--rounds",
        "2",
        "--deno-sites",
        "1",
        "--python-sites",
        "1",
        "--timeout",
        "120",
      ],
      stdin: "null",
      signal: AbortSignal.timeout(150_000),
    }).output();
    const stdout = new TextDecoder().decode(output.stdout);
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, `${stdout}\n${stderr}`);
    const rounds = [...stdout.matchAll(ROUND_LINE)];
    assert.deepStrictEqual(rounds.map((m) => Number(m[1])), [1, 2], stdout);
    for (const m of rounds) {
      assert.deepStrictEqual([m[5], m[6]], ["2", "2"], stdout); // both sites answered
      const accuracy = Number(m[4]);
      assert.ok(accuracy > 10 && accuracy <= 100, stdout);
    }
    assert.match(stdout, /provisioned a CA, a server certificate and 2 site secrets/);
    assert.match(stdout, /killing the coordinator \(SIGKILL, pid \d+\) in round 2/);
    assert.match(stdout, /coordinator killed by SIGKILL; starting it again/);
    assert.match(stdout, /deno-1: connected again/);
    assert.match(stdout, /python-1: connected again/);
    assert.match(stdout, /resumed from the checkpoint after round [12]/);
    assert.match(stdout, /done: final test accuracy [\d.]+% after 2 rounds; 1 coordinator restart/);
  },
});

Deno.test("parseJobArgs() reads the flags and refuses bad ones", () => {
  assert.equal(parseJobArgs(["--help"]), undefined);
  const settings = parseJobArgs(["--rounds", "3", "--python-sites", "0", "--no-restart"])!;
  assert.deepStrictEqual(
    [settings.rounds, settings.denoSites, settings.pythonSites, settings.restart, settings.hidden],
    [3, 2, 0, false, [32]],
  );
  assert.deepStrictEqual(parseJobArgs(["--hidden", "0"])!.hidden, []);
  assert.throws(() => parseJobArgs(["--rounds", "0"]), UsageError);
  assert.throws(() => parseJobArgs(["--deno-sites", "0", "--python-sites", "0"]), UsageError);
  assert.throws(() => parseJobArgs(["--lr", "-1"]), UsageError);
  assert.throws(() => parseJobArgs(["--bogus"]), UsageError);
});
