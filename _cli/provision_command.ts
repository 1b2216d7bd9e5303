/**
 * The `provision` command of `cli.ts`: runs {@linkcode provision} and prints
 * what to do with the files: how the coordinator loads them, and each site's
 * connect line in Deno and Python.
 *
 * @module
 */

import { integerFlag, type Output, parseFlags, UsageError } from "../examples/command_line.ts";
import { PROGRAM } from "./probe.ts";
import {
  checkProvisionOptions,
  OPENSSL,
  provision,
  type ProvisionOptions,
  type ProvisionResult,
} from "./provision.ts";

export const PROVISION_USAGE =
  `Usage: ${PROGRAM} provision --sites A,B,C --out DIR [--host H]... [--port P] [--days N]
                          [--force] [--openssl PATH]

Makes what a secure job needs, with openssl (${OPENSSL}, run as a subprocess):
a private CA, a server certificate it signs (for 127.0.0.1, localhost and every
--host), and a random secret per site (32 bytes, hex). Writes into DIR:

  ca.pem, ca.key              the CA (the key: mode 0600; keep it offline once done)
  server.pem, server.key      the coordinator's certificate and key (0600)
  server.json, sites.json     what the coordinator loads (sites.json: the secrets, 0600)
  sites/NAME/secret, ca.pem   what to give site NAME (its secret: 0600)

then prints how the coordinator loads them and each site's connect line.

  --sites A,B,C   the sites' names (letters, digits, . _ -), comma-separated
  --out DIR       the directory to write (created with mode 0700 if missing)
  --host H        a name or address the sites use to reach the coordinator, for its
                  certificate (repeat, or comma-separate, for several)
  --port P        the coordinator's port, for server.json and the connect lines (default 7000)
  --days N        how long the certificates are valid (default 825)
  --force         replace the keys of a DIR that already holds some (refused otherwise)
  --openssl PATH  the openssl program (default ${OPENSSL})
  -h, --help      show this help`;

/** The options of {@linkcode provision} from the command line. */
function provisionOptions(args: string[]): ProvisionOptions {
  const { values } = parseFlags({
    args,
    options: {
      sites: { type: "string" },
      out: { type: "string" },
      host: { type: "string", multiple: true },
      port: { type: "string" },
      days: { type: "string" },
      force: { type: "boolean" },
      openssl: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.sites === undefined) throw new UsageError("Missing flag: --sites");
  if (values.out === undefined) throw new UsageError("Missing flag: --out");
  const list = (text: string) => text.split(",").map((s) => s.trim()).filter((s) => s !== "");
  const options: ProvisionOptions = {
    sites: list(values.sites),
    out: values.out,
    hosts: (values.host ?? []).flatMap(list),
    port: integerFlag("port", values.port, 7000, 1, 65_535),
    days: integerFlag("days", values.days, 825, 1, 36_500),
    force: values.force ?? false,
    openssl: values.openssl,
  };
  try {
    checkProvisionOptions(options);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  return options;
}

/**
 * The lines that tell the operator what to do with what {@linkcode provision} wrote.
 *
 * @param result What `provision` returned.
 * @param sites The sites' names.
 * @returns The lines to print.
 */
export function provisionReport(result: ProvisionResult, sites: readonly string[]): string[] {
  const dir = result.dir;
  const host = result.hosts.length > 2 ? result.hosts[2] : "127.0.0.1";
  const q = JSON.stringify;
  const lines = [
    `Provisioned ${sites.length} site${sites.length === 1 ? "" : "s"} in ${q(dir)}: ` +
    `certificate for ${result.hosts.join(", ")}`,
    "",
    "Coordinator (keep ca.key offline; server.key and sites.json stay on the coordinator):",
    `  import { listen } from "@fedcomm/fedcomm";`,
    `  import { loadProvisioned } from "@fedcomm/fedcomm/cli";`,
    `  await using server = listen({ ...(await loadProvisioned(${q(dir)})), ` +
    `hostname: "0.0.0.0", clients: ${sites.length} });`,
  ];
  for (const name of sites) {
    const folder = `${dir}/sites/${name}`;
    lines.push(
      "",
      `Site ${q(name)}: give it ${folder}/ (its secret and the CA); paths as on this machine:`,
      `  Deno:   await connect({ hostname: ${q(host)}, port: ${result.port}, name: ${q(name)}, ` +
        `secret: (await Deno.readTextFile(${q(`${folder}/secret`)})).trim(), ` +
        `tls: { caCerts: [await Deno.readTextFile(${q(`${folder}/ca.pem`)})] } })`,
      `  Python: fedcomm.connect(${q(host)}, ${result.port}, name=${q(name)}, ` +
        `secret=open(${q(`${folder}/secret`)}).read().strip(), tls=${q(`${folder}/ca.pem`)})`,
      `  Check:  ${PROGRAM} probe ${host}:${result.port} --tls-ca ${folder}/ca.pem --name ${name} ` +
        `--secret-file ${folder}/secret`,
    );
  }
  return lines;
}

/**
 * Runs `provision`.
 *
 * @param args The flags.
 * @param output Where to print.
 * @returns 0 once the files are written.
 */
export async function runProvision(args: string[], output: Output): Promise<number> {
  const options = provisionOptions(args);
  const result = await provision(options);
  for (const line of provisionReport(result, options.sites)) output.out(line);
  return 0;
}
