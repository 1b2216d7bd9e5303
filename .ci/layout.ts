/**
 * Checks the repository's layout rules on every `.ts` file under the repository root (but
 * {@link SKIP_DIRS}), parsed with the TypeScript compiler API: file length, function length
 * (functions, methods, arrows, constructors and accessors, from the declaration's first line to
 * its last, nested ones on their own), fields per class (property declarations, `#private` ones
 * and constructor parameter properties), import cycles (static relative `import` / `export from`,
 * `import type` included) and imports that point down: a file in a private folder (a top-level
 * folder named `_*`) imports no public root file but the {@link LEAVES}, and one in `LAYERS[i]`
 * imports only from `LAYERS[j]`, `j <= i`, and the leaves. Tests (`*_test.ts`) are checked only
 * for their length. Prints a report; exits 1 when a rule in {@link FAILING} is broken, else 0.
 *
 * Run: `deno task layout` (`deno run --allow-read .ci/layout.ts`).
 *
 * @module
 */

import process from "node:process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type TS from "typescript";

// --- Configuration --------------------------------------------------------------------------

/** Longest file allowed, in lines. */
const MAX_FILE_LINES = 450;
/** Longest function allowed, in lines from its declaration's first line to its last. */
const MAX_FUNCTION_LINES = 60;
/** Most fields a class may declare. */
const MAX_CLASS_FIELDS = 25;
/** Root-level public files that the private folders may import. */
const LEAVES = ["errors.ts", "types.ts", "tensor.ts", "events.ts"];
/** The private folders' layers, lowest first: a layer imports only from itself and below. */
const LAYERS = [
  "_util",
  "_wire",
  "_codec",
  "_link",
  "_session",
  "_handshake",
  "_server",
  "_client",
  "_cli",
];
/**
 * Private folders that sit above the public API: the command line is a user
 * of the library (and of the examples it runs), so it may import them.
 */
const ABOVE_API = ["_cli"];
/**
 * Folders whose files are not the library: the size rules are reported for
 * them, not failing (the benchmarks, the examples, this checker).
 */
const NOT_LIBRARY = ["bench", "examples", ".ci"];
/** Folders not walked, relative to the repository root. */
const SKIP_DIRS = ["node_modules", "bench/peers", ".git"];
/** Which files are tests: checked only for the line limit. */
const isTest = (file: string): boolean => file.endsWith("_test.ts");

type Rule =
  | "fileLines"
  | "functionLines"
  | "classFields"
  | "cycles"
  | "layers"
  | "testLines"
  | "toolSizes";

/** Which rules fail the run (exit 1); the others are only reported. */
const FAILING: Record<Rule, boolean> = {
  fileLines: true,
  functionLines: true,
  classFields: true,
  cycles: true,
  layers: true,
  testLines: false,
  toolSizes: false,
};

// --- The TypeScript compiler ----------------------------------------------------------------

// typescript.js reads a few variables (TSC_WATCHFILE, ...) from process.env as it loads, which
// Deno refuses without --allow-env: it gets an empty environment instead, so --allow-read is all
// this script needs. Hence a dynamic import, after the stub, rather than a static one.
Object.defineProperty(process, "env", { value: {}, configurable: true, writable: true });
const ts: typeof TS = (await import("typescript")).default;

const ROOT = fileURLToPath(new URL("..", import.meta.url));

// --- Collecting -----------------------------------------------------------------------------

type Import = { target: string; line: number; typeOnly: boolean };
type Fn = { file: string; line: number; name: string; lines: number };
type Klass = { file: string; line: number; name: string; fields: number };

interface SourceInfo {
  file: string;
  lines: number;
  imports: Import[];
  functions: Fn[];
  classes: Klass[];
}

/** The `.ts` files under `dir` (relative to the root, posix separators), sorted. */
async function walk(dir = ""): Promise<string[]> {
  const files: string[] = [];
  const entries: Deno.DirEntry[] = [];
  for await (const entry of Deno.readDir(path.join(ROOT, dir))) entries.push(entry);
  entries.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  for (const entry of entries) {
    const rel = dir === "" ? entry.name : `${dir}/${entry.name}`;
    if (entry.isSymlink) continue;
    if (entry.isDirectory && !SKIP_DIRS.includes(rel)) files.push(...await walk(rel));
    if (entry.isFile && rel.endsWith(".ts")) files.push(rel);
  }
  return files;
}

function countLines(text: string): number {
  if (text === "") return 0;
  const n = text.split("\n").length;
  return text.endsWith("\n") ? n - 1 : n;
}

function lineOf(source: TS.SourceFile, pos: number): number {
  return source.getLineAndCharacterOfPosition(pos).line + 1;
}

