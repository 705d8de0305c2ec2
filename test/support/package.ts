// The package as users get it: the BUILT dist/ (run `npm run build:ts` first), loaded by Node
// itself (vitest.config.ts keeps dist/ out of Vite's transform). Tests import the public API from
// here and nowhere else; white-box tests add test/support/internal.ts.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export * from '../../dist/esm/index.mjs';

/** The repository root (where package.json is). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * Absolute paths of the built entry points, for child processes and worker threads (which cannot
 * resolve this module): `import { ShmChannelLayer } from ${JSON.stringify(PACKAGE_ESM)}` in an
 * ESM child, `require(PACKAGE_CJS)` in a CommonJS one. Both load the same classes this module does.
 */
export const PACKAGE_ESM = join(ROOT, 'dist', 'esm', 'index.mjs');
export const PACKAGE_CJS = join(ROOT, 'dist', 'cjs', 'index.js');
/** The `shm-channels` command, where package.json's `bin` puts it. */
export const CLI = join(
  ROOT,
  (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> })
    .bin['shm-channels']!,
);

if (!existsSync(PACKAGE_ESM) || !existsSync(PACKAGE_CJS)) {
  throw new Error(`${PACKAGE_ESM} is missing: run \`npm run build:ts\` first`);
}
