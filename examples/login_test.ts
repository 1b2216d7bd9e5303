import { deepEqual, equal, match, notEqual, rejects } from "node:assert/strict";
import { join } from "node:path";
import { connect, RejectedError } from "../mod.ts";
import { keygen, main, readUsers } from "./login.ts";
import { pathOf, runDeno, spawnDeno } from "./subprocess.ts";

const SCRIPT = pathOf("./login.ts", import.meta.url);

/** A temporary directory, removed with everything in it when disposed. */
async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "fedcomm_login_" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

Deno.test("keygen() writes a random secret per name, readable by its owner only", async () => {
  await using dir = await tempDir();
  const path = await keygen(dir.path, ["alice", "bob"]);
  const users = await readUsers(path);
  deepEqual(Object.keys(users), ["alice", "bob"]);
  match(users.alice, /^[0-9a-f]{64}$/);
  notEqual(users.alice, users.bob);
  equal((await Deno.readTextFile(join(dir.path, "bob.secret"))).trim(), users.bob);
  for (const file of ["users.json", "alice.secret", "bob.secret"]) {
    equal((await Deno.stat(join(dir.path, file))).mode! & 0o777, 0o600, file);
  }
  // Adding a user keeps the others' secrets.
  await keygen(dir.path, ["carol"]);
  const more = await readUsers(path);
  deepEqual([more.alice, more.bob], [users.alice, users.bob]);
  match(more.carol, /^[0-9a-f]{64}$/);
  await rejects(keygen(dir.path, ["../x"]), /^Error: Invalid name: "\.\.\/x"/);
});

Deno.test("examples/login.ts admits users who prove their secret and refuses the others", async () => {
  await using dir = await tempDir();
  const users = await keygen(dir.path, ["alice", "bob"]);
  const secret = (name: string) => join(dir.path, `${name}.secret`);
  await using server = spawnDeno(SCRIPT, ["server", "--port", "0", "--users", users]);
  const port = (await server.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1];

  await using alice = spawnDeno(SCRIPT, [
    "client",
    "--port",
    port,
    "--name",
    "alice",
    "--secret-file",
    secret("alice"),
  ]);
  await server.waitFor(/logged in: "alice" as client 0/);

  // bob's secret does not log in as alice: the client sees the server's proof fail.
  const impostor = await runDeno(SCRIPT, [
    "client",
    "--port",
    port,
    "--name",
    "alice",
    "--secret-file",
    secret("bob"),
  ]);
  equal(impostor.code, 1);
  equal(
    impostor.stderr,
    "error: Login failed: Server failed authentication: its proof does not match " +
      "(wrong secret, unknown name, or not the real server)\n",
  );
  // No secret at all: the server rejects the hello.
  await rejects(connect({ port: Number(port), name: "bob" }), (error) => {
    equal(error instanceof RejectedError && error.reason, "auth");
    return true;
  });

  const bob = await runDeno(SCRIPT, ["client", "--port", port, "--name", "bob"], {
    env: { FEDCOMM_SECRET: (await Deno.readTextFile(secret("bob"))).trim() },
  });
  equal(bob.code, 0, bob.stderr);
  equal(
    bob.stdout,
    'logged in as "bob": client 1 of 2, both sides proved the secret\n' +
      'server: {"welcome":"欢迎使用XX系统","login":"登陆成功","name":"bob"}\n',
  );
  const first = await alice.finish(20_000);
  equal(first.code, 0, first.stderr);
  match(
    first.stdout,
    /server: \{"welcome":"欢迎使用XX系统","login":"登陆成功","name":"alice"\}\n$/,
  );

  const served = await server.finish(20_000);
  equal(served.code, 0, served.stderr);
  // The wrong password: the client left after the server's proof, told as auth.
  match(
    served.stdout,
    /^refused from 127\.0\.0\.1:\d+ \("alice"\): auth: Authentication failed for "alice": the client left/m,
  );
  match(served.stdout, /^refused from 127\.0\.0\.1:\d+.*: auth: Authentication required/m);
  match(served.stdout, /logged in: "bob" as client 1\n/);
  match(served.stdout, /all users left\n$/);
});

Deno.test("examples/login.ts client needs a secret, and bad command lines exit with code 2", async () => {
  const noSecret = await runDeno(SCRIPT, ["client", "--port", "9", "--name", "alice"], {
    env: { FEDCOMM_SECRET: "" },
  });
  equal(noSecret.code, 2);
  equal(
    noSecret.stderr,
    "error: Missing secret: give --secret-file FILE or set FEDCOMM_SECRET\n" +
      'hint: run "deno run -A examples/login.ts --help"\n',
  );
  const cases: [string[], string][] = [
    [["server", "--port", "0", "--name", "x"], "error: Unknown flag for server: --name"],
    [["server", "--port", "0"], "error: Missing flag: --users"],
    [["client", "--port", "9"], "error: Missing flag: --name"],
    [["keygen", "--dir"], "error: Missing value for --dir"],
    [["login"], 'error: Unknown mode: "login" (expected keygen, server or client)'],
  ];
  for (const [args, line] of cases) {
    const stderr: string[] = [];
    equal(await main(args, { out: () => {}, err: (l) => stderr.push(l) }), 2, args.join(" "));
    deepEqual(stderr, [line, 'hint: run "deno run -A examples/login.ts --help"']);
  }
});
