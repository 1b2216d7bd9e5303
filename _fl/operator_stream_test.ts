import assert from "node:assert/strict";
import { EventStreams, format } from "./operator_stream.ts";

Deno.test("format() writes one event with a JSON payload and the closing blank line", () => {
  assert.equal(format("round", { a: "x\ny" }), 'event: round\ndata: {"a":"x\\ny"}\n\n');
});

Deno.test("EventStreams.open() refuses pages past its cap with a 503", async () => {
  const streams = new EventStreams(1);
  const first = streams.open(format("snapshot", {}));
  const second = streams.open(format("snapshot", {}));
  assert.equal(second.status, 503);
  assert.deepStrictEqual(await second.json(), {
    error: "Too many event streams: at most 1 pages may listen at once",
  });
  assert.equal(streams.size, 1);
  streams.close();
  assert.equal(streams.size, 0);
  assert.equal(await first.text(), `retry: 2000\n\n${format("snapshot", {})}`);
  assert.equal(streams.open("").status, 503, "closed: no new streams");
});

Deno.test("EventStreams.send() cuts off a page that stops reading, keeping what it had queued", async () => {
  const streams = new EventStreams(4);
  const stalled = streams.open(format("snapshot", { n: 0 }));
  const big = format("round", { pad: "x".repeat(300 * 1024) });
  let sent = 0;
  while (streams.size > 0 && sent < 100) {
    streams.send(big);
    sent++;
  }
  assert.equal(streams.size, 0, "the stalled page was dropped");
  assert.ok(sent >= 3 && sent <= 5, `about 1 MiB queued before the cut: ${sent} events`);
  const text = await stalled.text(); // what was queued, then the end: the page reconnects
  assert.equal(text.split("event: round\n").length - 1, sent - 1);
  assert.ok(text.endsWith("\n\n"));
});
