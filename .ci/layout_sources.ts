/**
 * What `layout.ts` checks, read from the sources with the TypeScript compiler
 * API: each file's length, its static relative imports (`import type`
 * included), its functions (functions, methods, arrows, constructors and
 * accessors, nested ones on their own) and its classes with their fields.
 *
 * @module
 */

import process from "node:process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type TS from "typescript";

// --- The TypeScript compiler ----------------------------------------------------------------

// typescript.js reads a few variables (TSC_WATCHFILE, ...) from process.env as it loads, which
// Deno refuses without --allow-env: it gets an empty environment instead, so --allow-read is all
// this script needs. Hence a dynamic import, after the stub, rather than a static one.
Object.defineProperty(process, "env", { value: {}, configurable: true, writable: true });
const ts: typeof TS = (await import("typescript")).default;

export const ROOT = fileURLToPath(new URL("..", import.meta.url));

// --- Collecting -----------------------------------------------------------------------------

export type Import = { target: string; line: number; typeOnly: boolean };
export type Fn = { file: string; line: number; name: string; lines: number };
export type Klass = { file: string; line: number; name: string; fields: number };

export interface SourceInfo {
  file: string;
  lines: number;
  imports: Import[];
  functions: Fn[];
  classes: Klass[];
}

/**
 * The `.ts` files under `dir` (relative to the root, posix separators), sorted.
 *
 * @param skipDirs Folders not walked, relative to the root.
 * @param dir Where to start.
 * @returns The files.
 */
export async function walk(skipDirs: readonly string[], dir = ""): Promise<string[]> {
  const files: string[] = [];
  const entries: Deno.DirEntry[] = [];
  for await (const entry of Deno.readDir(path.join(ROOT, dir))) entries.push(entry);
  entries.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  for (const entry of entries) {
    const rel = dir === "" ? entry.name : `${dir}/${entry.name}`;
    if (entry.isSymlink) continue;
    if (entry.isDirectory && !skipDirs.includes(rel)) files.push(...await walk(skipDirs, rel));
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

/**
 * Reads and parses one file: its length, imports, functions and classes.
 *
 * @param file The file, relative to the root.
 * @returns What the rules look at, or `undefined` if it vanished meanwhile.
 */
export async function read(file: string): Promise<SourceInfo | undefined> {
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