function propertyName(name: TS.PropertyName | TS.BindingName, source: TS.SourceFile): string {
  if (ts.isIdentifier(name) || ts.isPrivateIdentifier(name)) return name.text;
  if (ts.isStringLiteral(name) || ts.isNumericLiteral(name)) return name.text;
  return name.getText(source);
}

type FunctionNode = TS.FunctionLikeDeclaration & { body: TS.Node };

function isFunction(node: TS.Node): node is FunctionNode {
  const kind = ts.isFunctionDeclaration(node) || ts.isMethodDeclaration(node) ||
    ts.isArrowFunction(node) || ts.isFunctionExpression(node) ||
    ts.isConstructorDeclaration(node) ||
    ts.isGetAccessorDeclaration(node) || ts.isSetAccessorDeclaration(node);
  return kind && (node as TS.FunctionLikeDeclaration).body !== undefined;
}

/** A readable name for a function or a class: its own, or the one it is assigned to. */
function nameOf(node: FunctionNode | TS.ClassLikeDeclaration, source: TS.SourceFile): string {
  if (ts.isConstructorDeclaration(node)) return "constructor";
  const getter = ts.isGetAccessorDeclaration(node) ? "get " : "";
  const prefix = ts.isSetAccessorDeclaration(node) ? "set " : getter;
  if (node.name !== undefined) return prefix + propertyName(node.name, source);
  const parent = node.parent;
  if (
    ts.isVariableDeclaration(parent) || ts.isPropertyDeclaration(parent) ||
    ts.isPropertyAssignment(parent)
  ) {
    return propertyName(parent.name, source);
  }
  if (ts.isCallExpression(parent) || ts.isNewExpression(parent)) {
    const callee = parent.expression.getText(source).replace(/\s+/g, " ");
    return `<callback of ${callee.length > 40 ? callee.slice(0, 37) + "..." : callee}>`;
  }
  if (ts.isExportAssignment(parent)) return "default";
  return ts.isClassLike(node) ? "<anonymous class>" : "<anonymous>";
}

function countFields(node: TS.ClassLikeDeclaration): number {
  let fields = 0;
  for (const member of node.members) {
    if (ts.isPropertyDeclaration(member)) fields++;
    if (ts.isConstructorDeclaration(member)) {
      fields += member.parameters.filter((p) =>
        ts.isParameterPropertyDeclaration(p, member)
      ).length;
    }
  }
  return fields;
}

/** Every function and class of `source`, named after the classes and functions around them. */
function collectDeclarations(
  file: string,
  source: TS.SourceFile,
): Pick<SourceInfo, "functions" | "classes"> {
  const functions: Fn[] = [];
  const classes: Klass[] = [];
  const visit = (node: TS.Node, scope: string, sep: string): void => {
    const qualify = (name: string) => scope === "" ? name : scope + sep + name;
    if (ts.isClassLike(node)) {
      const name = qualify(nameOf(node, source));
      const line = lineOf(source, node.getStart(source));
      classes.push({ file, line, name, fields: countFields(node) });
      ts.forEachChild(node, (child) => visit(child, name, "."));
      return;
    }
    if (isFunction(node)) {
      const name = qualify(nameOf(node, source));
      const line = lineOf(source, node.getStart(source));
      const lines = lineOf(source, node.getEnd()) - line + 1;
      functions.push({ file, line, name, lines });
      ts.forEachChild(node, (child) => visit(child, name, " > "));
      return;
    }
    ts.forEachChild(node, (child) => visit(child, scope, sep));
  };
  visit(source, "", "");
  return { functions, classes };
}

function isTypeOnly(statement: TS.ImportDeclaration | TS.ExportDeclaration): boolean {
  if (ts.isExportDeclaration(statement)) {
    if (statement.isTypeOnly) return true;
    const clause = statement.exportClause;
    return clause !== undefined && ts.isNamedExports(clause) && clause.elements.length > 0 &&
      clause.elements.every((e) => e.isTypeOnly);
  }
  const clause = statement.importClause;
  if (clause === undefined) return false;
  if (clause.phaseModifier === ts.SyntaxKind.TypeKeyword) return true;
  const bindings = clause.namedBindings;
  return clause.name === undefined && bindings !== undefined && ts.isNamedImports(bindings) &&
    bindings.elements.length > 0 && bindings.elements.every((e) => e.isTypeOnly);
}

/** The static relative imports and re-exports of `source`, resolved against the root. */
function collectImports(file: string, source: TS.SourceFile): Import[] {
  const imports: Import[] = [];
  for (const statement of source.statements) {
    if (!ts.isImportDeclaration(statement) && !ts.isExportDeclaration(statement)) continue;
    const specifier = statement.moduleSpecifier;
    if (specifier === undefined || !ts.isStringLiteral(specifier)) continue;
    if (!specifier.text.startsWith("./") && !specifier.text.startsWith("../")) continue;
    const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), specifier.text));
    if (target.startsWith("../")) continue;
    const line = lineOf(source, statement.getStart(source));
    imports.push({ target, line, typeOnly: isTypeOnly(statement) });
  }
  return imports;
}

