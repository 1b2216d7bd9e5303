/**
 * The operator view in a real headless Chromium (npm `playwright-core`, driving Debian's
 * `/usr/bin/chromium`): the page shows the sites and the rounds as they come, draws the plots,
 * and its "remove" and "stop" buttons reach the source. Without Chromium the browser cases are
 * skipped with a message naming the install line; the HTTP cases run anyway.
 */

import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { listen } from "../mod.ts";
import {
  Coordinator,
  type JobSnapshot,
  type JobState,
  type OperatorSource,
  type RoundRecord,
  runSite,
  serveOperator,
  type SiteSnapshot,
  type Task,
} from "../fl.ts";

const CHROMIUM = "/usr/bin/chromium";
const INSTALL = "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium";
const hasChromium = await Deno.stat(CHROMIUM).then((s) => s.isFile, () => false);
if (!hasChromium) {
  console.warn(`fl_operator_test: skipping the browser cases: no ${CHROMIUM}; install: ${INSTALL}`);
}

/** A site as the Coordinator's snapshot shows it. */
function site(name: string, id: number, state: SiteSnapshot["state"], taken: number): SiteSnapshot {
  return {
    name,
    id,
    state,
    task: null,
    rounds: taken === 0 ? [] : [1],
    taken,
    bytesIn: 2048,
    bytesOut: 4096,
    lastSeen: Date.now(),
    late: 0,
    failures: 0,
    sessions: 1,
    removed: false,
  };
}

/** A stand-in for the Coordinator: a snapshot it returns, and what the page asked of it. */
class FakeSource extends EventTarget implements OperatorSource {
  readonly removed: string[] = [];
  readonly stops: (string | undefined)[] = [];
  sites: SiteSnapshot[] = [
    site("site-a", 0, "idle", 1),
    site("site-b", 1, "training", 1),
    site("<img src=x onerror=alert(1)>", 2, "idle", 0),
  ];
  recent: RoundRecord[] = [round(1, 120, 0.5)];
  state: JobState = "running";

  snapshot(): JobSnapshot {
    return {
      job: "mnist",
      state: this.state,
      round: Math.max(...this.recent.map((r) => r.round)),
      rounds: 5,
      resumedFrom: 0,
      strategy: "FedAvg",
      sites: this.sites,
      recent: this.recent,
      totals: {
        rounds: this.recent.length,
        evaluations: 0,
        tasks: 4,
        results: 4,
        late: 0,
        failures: 0,
        missing: 0,
        refused: 0,
        bytesIn: 100,
        bytesOut: 200,
      },
      reason: this.state === "stopped" ? "operator" : null,
    };
  }

  removeSite(name: string): void {
    if (!this.sites.some((s) => s.name === name)) throw new RangeError(`Unknown site: "${name}"`);
    this.removed.push(name);
  }

  stop(reason?: string): void {
    this.stops.push(reason);
    this.state = "stopped";
  }
}

function round(n: number, ms: number, accuracy: number): RoundRecord {
  return {
    job: "mnist",
    round: n,
    kind: "train",
    task: n,
    time: new Date().toISOString(),
    sampled: ["site-a", "site-b"],
    answered: ["site-a", "site-b"],
    late: [],
    missing: [],
    failed: [],
    quorum: true,
    bytesIn: 100,
    bytesOut: 200,
    ms,
    metrics: { accuracy, loss: 1 - accuracy },
  };
}

/** Sends a GET with the given Host header over a plain socket; the response's text. */
async function rawGet(port: number, path: string, host: string): Promise<string> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const request = `GET ${path} HTTP/1.1\r\nhost: ${host}\r\nconnection: close\r\n\r\n`;
  await conn.write(new TextEncoder().encode(request));
  return await new Response(conn.readable).text();
}

/** Polls `check` until it holds, within 10 s. */
async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

