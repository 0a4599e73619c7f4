/**
 * `node -r test/support/transpile-hook.js some.ts`: runs the project's TypeScript in a child
 * process without a build, for tests that spawn real worker processes. Each .ts file is
 * transpiled when required (the project compiles with isolatedModules, so file by file is
 * exact); types are not checked here — `npm run typecheck` does that.
 */
const { readFileSync } = require('node:fs');
const ts = require('typescript');

const compilerOptions = {
  module: ts.ModuleKind.CommonJS,
  target: ts.ScriptTarget.ES2022,
  experimentalDecorators: true,
  emitDecoratorMetadata: true,
  esModuleInterop: true,
  sourceMap: false,
};

require.extensions['.ts'] = (module, filename) => {
  const { outputText } = ts.transpileModule(readFileSync(filename, 'utf8'), { compilerOptions, fileName: filename });
  module._compile(outputText, filename);
};
