/**
 * Provisioning for a secure job: a private CA, a server certificate it
 * signs, and one random secret per site, written to a directory that the
 * coordinator loads ({@linkcode loadProvisioned}) and from which each site
 * gets its own folder (its secret and the CA certificate). The keys and
 * certificates are made by `openssl` (`/usr/bin/openssl` by default), run
 * with `Deno.Command`.
 *
 * Layout of the directory:
 *
 * | file | mode | what |
 * | --- | --- | --- |
 * | `ca.pem`, `ca.key` | 0644, 0600 | the CA (P-256); keep the key offline once done |
 * | `server.pem`, `server.key` | 0644, 0600 | the server certificate (SAN 127.0.0.1, localhost and the hosts given) and its key |
 * | `server.json` | 0644 | what the coordinator loads: the port, the hosts, the file names |
 * | `sites.json` | 0600 | every site's secret by name: `listen({ auth: { clients } })` |
 * | `sites/<name>/secret`, `sites/<name>/ca.pem` | 0600, 0644 | what to give each site |
 *
 * @module
 */

import type { AuthOptions, TlsOptions } from "../mod.ts";

/** What {@linkcode provision} is given. */
export interface ProvisionOptions {
  /** The sites' names: 1 to 128 characters of `A-Z a-z 0-9 . _ -`, starting with a letter or digit. */
  readonly sites: readonly string[];
  /** The directory to write (created, mode 0700, if missing). */
  readonly out: string;
  /** More names for the server certificate (DNS names or IP addresses) besides 127.0.0.1 and localhost. */
  readonly hosts?: readonly string[];
  /** The port the coordinator will listen on, written to `server.json` (default 7000). */
  readonly port?: number;
  /** How many days the certificates are valid (default 825). */
  readonly days?: number;
  /** Replace the keys of a directory that already holds some (default false). */
  readonly force?: boolean;
  /** The openssl program (default `/usr/bin/openssl`). */
  readonly openssl?: string;
}

/** What {@linkcode provision} wrote. */
export interface ProvisionResult {
  /** The directory. */
  readonly dir: string;
  /** The names the server certificate carries. */
  readonly hosts: readonly string[];
  /** The port written to `server.json`. */
  readonly port: number;
  /** The files written, relative to `dir`. */
  readonly files: readonly string[];
}

/** What {@linkcode loadProvisioned} returns: options to spread into `listen()`. */
export interface ProvisionedServer {
  /** The port from `server.json`. */
  readonly port: number;
  /** The server certificate and key. */
  readonly tls: TlsOptions;
  /** Every site's secret by name. */
  readonly auth: AuthOptions & { readonly clients: Readonly<Record<string, string>> };
}

/** The default openssl. */
export const OPENSSL = "/usr/bin/openssl";

const SITE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const DNS_NAME =
  /^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IPV6 = /^[0-9A-Fa-f:.]+$/;
/** The files that hold keys: their presence makes {@linkcode provision} refuse without `force`. */
const KEY_FILES = ["ca.key", "server.key", "sites.json", "sites"];

/** The subjectAltName entry of a host: `IP:…` or `DNS:…`. */
function altName(host: string): string {
  if (IPV4.test(host) || (host.includes(":") && IPV6.test(host))) return `IP:${host}`;
  if (DNS_NAME.test(host) && host.length <= 253) return `DNS:${host}`;
  throw new TypeError(`Invalid host: "${host}" is neither a DNS name nor an IP address`);
}

/**
 * Checks the sites and hosts.
 *
 * @param options What {@linkcode provision} is given.
 * @returns The hosts for the certificate, defaults first, each once.
 * @throws {TypeError} For an invalid or repeated site name, or an invalid host.
 * @throws {RangeError} For no sites, or an invalid port or number of days.
 */
export function checkProvisionOptions(options: ProvisionOptions): string[] {
  if (options.sites.length === 0) throw new RangeError("Invalid sites: none given");
  const seen = new Set<string>();
  for (const name of options.sites) {
    if (!SITE_NAME.test(name)) {
      throw new TypeError(
        `Invalid site name: "${name}" (1 to 128 of A-Z a-z 0-9 . _ -, starting with a letter or digit)`,
      );
    }
    if (seen.has(name)) throw new TypeError(`Invalid sites: "${name}" is given twice`);
    seen.add(name);
  }
  const port = options.port ?? 7000;
  if (!Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new RangeError(`Invalid port: "${port}" is not an integer from 1 to 65535`);
  }
  const days = options.days ?? 825;
  if (!Number.isInteger(days) || days < 1 || days > 36_500) {
    throw new RangeError(`Invalid days: "${days}" is not an integer from 1 to 36500`);
  }
  const hosts = [...new Set(["127.0.0.1", "localhost", ...(options.hosts ?? [])])];
  hosts.forEach(altName);
  return hosts;
}

