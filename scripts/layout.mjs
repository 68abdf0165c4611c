#!/usr/bin/env node
/**
 * The shape of src/: the longest functions and the import cycles (type imports included: a cycle
 * of types is still two modules that cannot be read apart). `node scripts/layout.mjs` prints both;
 * test/unit/layout.test.ts holds the limits.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Every .ts file under src/, relative to the repository root. */
export function sourceFiles(dir = 'src') {
  return readdirSync(join(root, dir), { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return path.endsWith('.ts') && !path.endsWith('.d.ts') ? [path] : [];
  });
}

function parse(file) {
  return ts.createSourceFile(file, readFileSync(join(root, file), 'utf8'), ts.ScriptTarget.Latest, true);
}

/** Module specifiers a file imports or re-exports from, relative ones resolved to repository paths. */
export function importsOf(file) {
  const specifiers = [];
  parse(file).forEachChild((node) => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      const spec = node.moduleSpecifier.text;
      specifiers.push(spec.startsWith('.') ? relative(root, resolve(root, dirname(file), spec.replace(/\.js$/, '.ts'))) : spec);
    }
  });
  return specifiers;
}

/** Every function with its length in lines, longest first; a function is named by what holds it. */
export function functionLengths(files = sourceFiles()) {
  const found = [];
  for (const file of files) {
    const source = parse(file);
    const line = (pos) => source.getLineAndCharacterOfPosition(pos).line;
    const visit = (node, holder) => {
      if (ts.isFunctionDeclaration(node) || ts.isArrowFunction(node) || ts.isFunctionExpression(node) || ts.isMethodDeclaration(node)) {
        found.push({ file, name: node.name?.getText() ?? holder ?? '<anonymous>', lines: line(node.getEnd()) - line(node.getStart()) + 1 });
      }
      const name = ts.isVariableDeclaration(node) || ts.isPropertyAssignment(node) ? node.name.getText() : holder;
      node.forEachChild((child) => visit(child, name));
    };
    visit(source, undefined);
  }
  return found.sort((a, b) => b.lines - a.lines);
}

/** Every function with its parameter count, most first. */
export function functionParameters(files = sourceFiles()) {
  const found = [];
  for (const file of files) {
    const visit = (node, holder) => {
      if (ts.isFunctionDeclaration(node) || ts.isArrowFunction(node) || ts.isFunctionExpression(node) || ts.isMethodDeclaration(node)) {
        found.push({ file, name: node.name?.getText() ?? holder ?? '<anonymous>', parameters: node.parameters.length });
      }
      const name = ts.isVariableDeclaration(node) || ts.isPropertyAssignment(node) ? node.name.getText() : holder;
      node.forEachChild((child) => visit(child, name));
    };
    visit(parse(file), undefined);
  }
  return found.sort((a, b) => b.parameters - a.parameters);
}

const ASSIGNMENTS = new Set([ts.SyntaxKind.EqualsToken, ts.SyntaxKind.PlusEqualsToken, ts.SyntaxKind.MinusEqualsToken]);
const COUNTS = new Set([ts.SyntaxKind.PlusPlusToken, ts.SyntaxKind.MinusMinusToken]);

/**
 * Where a connection's membership state is changed, as "file: what": a write of `roomCount`, a
 * change of a session's `rooms`, or a socket's uWS subscribe/unsubscribe (sockets are named `ws`
 * throughout src/, which is what tells them from the broker's subscribe).
 */
export function membershipWrites(files = sourceFiles()) {
  const found = [];
  for (const file of files) {
    const visit = (node) => {
      const counted = (target) => ts.isPropertyAccessExpression(target) && target.name.text === 'roomCount';
      if (ts.isBinaryExpression(node) && ASSIGNMENTS.has(node.operatorToken.kind) && counted(node.left)) found.push(`${file}: roomCount`);
      if (ts.isBinaryExpression(node) && node.operatorToken.kind !== ts.SyntaxKind.EqualsEqualsEqualsToken && /\bsession\.rooms$/.test(node.left.getText()) && node.operatorToken.getText().endsWith('=') && !['===', '!=='].includes(node.operatorToken.getText())) found.push(`${file}: session.rooms =`);
      if ((ts.isPrefixUnaryExpression(node) || ts.isPostfixUnaryExpression(node)) && COUNTS.has(node.operator) && counted(node.operand)) found.push(`${file}: roomCount`);
      if (ts.isCallExpression(node) && ts.isPropertyAccessExpression(node.expression)) {
        const method = node.expression.name.text;
        const receiver = node.expression.expression.getText();
        if ((method === 'subscribe' || method === 'unsubscribe') && /\bws$/.test(receiver)) found.push(`${file}: ws.${method}`);
        if (['set', 'delete', 'clear'].includes(method) && /\bsession\.rooms\b/.test(receiver)) found.push(`${file}: session.rooms.${method}`);
      }
      node.forEachChild(visit);
    };
    visit(parse(file));
  }
  return [...new Set(found)].sort();
}

/** Import cycles among `files`, each as the list of files around it. */
export function importCycles(files = sourceFiles()) {
  const graph = new Map(files.map((file) => [file, importsOf(file).filter((spec) => spec.startsWith('src/'))]));
  const cycles = [];
  const state = new Map();
  const stack = [];
  const visit = (file) => {
    state.set(file, 'open');
    stack.push(file);
    for (const next of graph.get(file) ?? []) {
      if (state.get(next) === 'open') cycles.push([...stack.slice(stack.indexOf(next)), next]);
      else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(file, 'done');
  };
  for (const file of graph.keys()) if (!state.has(file)) visit(file);
  return cycles;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const { lines, file, name } of functionLengths().slice(0, 12)) console.log(`${String(lines).padStart(4)}  ${file} ${name}`);
  for (const { parameters, file, name } of functionParameters().slice(0, 5)) console.log(`${String(parameters).padStart(4)} parameters  ${file} ${name}`);
  console.log(`membership state written in: ${[...new Set(membershipWrites().map((w) => w.split(':')[0]))].join(', ')}`);
  const cycles = importCycles();
  console.log(`import cycles: ${cycles.length}`);
  for (const cycle of cycles) console.log(`  ${cycle.join(' -> ')}`);
}
