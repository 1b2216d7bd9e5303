/**
 * A bounded fuzz run against live servers (see `bench/fuzz.ts`, which runs
 * the same for longer: `deno run -A bench/fuzz.ts --seconds 300`).
 *
 * About 15 s by default; set `FEDCOMM_FUZZ_SECONDS` to change it and
 * `FEDCOMM_FUZZ_SEED` to change the seed (the cases are deterministic per
 * seed and connection index; which server state each meets is not, since 48
 * run at once). The server runs in this process, so a crash fails the test;
 * RSS is `Deno.memoryUsage().rss` of this process (server and fuzzer), with
 * a bound of +300 MiB (measured: about +100 MiB).
 *
 * @module
 */

import assert from "node:assert/strict";
import { END_BOUND_MS, runFuzz, summary } from "../bench/fuzz.ts";

const seconds = Number(Deno.env.get("FEDCOMM_FUZZ_SECONDS") ?? 15);
const seed = Number(Deno.env.get("FEDCOMM_FUZZ_SEED") ?? 20_240_601);
/** Peak RSS of this process over its RSS before the run. */
const RSS_BOUND = 300 * 1024 * 1024;

Deno.test({
  name: `fuzz: a live server survives ${seconds} s of hostile connections (seed ${seed})`,
  ignore: !(seconds > 0),
  async fn() {
    const report = await runFuzz({ seconds, seed, concurrency: 48, epochSeconds: 5 });
    const text = summary(report);
    assert.deepStrictEqual(report.hangs, [], `connections the server never ended:\n${text}`);
    assert.deepStrictEqual(report.unexpected, [], `undocumented answers:\n${text}`);
    assert.ok(report.maxEndMs <= END_BOUND_MS, text);
    assert.ok(report.connections >= seconds * 10, `only ${report.connections} connections`);
    // Only documented outcomes: a reject, a welcome then a close, or a close without a reply.
    for (const outcome of Object.keys(report.outcomes)) {
      assert.match(
        outcome,
        /^(welcome, then closed|closed without a reply|closed while we wrote|(plain )?reject (auth|busy|full|malformed|version|closed))$/,
        text,
      );
    }
    assert.ok(report.rounds.length >= 1);
    for (const round of report.rounds) assert.ok(round.ok, `epoch ${round.epoch}: ${round.error}`);
    assert.ok(report.peakRss - report.idleRss < RSS_BOUND, text);
  },
});