/** Runs openssl in `cwd`; its stderr in the error when it fails. */
async function openssl(program: string, cwd: string, args: string[]): Promise<void> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(program, {
      args,
      cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    })
      .output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Deno.errors.NotFound(
        `openssl not found at "${program}": install it (apt-get install openssl) or pass --openssl PATH`,
      );
    }
    throw error;
  }
  if (!output.success) {
    const detail = new TextDecoder().decode(output.stderr).trim().split("\n").slice(0, 3).join(
      "; ",
    );
    throw new Error(`openssl ${args[0]} failed (exit code ${output.code}): ${detail}`);
  }
}

/** Throws when `out` already holds keys, unless `force`. */
async function checkFree(out: string, force: boolean): Promise<void> {
  if (force) return;
  for (const name of KEY_FILES) {
    const path = `${out}/${name}`;
    const exists = await Deno.lstat(path).then(() => true, (e) => {
      if (e instanceof Deno.errors.NotFound) return false;
      throw e;
    });
    if (exists) {
      throw new Deno.errors.AlreadyExists(
        `Refusing to overwrite the keys in "${out}": "${path}" exists ` +
          "(pass --force to replace the CA, the server key and every site's secret)",
      );
    }
  }
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Writes openssl's configuration files for the CA and the server certificate into `work`. */
async function writeConfigs(work: string, hosts: readonly string[]): Promise<void> {
  const when = new Date().toISOString().slice(0, 19).replace("T", " ");
  await Deno.writeTextFile(
    `${work}/ca.cnf`,
    `[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = ext\n` +
      `[dn]\nCN = fedcomm CA ${when} UTC\n` +
      `[ext]\nbasicConstraints = critical,CA:TRUE,pathlen:0\n` +
      `keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n`,
  );
  await Deno.writeTextFile(
    `${work}/server.cnf`,
    `[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = ${hosts.at(-1)}\n`,
  );
  await Deno.writeTextFile(
    `${work}/server.ext`,
    `basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n` +
      `extendedKeyUsage = serverAuth\nsubjectKeyIdentifier = hash\n` +
      `authorityKeyIdentifier = keyid\nsubjectAltName = ${hosts.map(altName).join(",")}\n`,
  );
}

/** Makes the CA and the server certificate in `work` (P-256 keys, SHA-256 signatures). */
async function makeCertificates(
  program: string,
  work: string,
  hosts: readonly string[],
  days: number,
): Promise<void> {
  await writeConfigs(work, hosts);
  const run = (...args: string[]) => openssl(program, work, args);
  const ec = ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"];
  const valid = ["-days", String(days), "-sha256"];
  await run(...ec, "ca.key");
  await run(
    "req",
    "-x509",
    "-new",
    "-config",
    "ca.cnf",
    "-key",
    "ca.key",
    ...valid,
    "-out",
    "ca.pem",
  );
  await run(...ec, "server.key");
  await run("req", "-new", "-config", "server.cnf", "-key", "server.key", "-out", "server.csr");
  // A positive serial of 127 random bits (RFC 5280: at most 20 bytes, not negative).
  const serial = `0x${hex(crypto.getRandomValues(new Uint8Array(16))).replace(/^[89a-f]/, "7")}`;
  const ca = ["-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", serial, "-extfile", "server.ext"];
  await run("x509", "-req", "-in", "server.csr", ...ca, ...valid, "-out", "server.pem");
}

/** Writes `text` at `path` with `mode`, whatever the umask. */
async function writeFile(path: string, text: string, mode: number): Promise<void> {
  await Deno.writeTextFile(path, text, { mode });
  await Deno.chmod(path, mode);
}

/** Moves the files made in `work` into `out`, each with its mode; the paths, relative to `out`. */
async function install(
  work: string,
  out: string,
  sites: readonly string[],
  secrets: Readonly<Record<string, string>>,
  serverJson: string,
): Promise<string[]> {
  const files: [string, number][] = [
    ["ca.pem", 0o644],
    ["ca.key", 0o600],
    ["server.pem", 0o644],
    ["server.key", 0o600],
  ];
  await writeFile(`${work}/sites.json`, `${JSON.stringify(secrets, null, 2)}\n`, 0o600);
  await writeFile(`${work}/server.json`, serverJson, 0o644);
  files.push(["sites.json", 0o600], ["server.json", 0o644]);
  const ca = await Deno.readTextFile(`${work}/ca.pem`);
  for (const name of sites) {
    await Deno.mkdir(`${work}/sites/${name}`, { recursive: true, mode: 0o700 });
    await writeFile(`${work}/sites/${name}/secret`, `${secrets[name]}\n`, 0o600);
    await writeFile(`${work}/sites/${name}/ca.pem`, ca, 0o644);
    files.push([`sites/${name}/secret`, 0o600], [`sites/${name}/ca.pem`, 0o644]);
  }
  for (const [file, mode] of files) {
    await Deno.chmod(`${work}/${file}`, mode);
    const dir = file.includes("/") ? `${out}/${file.slice(0, file.lastIndexOf("/"))}` : out;
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    await Deno.rename(`${work}/${file}`, `${out}/${file}`);
  }
  return files.map(([file]) => file);
}

/**
 * Makes a CA, a server certificate and a secret per site in `out` (see the
 * module's table): everything is made in a temporary folder inside `out`
 * first, so a failure leaves `out` as it was.
 *
 * @param options The sites, the directory, the hosts, the port, `force`, the openssl program.
 * @returns The directory, the certificate's names, the port and the files written.
 * @throws {TypeError} For an invalid site name or host.
 * @throws {RangeError} For no sites, or an invalid port or number of days.
 * @throws {Deno.errors.AlreadyExists} If `out` holds keys and `force` is not set.
 * @throws {Deno.errors.NotFound} If openssl is missing.
 * @throws {Error} If openssl fails (with its message).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { provision } from "@fedcomm/fedcomm/cli";
 *
 * const out = await Deno.makeTempDir();
 * const result = await provision({ sites: ["site-a", "site-b"], out });
 * assert.ok(result.files.includes("sites/site-a/secret"));
 * assert.equal((await Deno.stat(`${out}/ca.key`)).mode! & 0o777, 0o600);
 * await assert.rejects(provision({ sites: ["site-a"], out }), Deno.errors.AlreadyExists);
 * await Deno.remove(out, { recursive: true });
 * ```
 */
export async function provision(options: ProvisionOptions): Promise<ProvisionResult> {
  const hosts = checkProvisionOptions(options);
  const port = options.port ?? 7000;
  const out = options.out;
  await Deno.mkdir(out, { recursive: true, mode: 0o700 });
  await checkFree(out, options.force ?? false);
  const work = await Deno.makeTempDir({ dir: out, prefix: ".provision-" });
  try {
    await makeCertificates(options.openssl ?? OPENSSL, work, hosts, options.days ?? 825);
    const secrets = Object.fromEntries(
      options.sites.map((name) => [name, hex(crypto.getRandomValues(new Uint8Array(32)))]),
    );
    const serverJson = JSON.stringify(
      { port, hosts, tls: { cert: "server.pem", key: "server.key" }, sites: "sites.json" },
      null,
      2,
    );
    const files = await install(work, out, options.sites, secrets, `${serverJson}\n`);
    return { dir: out, hosts, port, files };
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

function field(value: unknown, name: string, file: string): string {
  if (typeof value !== "string" || value === "") {
    throw new TypeError(`Invalid ${file}: "${name}" is not a file name`);
  }
  return value;
}

/**
 * Loads what {@linkcode provision} wrote, as options for `listen()`: the
 * port, the server certificate and key, and every site's secret by name.
 *
 * @param dir The directory `provision` wrote.
 * @returns `{ port, tls, auth }`, to spread into `listen({ ... })`.
 * @throws {Deno.errors.NotFound} If `server.json` or a file it names is missing.
 * @throws {TypeError} If `server.json` or `sites.json` is not as `provision` writes it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { listen } from "@fedcomm/fedcomm";
 * import { loadProvisioned, provision } from "@fedcomm/fedcomm/cli";
 *
 * const out = await Deno.makeTempDir();
 * await provision({ sites: ["site-a"], out });
 * const options = await loadProvisioned(out);
 * assert.deepStrictEqual(Object.keys(options.auth.clients), ["site-a"]);
 * await using server = listen({ ...options, port: 0, clients: 1 });
 * assert.ok(server.port > 0);
 * await Deno.remove(out, { recursive: true });
 * ```
 */
export async function loadProvisioned(dir: string): Promise<ProvisionedServer> {
  const config = JSON.parse(await Deno.readTextFile(`${dir}/server.json`));
  if (typeof config !== "object" || config === null || !Number.isInteger(config.port)) {
    throw new TypeError(`Invalid server.json in "${dir}": no integer "port"`);
  }
  const cert = await Deno.readTextFile(
    `${dir}/${field(config.tls?.cert, "tls.cert", "server.json")}`,
  );
  const key = await Deno.readTextFile(`${dir}/${field(config.tls?.key, "tls.key", "server.json")}`);
  const clients = JSON.parse(
    await Deno.readTextFile(`${dir}/${field(config.sites, "sites", "server.json")}`),
  );
  if (typeof clients !== "object" || clients === null || Array.isArray(clients)) {
    throw new TypeError(`Invalid sites.json in "${dir}": it is not an object of secrets by name`);
  }
  for (const [name, secret] of Object.entries(clients)) {
    if (typeof secret !== "string") {
      throw new TypeError(
        `Invalid sites.json in "${dir}": the secret of "${name}" is not a string`,
      );
    }
  }
  return { port: config.port, tls: { cert, key }, auth: { clients } };
}
