// The JavaScript and TypeScript driver of code-interpreter-v1 (one node process per context, started by
// kernel_node.py). Cells come as JSON lines on stdin and run one after another in one `vm` context, so what a
// cell declares is there for the next. Each cell is rewritten with TypeScript's parser (Debian's node-typescript)
// into the body of an async function, as Node's REPL and E2B's Deno kernel allow: top-level `await`, `import`
// (becomes `await import()`), declarations kept as globals (`const x = 1` → `x = 1`, so a later cell may declare
// `x` again), and the last expression's value returned as the cell's result. TypeScript is transpiled first.
// Output: console.* to stdout/stderr (the user's); the result and the end of each cell as JSON lines on the
// control pipe (fd SOULBOX_CONTROL_FD).
'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');
const util = require('util');
const vm = require('vm');
const { builtinModules, createRequire } = require('module');
const { pathToFileURL } = require('url');
const ts = require('typescript');

const CONTROL_FD = Number(process.env.SOULBOX_CONTROL_FD);
const LANGUAGE = process.env.SOULBOX_NODE_LANGUAGE || 'javascript';

function control(message) {
  fs.writeSync(CONTROL_FD, JSON.stringify(message) + '\n');
}

// Modules resolve from the context's working directory (its node_modules), then Node's global paths.
const userRequire = createRequire(path.join(process.cwd(), '[cell]'));

async function userImport(specifier) {
  if (specifier.startsWith('node:') || builtinModules.includes(specifier)) {
    return import(specifier);
  }
  let resolved;
  try {
    resolved = userRequire.resolve(specifier);
  } catch (_) {
    return import(specifier);
  }
  return import(pathToFileURL(resolved).href);
}

const context = vm.createContext({ require: userRequire, __sbx_import: userImport, module: { exports: {} } });
const contextGlobal = vm.runInContext('globalThis', context);
// Node's globals (process, Buffer, timers, fetch, URL, ...) beside the context's own built-ins.
for (const name of Object.getOwnPropertyNames(globalThis)) {
  if (!(name in contextGlobal)) {
    Object.defineProperty(contextGlobal, name, Object.getOwnPropertyDescriptor(globalThis, name));
  }
}
contextGlobal.console = console;
contextGlobal.exports = contextGlobal.module.exports;

function importAssignments(statement, sf) {
  const from = statement.moduleSpecifier.getText(sf);
  const clause = statement.importClause;
  if (!clause) {
    return `await __sbx_import(${from});`;
  }
  const parts = [`const __sbx_m = await __sbx_import(${from});`];
  if (clause.name) {
    parts.push(`${clause.name.text} = __sbx_m.default;`);
  }
  const bindings = clause.namedBindings;
  if (bindings && ts.isNamespaceImport(bindings)) {
    parts.push(`${bindings.name.text} = __sbx_m;`);
  } else if (bindings) {
    for (const element of bindings.elements) {
      const imported = (element.propertyName || element.name).text;
      parts.push(`${element.name.text} = __sbx_m[${JSON.stringify(imported)}];`);
    }
  }
  return `{ ${parts.join(' ')} }`;
}

function declarationAssignments(statement, sf) {
  return statement.declarationList.declarations
    .map((d) => `(${d.name.getText(sf)} = ${d.initializer ? d.initializer.getText(sf) : 'undefined'});`)
    .join(' ');
}

/** The cell as the body of an async function (see the top of the file). */
function rewrite(code) {
  if (LANGUAGE === 'typescript') {
    const options = { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext };
    code = ts.transpileModule(code, { compilerOptions: options, reportDiagnostics: false }).outputText;
  }
  const sf = ts.createSourceFile('cell.js', code, ts.ScriptTarget.Latest, true, ts.ScriptKind.JS);
  const hoisted = [];
  const body = [];
  sf.statements.forEach((statement, i) => {
    const text = code.slice(statement.getStart(sf), statement.end);
    const last = i === sf.statements.length - 1;
    if (ts.isImportDeclaration(statement)) {
      body.push(importAssignments(statement, sf));
    } else if (ts.isVariableStatement(statement)) {
      body.push(declarationAssignments(statement, sf));
    } else if (ts.isFunctionDeclaration(statement) && statement.name) {
      hoisted.push(`${statement.name.text} = ${text};`);
    } else if (ts.isClassDeclaration(statement) && statement.name) {
      body.push(`${statement.name.text} = ${text};`);
    } else if (ts.isExportDeclaration(statement) || ts.isExportAssignment(statement)) {
      // a module's exports mean nothing in a notebook cell
    } else if (last && ts.isExpressionStatement(statement)) {
      body.push(`return (${code.slice(statement.expression.getStart(sf), statement.expression.end)});`);
    } else {
      body.push(text);
    }
  });
  // Every statement ends with `;`: a line of the user's without one must not run into a rewritten `(x = …)`.
  return `(async () => {\n${hoisted.join('\n')}\n${body.map((s) => s + ';').join('\n')}\n})()`;
}