Deno.test({
  name: "serveOperator() page shows sites and live rounds, and its buttons remove a site and stop",
  ignore: !hasChromium,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const source = new FakeSource();
    await using operator = serveOperator(source, { port: 0 });
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      const foreign: string[] = [];
      page.on("pageerror", (error) => errors.push(error.message));
      page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
      page.on("dialog", (dialog) => errors.push(`dialog: ${dialog.message()}`));
      page.on("request", (r) => !r.url().startsWith(operator.url) && foreign.push(r.url()));
      await page.goto(operator.url);

      // The snapshot: three sites (the odd name shown as text), round 1 in the table and plots.
      await page.waitForSelector('#sites tr[data-site="site-b"]', { timeout: 10_000 });
      assert.equal(await page.locator("#sites tbody tr").count(), 3);
      assert.equal(await page.textContent("#job"), "mnist (FedAvg)");
      assert.match(
        await page.textContent("#totals") ?? "",
        /^1 rounds · 0 evaluations · 4 results/,
      );
      assert.equal(
        await page.locator("#sites tbody tr").nth(0).locator("td").nth(0).textContent(),
        "<img src=x onerror=alert(1)>",
      );
      assert.equal(await page.locator("#sites img").count(), 0);
      assert.match(await page.textContent('#sites tr[data-site="site-a"]') ?? "", /2\.0 KiB/);
      await page.waitForSelector('#rounds tr[data-round="1"]');
      await page.waitForSelector("#feed:text('live')");

      // Live: a round event and a site event appear without a reload.
      source.recent = [round(1, 120, 0.5), round(2, 80, 0.75)];
      source.dispatchEvent(new CustomEvent("round", { detail: round(2, 80, 0.75) }));
      source.dispatchEvent(
        new CustomEvent("site", { detail: { ...source.sites[1], state: "resuming" } }),
      );
      await page.waitForSelector('#rounds tr[data-round="2"]', { timeout: 10_000 });
      await page.waitForSelector('#sites tr[data-site="site-b"] td:text("resuming")');
      assert.equal(await page.textContent("#round"), "2 of 5");
      assert.equal(await page.inputValue("#metric"), "accuracy");
      const points = await page.getAttribute("#plot-time polyline", "points");
      assert.equal(points?.split(" ").length, 2, `two round times plotted: ${points}`);
      assert.equal(await page.locator("#plot-metric circle").count(), 2);
      assert.match(await page.textContent("#plot-metric") ?? "", /0\.750/);

      // Remove a site, then stop the job.
      await page.click('#sites tr[data-site="site-b"] button.remove');
      await until("the removal", () => source.removed.length === 1);
      assert.deepStrictEqual(source.removed, ["site-b"]);
      await page.waitForSelector("#status:text('Removed site')");
      await page.click("#stop");
      await until("the stop", () => source.stops.length === 1);
      assert.deepStrictEqual(source.stops, ["operator"]);
      await page.waitForSelector("#state:text('stopped: operator')", { timeout: 10_000 });
      assert.equal(await page.isDisabled("#stop"), true);

      assert.deepStrictEqual(errors, []);
      assert.deepStrictEqual(foreign, [], "the page loads nothing from elsewhere");
    } finally {
      await browser.close();
    }
  },
});