async function read(file: string): Promise<SourceInfo | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path.join(ROOT, file));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined; // moved while we walked
    throw error;
  }
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const declarations = collectDeclarations(file, source);
  return { file, lines: countLines(text), imports: collectImports(file, source), ...declarations };
}

// --- Checking -------------------------------------------------------------------------------

/** The import graph among `files`: for each file, the files it imports and whether only types. */
type Graph = Map<string, Map<string, { typeOnly: boolean }>>;

function buildGraph(files: SourceInfo[]): Graph {
  const names = new Set(files.map((f) => f.file));
  const graph: Graph = new Map(files.map((f) => [f.file, new Map()]));
  for (const { file, imports } of files) {
    const edges = graph.get(file)!;
    for (const { target, typeOnly } of imports) {
      if (!names.has(target)) continue;
      const previous = edges.get(target);
      edges.set(target, { typeOnly: typeOnly && (previous?.typeOnly ?? true) });
    }
  }
  return graph;
}

/** The strongly connected components of `graph` (Tarjan's algorithm). */
function components(graph: Graph): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const result: string[][] = [];
  const connect = (v: string): void => {
    index.set(v, index.size);
    low.set(v, index.get(v)!);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v)!.keys()) {
      if (!index.has(w)) {
        connect(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) !== index.get(v)) return;
    const component: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      component.push(w);
    } while (w !== v);
    result.push(component);
  };
  for (const v of graph.keys()) if (!index.has(v)) connect(v);
  return result;
}

/** The shortest path from `from` to `to` inside `within` (breadth first), both ends included. */
function shortestPath(graph: Graph, from: string, to: string, within: Set<string>): string[] {
  const previous = new Map<string, string | null>([[from, null]]);
  const queue = [from];
  while (queue.length > 0 && !previous.has(to)) {
    const v = queue.shift()!;
    for (const w of graph.get(v)!.keys()) {
      if (within.has(w) && !previous.has(w)) {
        previous.set(w, v);
        queue.push(w);
      }
    }
  }
  const chain: string[] = [];
  for (let v: string | null = to; v !== null; v = previous.get(v)!) chain.unshift(v);
  return chain;
}

/**
 * The import cycles, each as a chain of files that starts and ends with the same file: for every
 * import that lies on a cycle, the shortest cycle through it (so each such import shows once).
 */
function cycles(graph: Graph): string[][] {
  const found = new Map<string, string[]>();
  for (const component of components(graph)) {
    const within = new Set(component);
    for (const u of component) {
      for (const v of graph.get(u)!.keys()) {
        if (!within.has(v)) continue;
        // u -> v, then back from v to u; rotated to start at its smallest file.
        const loop = u === v ? [u] : shortestPath(graph, v, u, within);
        const start = loop.indexOf([...loop].sort()[0]);
        const chain = [...loop.slice(start), ...loop.slice(0, start)];
        found.set(chain.join(" "), [...chain, chain[0]]);
      }
    }
  }
  return [...found.values()].sort((a, b) => a.length - b.length || (a.join() < b.join() ? -1 : 1));
}

function formatCycle(graph: Graph, chain: string[]): string {
  let text = chain[0];
  for (let i = 1; i < chain.length; i++) {
    const edge = graph.get(chain[i - 1])!.get(chain[i])!;
    text += (edge.typeOnly ? " -type-> " : " -> ") + chain[i];
  }
  return text;
}

const topFolder = (file: string): string | undefined =>
  file.includes("/") ? file.slice(0, file.indexOf("/")) : undefined;

/** Why `file`'s import of `target` breaks rule 5, or undefined when it does not. */
function layerViolation(file: string, target: string): string | undefined {
  const from = topFolder(file);
  if (from === undefined || !from.startsWith("_")) return undefined;
  const to = topFolder(target);
  if (ABOVE_API.includes(from) && (to === undefined || !to.startsWith("_"))) return undefined;
  const layer = LAYERS.indexOf(from);
  if (to === undefined) {
    if (LEAVES.includes(target)) return undefined;
    if (!target.startsWith("_")) return `imports the public root file ${target} (not a leaf)`;
    if (layer < 0) return undefined;
    return `imports the root-level file ${target}, which is neither a leaf nor in a layer`;
  }
  if (to === from || layer < 0) return undefined;
  const targetLayer = LAYERS.indexOf(to);
  if (targetLayer < 0) return `imports ${target}: ${to}/ is not in LAYERS`;
  if (targetLayer <= layer) return undefined;
  return `imports ${target} from a higher layer (${from} is layer ${layer}, ${to} is ${targetLayer})`;
}

// --- Reporting ------------------------------------------------------------------------------