let interruptCell = null;
process.on('SIGINT', () => {
  if (interruptCell) {
    interruptCell();
  }
});
// A promise nobody awaited, or a timer's callback, fails after its cell ended: say so, keep the context.
process.on('unhandledRejection', (reason) => console.error('Unhandled promise rejection:', reason));
process.on('uncaughtException', (err) => console.error('Uncaught exception:', err));

function errorOf(err) {
  if (err !== null && typeof err === 'object' && 'message' in err) {
    // The driver's own frames (vm, the queue) say nothing about the user's code.
    const stack = String(err.stack || err)
      .split('\n')
      .filter((line) => !/^\s+at /.test(line) || /\bcell:/.test(line))
      .join('\n');
    return { ename: String(err.name || 'Error'), evalue: String(err.message), traceback: [stack] };
  }
  return { ename: 'Error', evalue: util.inspect(err), traceback: [] };
}

// Rich results, as E2B's Deno kernel gives them: a value with a `Symbol.for('Jupyter.display')` method shows as
// the MIME bundle that method returns (Deno's display protocol); PNG/JPEG/GIF bytes show as the image; anything
// else as text. `display(value)` shows a value beside the cell's result (a display_data, like IPython's
// display()); `display.html`, `.markdown`, `.svg`, `.json`, `.latex` (plain calls or tagged templates) and
// `display.mime(bundle)` make such values.
const DISPLAY = Symbol.for('Jupyter.display');
const IMAGE_MAGIC = [
  ['image/png', [0x89, 0x50, 0x4e, 0x47]],
  ['image/jpeg', [0xff, 0xd8, 0xff]],
  ['image/gif', [0x47, 0x49, 0x46, 0x38]],
];

function displayable(bundle) {
  return { [DISPLAY]: () => bundle };
}

function templateText(strings, values) {
  return Array.isArray(strings) && strings.raw ? String.raw(strings, ...values) : String(strings);
}

async function bundleOf(value) {
  if (value !== null && (typeof value === 'object' || typeof value === 'function') && typeof value[DISPLAY] === 'function') {
    const bundle = await value[DISPLAY]();
    if (bundle !== null && typeof bundle === 'object') {
      const data = {};
      for (const [mime, content] of Object.entries(bundle)) {
        // JSON is the one MIME type the SDKs take as an object; every other one is a string.
        data[mime] = mime === 'application/json' || typeof content === 'string' ? content : String(content);
      }
      try {
        JSON.stringify(data); // a circular or BigInt JSON value cannot travel: show the value as text instead
        return data;
      } catch (_) {
        // fall through
      }
    }
  }
  if (value instanceof Uint8Array) {
    for (const [mime, magic] of IMAGE_MAGIC) {
      if (magic.every((byte, i) => value[i] === byte)) {
        return { [mime]: Buffer.from(value).toString('base64'), 'text/plain': `<${mime} ${value.length} bytes>` };
      }
    }
  }
  // A string is shown as itself (as the service shows Python's), anything else as Node's REPL shows it.
  return { 'text/plain': typeof value === 'string' ? value : util.inspect(value, { depth: 4 }) };
}

// Displays are sent in the order they were asked for; one the cell did not await still belongs to it (the cell
// ends only once every display is sent).
let displays = Promise.resolve();
function display(value) {
  const sent = displays.then(() => bundleOf(value)).then((data) => control({ type: 'display', data }));
  displays = sent.catch(() => {});
  return sent;
}
display.mime = (bundle) => displayable(bundle);
display.html = (strings, ...values) => displayable({ 'text/html': templateText(strings, values) });
display.markdown = (strings, ...values) => displayable({ 'text/markdown': templateText(strings, values) });
display.svg = (strings, ...values) => displayable({ 'image/svg+xml': templateText(strings, values) });
display.latex = (strings, ...values) => displayable({ 'text/latex': templateText(strings, values) });
display.json = (value) => displayable({ 'application/json': value, 'text/plain': util.inspect(value, { depth: 4 }) });
contextGlobal.display = display;

async function run(code) {
  try {
    const interrupted = new Promise((_, reject) => {
      interruptCell = () => reject(Object.assign(new Error('the execution was interrupted'), { name: 'Interrupted' }));
    });
    const script = new vm.Script(rewrite(code), { filename: 'cell' });
    const value = await Promise.race([script.runInContext(context, { breakOnSigint: true }), interrupted]);
    await displays;
    if (value !== undefined) {
      control({ type: 'result', data: await bundleOf(value) });
    }
    control({ type: 'done', status: 'ok' });
  } catch (err) {
    control({ type: 'done', status: 'error', ...errorOf(err) });
  } finally {
    interruptCell = null;
  }
}

let queue = Promise.resolve();
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const cell = JSON.parse(line);
  queue = queue.then(() => run(cell.code));
});
