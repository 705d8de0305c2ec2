// Compiles lib/ to CommonJS in dist/cjs, then writes a thin ESM entry that re-exports it, so
// `import` and `require` share one copy of every class (instanceof ChannelFull works in both).
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', join(root, 'tsconfig.json')], {
  stdio: 'inherit',
});
writeFileSync(join(root, 'dist/cjs/package.json'), '{ "type": "commonjs" }\n');
const names = Object.keys(require(join(root, 'dist/cjs/index.js'))).filter((n) => n !== 'default');
mkdirSync(join(root, 'dist/esm'), { recursive: true });
writeFileSync(
  join(root, 'dist/esm/index.mjs'),
  `import cjs from '../cjs/index.js';\nexport const { ${names.join(', ')} } = cjs;\nexport default cjs;\n`,
);
writeFileSync(join(root, 'dist/esm/index.d.mts'), `export * from '../cjs/index.js';\n`);