const long = (files: SourceInfo[]) =>
  files.filter((s) => s.lines > MAX_FILE_LINES).sort((a, b) => b.lines - a.lines)
    .map((s) => `${s.file}: ${s.lines} lines`);

type Section = { rule: Rule; title: string; entries: string[] };

function check(all: SourceInfo[], tests: SourceInfo[], graph: Graph): Section[] {
  const isTool = (s: SourceInfo) => NOT_LIBRARY.includes(topFolder(s.file) ?? "");
  const sources = all.filter((s) => !isTool(s));
  const tools = all.filter(isTool);
  const functions = sources.flatMap((s) => s.functions).filter((f) => f.lines > MAX_FUNCTION_LINES);
  const classes = sources.flatMap((s) => s.classes).filter((c) => c.fields > MAX_CLASS_FIELDS);
  const toolSizes = [
    ...long(tools),
    ...tools.flatMap((s) => s.functions).filter((f) => f.lines > MAX_FUNCTION_LINES)
      .map((f) => `${f.file}:${f.line} ${f.name}: ${f.lines} lines`),
  ];
  const layers = all.flatMap(({ file, imports }) =>
    imports.flatMap(({ target, line }) => {
      const why = layerViolation(file, target);
      return why === undefined ? [] : [`${file}:${line} ${why}`];
    })
  );
  return [
    { rule: "fileLines", title: `files over ${MAX_FILE_LINES} lines`, entries: long(sources) },
    {
      rule: "functionLines",
      title: `functions over ${MAX_FUNCTION_LINES} lines`,
      entries: functions.sort((a, b) => b.lines - a.lines)
        .map((f) => `${f.file}:${f.line} ${f.name}: ${f.lines} lines`),
    },
    {
      rule: "classFields",
      title: `classes over ${MAX_CLASS_FIELDS} fields`,
      entries: classes.sort((a, b) => b.fields - a.fields)
        .map((c) => `${c.file}:${c.line} ${c.name}: ${c.fields} fields`),
    },
    {
      rule: "cycles",
      title: "import cycles (-type-> : only `import type` there)",
      entries: cycles(graph).map((chain) => formatCycle(graph, chain)),
    },
    { rule: "layers", title: "imports that do not point down", entries: layers },
    {
      rule: "toolSizes",
      title: `bench/, examples/ and .ci/ over the size limits`,
      entries: toolSizes,
    },
    {
      rule: "testLines",
      title: `tests over the limit (${MAX_FILE_LINES} lines)`,
      entries: long(tests),
    },
  ];
}

const largest = <T>(items: T[], size: (item: T) => number): T | undefined =>
  items.reduce<T | undefined>((best, x) => best && size(best) >= size(x) ? best : x, undefined);

function summary(problems: number, sources: SourceInfo[]): string {
  const file = largest(sources, (s) => s.lines);
  const fn = largest(sources.flatMap((s) => s.functions), (f) => f.lines);
  const klass = largest(sources.flatMap((s) => s.classes), (c) => c.fields);
  const figures = [
    `${sources.length} files`,
    file ? `largest file ${file.lines} lines (${file.file})` : "no file",
    fn ? `longest function ${fn.lines} lines (${fn.file}:${fn.line} ${fn.name})` : "no function",
    klass ? `most fields ${klass.fields} (${klass.name}, ${klass.file}:${klass.line})` : "no class",
  ];
  return `layout: ${problems} problem${problems === 1 ? "" : "s"} (${figures.join(", ")})`;
}

async function main(): Promise<number> {
  const all = (await Promise.all((await walk()).map(read))).filter((s) => s !== undefined);
  const sources = all.filter((s) => !isTest(s.file));
  const tests = all.filter((s) => isTest(s.file));
  const sections = check(sources, tests, buildGraph(sources));
  console.log(`layout rules: ${sources.length} source files and ${tests.length} test files\n`);
  let problems = 0;
  for (const { rule, title, entries } of sections) {
    const note = FAILING[rule] ? "" : ", reported, not failing";
    console.log(`${title}: ${entries.length === 0 ? "none" : `${entries.length}${note}`}`);
    for (const entry of entries) console.log(`  ${entry}`);
    if (FAILING[rule]) problems += entries.length;
  }
  const folders = new Set(sources.map((s) => topFolder(s.file)).filter((f) => f?.startsWith("_")));
  const unlayered = [...folders].filter((f) => !LAYERS.includes(f!));
  if (unlayered.length > 0) {
    console.log(`\nnote: private folders not in LAYERS: ${unlayered.join(", ")}`);
  }
  const library = sources.filter((s) => !NOT_LIBRARY.includes(topFolder(s.file) ?? ""));
  console.log(`\n${summary(problems, library)}`);
  return problems > 0 ? 1 : 0;
}

Deno.exit(await main());
