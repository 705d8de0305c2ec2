// shm-channels/socket.io's declarations work for a TypeScript application: createAdapter()'s
// result is accepted by socket.io's `adapter` option and io.adapter() (test/types/*.mts).
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

it('type-checks an application that passes createAdapter() to socket.io', () => {
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  const args = [
    '--noEmit',
    '--strict',
    '--target',
    'ES2022',
    '--module',
    'NodeNext',
    '--moduleResolution',
    'NodeNext',
    '--types',
    'node',
  ];
  const result = spawnSync(
    process.execPath,
    [tsc, ...args, join(root, 'test', 'types', 'socketio-consumer.mts')],
    { cwd: root, encoding: 'utf8' },
  );
  expect(result.stdout + result.stderr).toBe('');
  expect(result.status).toBe(0);
}, 60_000);