Deno.test("serveOperator() refuses POSTs without the page's token, from another origin or host", async () => {
  const source = new FakeSource();
  await using operator = serveOperator(source);
  assert.match(operator.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  const page = await (await fetch(operator.url)).text();
  const token = page.match(/name="fedcomm-token" content="([0-9a-f]{64})"/)?.[1];
  assert.ok(token, "the page carries the token");
  const stop = new URL("api/stop", operator.url);
  const call = async (url: URL, headers: Record<string, string>) => {
    const response = await fetch(url, { method: "POST", headers });
    return { status: response.status, body: await response.json() };
  };

  const none = await call(stop, {});
  assert.equal(none.status, 403);
  assert.match(none.body.error, /^Forbidden: missing or wrong "x-fedcomm-token" header/);
  assert.equal((await call(stop, { "x-fedcomm-token": "0".repeat(64) })).status, 403);
  const crossSite = await call(stop, { "x-fedcomm-token": token, origin: "https://evil.example" });
  assert.equal(crossSite.status, 403);
  assert.equal(crossSite.body.error, 'Forbidden: cross-origin request from "https://evil.example"');
  // DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 (fetch() keeps
  // the Host header to itself, so the request is written by hand).
  const rebound = await rawGet(operator.port, "/api/snapshot", "evil.example");
  assert.match(rebound, /^HTTP\/1\.1 403 /);
  assert.match(rebound, /host \\"evil\.example\\" is not a loopback name/);
  assert.match(await rawGet(operator.port, "/api/snapshot", "localhost:9999"), /^HTTP\/1\.1 200 /);
  assert.deepStrictEqual([source.removed, source.stops], [[], []]);

  const unknown = await call(new URL("api/sites/nobody/remove", operator.url), {
    "x-fedcomm-token": token,
  });
  assert.deepStrictEqual(unknown, { status: 400, body: { error: 'Unknown site: "nobody"' } });
  const removed = await call(
    new URL(`api/sites/${encodeURIComponent("site-a")}/remove`, operator.url),
    {
      "x-fedcomm-token": token,
      origin: new URL(operator.url).origin,
    },
  );
  assert.deepStrictEqual(removed, { status: 200, body: { ok: true, removed: "site-a" } });
  assert.deepStrictEqual((await call(stop, { "x-fedcomm-token": token })).body, {
    ok: true,
    stopped: true,
  });
  assert.deepStrictEqual([source.removed, source.stops], [["site-a"], ["operator"]]);
  const script = await fetch(new URL("operator.js", operator.url));
  assert.match(script.headers.get("content-security-policy") ?? "", /default-src 'none'/);
  assert.match(await script.text(), /^"use strict";/);
});

Deno.test("serveOperator() streams a snapshot then the source's events, and closes on abort", async () => {
  const source = new FakeSource();
  const controller = new AbortController();
  const operator = serveOperator(source, { signal: controller.signal });
  const response = await fetch(new URL("api/events", operator.url));
  assert.equal(response.headers.get("content-type"), "text/event-stream; charset=utf-8");
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let received = "";
  const read = async (until: RegExp) => {
    while (!until.test(received)) {
      const { value, done } = await reader.read();
      if (done) break;
      received += value;
    }
  };
  await read(/event: snapshot\ndata: .*\n\n/);
  assert.match(received, /^retry: 2000\n\nevent: snapshot\ndata: \{"job":"mnist"/);
  source.dispatchEvent(new CustomEvent("round", { detail: round(2, 80, 0.75) }));
  await read(/event: round\n/);
  assert.match(received, /event: round\ndata: \{"job":"mnist","round":2,/);
  controller.abort();
  await read(/$^/); // to the end: the server ends the stream when it closes
  await reader.cancel().catch(() => {});
  await operator.close();
  await assert.rejects(fetch(operator.url), TypeError);
});

Deno.test("serveOperator() listens on loopback only and checks its source and options", () => {
  const source = new FakeSource();
  assert.throws(
    () => serveOperator(source, { hostname: "0.0.0.0" }),
    {
      name: "RangeError",
      message: 'Invalid hostname: "0.0.0.0" is not a loopback address (127.0.0.1, ::1 or ' +
        "localhost); the operator view is for this machine: reach it from elsewhere through an " +
        "SSH tunnel",
    },
  );
  assert.throws(() => serveOperator(source, { port: 70_000 }), RangeError);
  assert.throws(() => serveOperator(source, { maxStreams: 0 }), RangeError);
  assert.throws(
    () => serveOperator({ snapshot: () => ({}) } as unknown as OperatorSource),
    { name: "TypeError", message: 'Invalid source: it has no "removeSite" method' },
  );
  assert.throws(
    () => serveOperator(source, { signal: AbortSignal.abort(new Error("gone")) }),
    { message: "gone" },
  );
});

Deno.test({
  name: "serveOperator() of a real Coordinator: live rounds, remove a site, stop the job",
  ignore: !hasChromium,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using server = listen({ clients: 8, open: true });
    const coordinator = new Coordinator(server, {
      job: "browser",
      model: { b: new Float32Array(4) },
      rounds: 10_000,
      minSites: 2,
      roundTimeout: 30_000,
    });
    const train = async (task: Task) => {
      await new Promise((resolve) => setTimeout(resolve, 100));
      const b = (task.weights.b as Float32Array).map((w) => w + 1);
      return { weights: { b }, samples: 10, metrics: { accuracy: 1 - 1 / (task.round + 1) } };
    };
    const sites = ["site-a", "site-b"].map((name) =>
      runSite({ port: server.port, name, train, reconnectTimeout: 20_000 })
    );
    const running = coordinator.run();
    await using operator = serveOperator(coordinator);
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on("pageerror", (error) => errors.push(error.message));
      await page.goto(operator.url);
      await page.waitForSelector('#sites tr[data-site="site-a"]', { timeout: 20_000 });
      await page.waitForSelector('#sites tr[data-site="site-b"]', { timeout: 20_000 });
      await page.locator("#rounds tbody tr").nth(2).waitFor({ timeout: 30_000 }); // 3 rounds
      assert.match(await page.textContent("#job") ?? "", /^browser/);
      assert.ok(await page.locator("#plot-time circle").count() >= 3);
      assert.equal(await page.inputValue("#metric"), "accuracy");

      await page.click('#sites tr[data-site="site-b"] button.remove');
      await until("site-b removed", () => coordinator.snapshot().sites.some((s) => s.removed));
      await page.waitForSelector('#sites tr[data-site="site-b"] td:text("(removed)")', {
        timeout: 20_000,
      });
      await page.click("#stop");
      const result = await running;
      assert.deepStrictEqual([result.state, result.reason], ["stopped", "operator"]);
      await page.waitForSelector("#state:text('stopped: operator')", { timeout: 20_000 });
      const outcomes = await Promise.all(sites);
      assert.deepStrictEqual(outcomes.map((o) => o.stopReason), ["operator", "removed"]);
      assert.deepStrictEqual(errors, []);
    } finally {
      coordinator.stop("test over");
      await browser.close();
    }
  },
});
