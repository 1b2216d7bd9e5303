/**
 * `fedcomm provision`: the files and their modes, then a real TLS server with the per-site
 * secrets it wrote, a site that connects with its secret (with the Deno and Python lines the
 * command prints), a wrong secret refused, and the refusals (existing keys, no openssl, bad
 * names).
 */

import assert from "node:assert/strict";
import { loadProvisioned, main, provision } from "../cli.ts";
import { AuthenticationError, connect, listen } from "../mod.ts";
import type { Output } from "../examples/command_line.ts";
import { pythonReady, runPython } from "./test_util.ts";

function capture(): Output & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: (l) => stdout.push(l), err: (l) => stderr.push(l) };
}

async function mode(path: string): Promise<string> {
  return ((await Deno.stat(path)).mode! & 0o777).toString(8);
}

function freePort(): number {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  return listener.addr.port;
}

const HAS_PYTHON = pythonReady("msgpack", "numpy");

Deno.test("main() provision writes the CA, the server certificate and per-site secrets; sites connect with them", async () => {
  const dir = await Deno.makeTempDir();
  const out = `${dir}/pki`;
  try {
    const port = freePort();
    const output = capture();
    const args = ["provision", "--sites", "site-a,site-b", "--out", out, "--port", String(port)];
    assert.equal(
      await main([...args, "--host", "coord.example.org"], output),
      0,
      output.stderr.join("\n"),
    );
    assert.match(output.stdout[0], /certificate for 127\.0\.0\.1, localhost, coord\.example\.org$/);

    const modes = Object.fromEntries(
      await Promise.all(
        [
          "ca.key",
          "ca.pem",
          "server.key",
          "server.pem",
          "server.json",
          "sites.json",
          "sites/site-a/secret",
          "sites/site-a/ca.pem",
          "sites/site-b/secret",
        ].map(async (f) => [f, await mode(`${out}/${f}`)]),
      ),
    );
    assert.deepStrictEqual(modes, {
      "ca.key": "600",
      "ca.pem": "644",
      "server.key": "600",
      "server.pem": "644",
      "server.json": "644",
      "sites.json": "600",
      "sites/site-a/secret": "600",
      "sites/site-a/ca.pem": "644",
      "sites/site-b/secret": "600",
    });
    assert.equal(await mode(out), "700");
    assert.deepStrictEqual([...Deno.readDirSync(out)].filter((e) => e.name.startsWith(".")), []);
    const secretA = (await Deno.readTextFile(`${out}/sites/site-a/secret`)).trim();
    assert.match(secretA, /^[0-9a-f]{64}$/);
    const secretB = (await Deno.readTextFile(`${out}/sites/site-b/secret`)).trim();
    assert.notEqual(secretA, secretB);

    const loaded = await loadProvisioned(out);
    assert.deepStrictEqual(loaded.auth.clients, { "site-a": secretA, "site-b": secretB });
    await using server = listen({ ...loaded, clients: 3, open: true });
    assert.equal(server.port, port);
    const ca = await Deno.readTextFile(`${out}/sites/site-a/ca.pem`);

    for (const hostname of ["127.0.0.1", "localhost"]) {
      await using site = await connect({
        hostname,
        port,
        name: "site-a",
        secret: secretA,
        tls: { caCerts: [ca] },
      });
      assert.equal(site.authenticated, true);
      assert.equal(server.stats(site.id).name, "site-a");
      await site.close();
    }
    await assert.rejects(
      connect({ port, name: "site-a", secret: secretB, tls: { caCerts: [ca] }, resume: false }),
      AuthenticationError,
    );

    // The printed Deno line, run as written in a script of its own.
    const denoLine = output.stdout.find((l) => l.startsWith("  Deno: ") && l.includes('"site-b"'))!
      .slice("  Deno:".length).trim().replace('"coord.example.org"', '"localhost"');
    const script = `${dir}/site.ts`;
    await Deno.writeTextFile(
      script,
      `import { connect } from ${JSON.stringify(new URL("../mod.ts", import.meta.url).href)};\n` +
        `const client = ${denoLine};\nconsole.log(client.authenticated);\nawait client.close();\n`,
    );
    const config = new URL("../deno.json", import.meta.url).pathname;
    const deno = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--config", config, script],
    }).output();
    assert.equal(
      new TextDecoder().decode(deno.stdout),
      "true\n",
      new TextDecoder().decode(deno.stderr),
    );

    if (HAS_PYTHON) {
      const pyLine = output.stdout.find((l) =>
        l.startsWith("  Python: ") && l.includes('"site-b"')
      )!
        .slice("  Python:".length).trim().replace('"coord.example.org"', '"localhost"');
      const printed = await runPython(
        `import sys; sys.path.insert(0, sys.argv[1]); import fedcomm\n` +
          `client = ${pyLine}\nprint(client.tls, client.name)\nclient.close()\n`,
        [],
      );
      assert.equal(new TextDecoder().decode(printed), "True site-b\n"); // the server requires auth
    } else {
      console.warn(
        "provision_test: the Python connect line is not run: no /usr/bin/python3 with msgpack",
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("provision() refuses to overwrite keys without force, and replaces them with it", async () => {
  const out = await Deno.makeTempDir();
  try {
    await provision({ sites: ["a"], out });
    const ca = await Deno.readTextFile(`${out}/ca.pem`);
    await assert.rejects(provision({ sites: ["a", "b"], out }), {
      name: "AlreadyExists",
      message: `Refusing to overwrite the keys in "${out}": "${out}/ca.key" exists ` +
        "(pass --force to replace the CA, the server key and every site's secret)",
    });
    assert.equal(await Deno.readTextFile(`${out}/ca.pem`), ca, "nothing changed");
    const output = capture();
    assert.equal(await main(["provision", "--sites", "a", "--out", out], output), 1);
    assert.match(output.stderr[0], /^error: Refusing to overwrite the keys in /);
    await provision({ sites: ["a", "b"], out, force: true });
    assert.notEqual(await Deno.readTextFile(`${out}/ca.pem`), ca);
    assert.deepStrictEqual(Object.keys(JSON.parse(await Deno.readTextFile(`${out}/sites.json`))), [
      "a",
      "b",
    ]);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("main() provision says when openssl is missing, and refuses bad names and flags", async () => {
  const out = await Deno.makeTempDir();
  try {
    const output = capture();
    const args = ["provision", "--sites", "a", "--out", `${out}/x`, "--openssl", `${out}/none`];
    assert.equal(await main(args, output), 1);
    assert.deepStrictEqual(output.stderr, [
      `error: openssl not found at "${out}/none": install it (apt-get install openssl) or pass --openssl PATH`,
    ]);
    assert.deepStrictEqual([...Deno.readDirSync(`${out}/x`)], [], "no key and no temporary left");
    const failing = capture();
    const falseArgs = ["provision", "--sites", "a", "--out", `${out}/x`, "--openssl", "/bin/false"];
    assert.equal(await main(falseArgs, failing), 1);
    assert.deepStrictEqual(failing.stderr, ["error: openssl genpkey failed (exit code 1): "]);
    assert.deepStrictEqual([...Deno.readDirSync(`${out}/x`)], [], "nothing left by a failure");
    const usage = async (flags: string[], line: string) => {
      const bad = capture();
      assert.equal(await main(["provision", ...flags], bad), 2);
      assert.deepStrictEqual(bad.stderr, [line, 'hint: run "fedcomm provision --help"']);
    };
    await usage(["--out", out], "error: Missing flag: --sites");
    await usage(["--sites", "a"], "error: Missing flag: --out");
    await usage(
      ["--sites", "a,../b", "--out", out],
      'error: Invalid site name: "../b" (1 to 128 of A-Z a-z 0-9 . _ -, starting with a letter or digit)',
    );
    await usage(["--sites", "a,a", "--out", out], 'error: Invalid sites: "a" is given twice');
    await usage(
      ["--sites", "a", "--out", out, "--host", "x y"],
      'error: Invalid host: "x y" is neither a DNS name nor an IP address',
    );
    const help = capture();
    assert.equal(await main(["provision", "--help"], help), 0);
    assert.match(help.stdout[0], /^Usage: fedcomm provision --sites A,B,C --out DIR/);
    assert.match(
      help.stdout.join("\n"),
      /with openssl \(\/usr\/bin\/openssl, run as a subprocess\)/,
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
