import ts from 'typescript';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, dirname, resolve, relative } from 'node:path';
const root = 'src';
const files = [];
const walk = (d) => { for (const f of readdirSync(d)) { const p = join(d, f); if (statSync(p).isDirectory()) walk(p); else if (p.endsWith('.ts') && !p.endsWith('.d.ts')) files.push(p); } };
walk(root);
const fns = []; const graph = new Map();
for (const file of files) {
  const text = readFileSync(file, 'utf8');
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const deps = [];
  sf.forEachChild((n) => { if ((ts.isImportDeclaration(n) || ts.isExportDeclaration(n)) && n.moduleSpecifier) { const s = n.moduleSpecifier.text; if (s.startsWith('.')) deps.push(relative('.', resolve(dirname(file), s.replace(/\.js$/, '.ts')))); } });
  graph.set(file, deps);
  const visit = (n, name) => {
    if (ts.isFunctionDeclaration(n) || ts.isArrowFunction(n) || ts.isFunctionExpression(n) || ts.isMethodDeclaration(n)) {
      const a = sf.getLineAndCharacterOfPosition(n.getStart()).line, b = sf.getLineAndCharacterOfPosition(n.getEnd()).line;
      const nm = n.name?.getText() ?? name ?? '<anon>';
      fns.push({ file, name: nm, lines: b - a + 1 });
    }
    let nextName = name;
    if (ts.isVariableDeclaration(n) || ts.isPropertyAssignment(n)) nextName = n.name.getText();
    n.forEachChild((c) => visit(c, nextName));
  };
  visit(sf);
}
fns.sort((x, y) => y.lines - x.lines);
console.log(fns.slice(0, 12).map((f) => `${f.lines}\t${f.file} ${f.name}`).join('\n'));
// cycles (value imports)
const cycles = []; const state = new Map(); const stack = [];
const dfs = (f) => { state.set(f, 1); stack.push(f); for (const d of graph.get(f) ?? []) { if (state.get(d) === 1) cycles.push(stack.slice(stack.indexOf(d)).concat(d).join(' -> ')); else if (!state.has(d)) dfs(d); } stack.pop(); state.set(f, 2); };
for (const f of graph.keys()) if (!state.has(f)) dfs(f);
console.log('cycles (value imports):', cycles.length, cycles);
