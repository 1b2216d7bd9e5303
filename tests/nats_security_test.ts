/**
 * Security over a real nats-server with TLS and a user and password: the
 * credentials and the CA are checked, and the root refuses partial
 * aggregates from unknown edges, with a wrong HMAC, or replayed from an
 * earlier round, while the round goes on with the genuine ones.
 */

import assert from "node:assert/strict";
import { connect as natsConnect } from "@nats-io/transport-node";
import { decode } from "../codec.ts";
import { edge, NatsError, root } from "../nats.ts";
import { importKey, sealUp } from "../_nats/seal.ts";
import { NatsServer } from "./nats_server.ts";
import {
  connected,
  flatFedAvg,
  hold,
  sameBits,
  SECRETS,
  startSite,
  testModel,
} from "./nats_sites.ts";

const TLS = new URL("../testdata/tls/", import.meta.url).pathname;
const CA = Deno.readTextFileSync(`${TLS}ca.pem`);
const SERVER_ARGS = [
  "--tls",
  "--tlscert",
  `${TLS}server.pem`,
  "--tlskey",
  `${TLS}server.key`,
  "--user",
  "fed",
  "--pass",
  "nats-password-1",
];

Deno.test("root() connects over TLS with a user and password, and refuses a wrong password or CA", async () => {
  await using nats = await NatsServer.start({ args: SERVER_ARGS });
  const tls = { caCerts: [CA] };
  const good = { servers: nats.url, tls, user: "fed", pass: "nats-password-1" };
  const r = await root({ nats: good, job: "sec", edges: SECRETS });
  await r.close();
  await assert.rejects(
    root({ nats: { ...good, pass: "wrong" }, job: "sec", edges: SECRETS }),
    (error: Error) => error instanceof NatsError && /Authorization Violation/.test(error.message),
  );
  const otherCa = Deno.readTextFileSync(`${TLS}other_ca.pem`);
  await assert.rejects(
    root({ nats: { ...good, tls: { caCerts: [otherCa] } }, job: "sec", edges: SECRETS }),
    (error: Error) => error instanceof NatsError && /certificate/.test(error.message),
  );
});

Deno.test("NatsRoot.round() refuses forged, unknown-edge and replayed partials and aggregates the genuine ones", async () => {
  await using nats = await NatsServer.start({ args: SERVER_ARGS });
  const natsOptions = {
    servers: nats.url,
    tls: { caCerts: [CA] },
    user: "fed",
    pass: "nats-password-1",
  };
  const job = { nats: natsOptions, job: "sec" };
  await using r = await root({ ...job, edges: SECRETS }); // b is listed but never runs
  await using a = await edge({ ...job, name: "a", secret: SECRETS.a });
  const aRun = a.run();
  aRun.catch(() => {}); // awaited below; a failing test closes it
  const sites = [0, 1].map((s) => startSite(a.server.port, s));
  // The attacker: a NATS user that can publish anywhere (the worst case for the HMAC).
  const spy = await natsConnect({
    servers: nats.url,
    tls: { ca: CA },
    user: "fed",
    pass: "nats-password-1",
  });
  const captured: Uint8Array[] = [];
  const subscription = spy.subscribe("fedcomm.sec.up.a", {
    callback: (_error, message) => {
      captured.push(message.data.slice());
    },
  });
  try {
    await connected(sites);
    const weights = testModel();
    const round1 = await r.round({ round: 1, weights, min: 2, timeout: 30_000 });
    assert.deepStrictEqual([...round1.sites.keys()], ["a/s0", "a/s1"]);
    assert.match(
      round1.missing.get("b/*") ?? "",
      /^Edge "b" did not take the task before the round ended/,
    );
    const partial1 = captured.find((bytes) => {
      const body = decode((decode(bytes) as { body: Uint8Array }).body) as { type: string };
      return body.type === "partial";
    });
    assert.ok(partial1 !== undefined, "edge a's round 1 partial was not seen");

    // Round 2: while the sites train, the attacker publishes three partials.
    const release = hold(sites);
    const tasks = Promise.all(sites.map((s) => s.nextTask));
    const pending = r.round({ round: 2, weights, min: 2, timeout: 30_000 });
    await tasks;
    const forged = {
      v: 1,
      type: "partial",
      job: "sec",
      run: r.run,
      task: 2,
      round: 2,
      pack: `sha256-${"0".repeat(64)}`,
      size: 100,
      weight: 1e9,
      count: 1,
    };
    const evilKey = await importKey("evil-secret-0123456789", "evil");
    spy.publish("fedcomm.sec.up.evil", await sealUp(evilKey, { ...forged, edge: "evil" }));
    spy.publish("fedcomm.sec.up.a", await sealUp(evilKey, { ...forged, edge: "a" }));
    spy.publish("fedcomm.sec.up.b", await sealUp(evilKey, { ...forged, edge: "b" })); // b is down
    spy.publish("fedcomm.sec.up.a", partial1); // round 1's genuine partial, replayed
    await spy.flush();
    release();
    const round2 = await pending;
    const reasons = round2.rejected.map(({ edge, reason }) => `${edge}: ${reason}`);
    assert.ok(
      reasons.some((r) => /^evil: .*"evil" is not from a known edge/.test(r)),
      reasons.join("\n"),
    );
    assert.ok(reasons.some((r) => /^a: .*bad HMAC/.test(r)), reasons.join("\n"));
    assert.ok(
      reasons.some((r) => /^a: .*round 1, not task 2 of round 2: late or replayed/.test(r)),
    );
    assert.ok(reasons.some((r) => /^b: .*bad HMAC/.test(r)), reasons.join("\n"));
    // b, listed and silent, is missing, with the refusal of the message in its name.
    assert.match(
      round2.missingEdges.get("b") ?? "",
      /^Edge "b" did not take the task before the round ended \(after \d+ ms\); a message in its name was refused: Message from "b" has a bad HMAC/,
    );
    assert.equal(round2.missing.get("b/*"), round2.missingEdges.get("b"));
    assert.deepStrictEqual([...round2.sites.keys()], ["a/s0", "a/s1"]);
    assert.equal(round2.weight, 10 + 17);
    assert.ok(sameBits(round2.weights!, flatFedAvg(weights, [1, 0], 2)));
    await r.stop();
    assert.equal(await aRun, "done");
  } finally {
    subscription.unsubscribe();
    await spy.close();
    for (const site of sites) site.close();
  }
});
