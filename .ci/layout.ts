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

import { read, type SourceInfo, walk } from "./layout_sources.ts";

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
  "_fl",
  "_nats",
  "_cli",
];
/**
 * Private folders that sit above the public API: the federated-learning layer
 * (`fl.ts`), the NATS layer (`nats.ts`) and the command line are users of the
 * library (the command line also of the examples it runs), so they may import
 * its public files.
 */
const ABOVE_API = ["_fl", "_nats", "_cli"];
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
  const all = (await Promise.all((await walk(SKIP_DIRS)).map(read))).filter((s) => s !== undefined);
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
