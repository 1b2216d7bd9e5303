/**
 * README "Using fedcomm today": a user's project that maps `@fedcomm/fedcomm`, `…/fl` and
 * `@msgpack/msgpack` with the README's import map runs the README's script, from a checkout
 * (`../fedcomm` beside the project), from a tarball of the repository's files unpacked there, and
 * from those files without their `deno.json` (where only the map says what `@msgpack/msgpack` is).
 */

import assert from "node:assert/strict";
import { type Finished, runDeno } from "../examples/subprocess.ts";

const ROOT = new URL("../", import.meta.url).pathname.replace(/\/$/, "");
const SECTION = "## Using fedcomm today (from a checkout or a tarball)";

/** The README section's first code block of `lang` (its list indentation removed). */
function block(section: string, lang: string): string {
  const match = new RegExp("^( *)```" + lang + "\\n([\\s\\S]*?)^\\1```$", "m").exec(section);
  assert.ok(match, `README's section has a ${lang} block`);
  const indent = match[1].length;
  return match[2].split("\n").map((line) => line.slice(indent)).join("\n");
}

async function readme(): Promise<{ map: string; script: string }> {
  const text = await Deno.readTextFile(`${ROOT}/README.md`);
  const start = text.indexOf(SECTION);
  assert.ok(start >= 0, "README has the section");
  const section = text.slice(start, text.indexOf("\n## ", start + SECTION.length));
  return { map: block(section, "json"), script: block(section, "ts") };
}

/** Makes `app/` in `dir` with the README's map and script, and runs the script there. */
async function runApp(dir: string): Promise<Finished> {
  const { map, script } = await readme();
  await Deno.mkdir(`${dir}/app`);
  await Deno.writeTextFile(`${dir}/app/deno.json`, map);
  await Deno.writeTextFile(`${dir}/app/main.ts`, script);
  return await runDeno("main.ts", [], {
    cwd: `${dir}/app`,
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
  }, 120_000);
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

async function inTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "fedcomm-user-" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("README import map runs the README script against a checkout beside the project", async () => {
  await inTempDir(async (dir) => {
    await Deno.symlink(ROOT, `${dir}/fedcomm`);
    const run = await runApp(dir);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "fedcomm works from the checkout\n");
  });
});

Deno.test("README import map runs the README script against an unpacked tarball", async () => {
  await inTempDir(async (dir) => {
    // What `git archive HEAD` packs once the working tree is committed: the tracked files and
    // the new ones that are not ignored (so that this also tests uncommitted work).
    const files = await new Deno.Command("git", {
      args: ["ls-files", "-z", "--cached", "--others", "--exclude-standard"],
      cwd: ROOT,
      stdin: "null",
    }).output();
    assert.equal(files.code, 0, new TextDecoder().decode(files.stderr));
    const present = new TextDecoder().decode(files.stdout).split("\0")
      .filter((f) => f !== "" && exists(`${ROOT}/${f}`)); // deleted files are still listed
    await Deno.writeTextFile(`${dir}/files`, present.join("\0"));
    const pack = await new Deno.Command("tar", {
      args: [
        "-czf",
        `${dir}/fedcomm.tar.gz`,
        "--null",
        "-T",
        `${dir}/files`,
        "--transform",
        "s,^,fedcomm/,",
      ],
      cwd: ROOT,
      stdin: "null",
    }).output();
    assert.equal(pack.code, 0, new TextDecoder().decode(pack.stderr));
    const unpack = await new Deno.Command("tar", {
      args: ["-xzf", "fedcomm.tar.gz"],
      cwd: dir,
      stdin: "null",
    }).output();
    assert.equal(unpack.code, 0, new TextDecoder().decode(unpack.stderr));
    assert.ok((await Deno.stat(`${dir}/fedcomm/fl.ts`)).isFile);
    const run = await runApp(dir);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "fedcomm works from the checkout\n");
    // Without the library's deno.json (files copied by hand), @msgpack/msgpack comes from the map.
    await Deno.remove(`${dir}/fedcomm/deno.json`);
    await Deno.remove(`${dir}/app`, { recursive: true });
    const bare = await runApp(dir);
    assert.equal(bare.code, 0, bare.stderr);
    assert.equal(bare.stdout, "fedcomm works from the checkout\n");
  });
});
