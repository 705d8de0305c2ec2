// Compiles lib/ to CommonJS in dist/cjs, then writes a thin ESM entry per entry point that
// re-exports it, so `import` and `require` share one copy of every class (instanceof ChannelFull
// works in both).
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
// From scratch: a module moved or removed in lib/ must not live on in dist/ (and in what tests load).
rmSync(join(root, 'dist'), { recursive: true, force: true });
execFileSync(
  process.execPath,
  [require.resolve('typescript/bin/tsc'), '-p', join(root, 'tsconfig.json')],
  {
    stdio: 'inherit',
  },
);
writeFileSync(join(root, 'dist/cjs/package.json'), '{ "type": "commonjs" }\n');
mkdirSync(join(root, 'dist/esm'), { recursive: true });
// Entry points: package.json `exports` subpath -> compiled CommonJS module (relative to dist/cjs).
const entries = [
  ['index', 'index.js'],
  ['socket.io', 'socket.io/index.js'], // needs the socket.io-adapter peer dependency when loaded
];
for (const [name, cjsPath] of entries) {
  const names = Object.keys(require(join(root, 'dist/cjs', cjsPath))).filter(
    (n) => n !== 'default',
  );
  writeFileSync(
    join(root, `dist/esm/${name}.mjs`),
    `import cjs from '../cjs/${cjsPath}';\nexport const { ${names.join(', ')} } = cjs;\nexport default cjs;\n`,
  );
  writeFileSync(join(root, `dist/esm/${name}.d.mts`), `export * from '../cjs/${cjsPath}';\n`);
}
