// The short version of `npm run chaos`: a few seconds of processes killed at random instants and
// at fault points inside critical sections, with delivery accounting and a lost-wakeup watchdog.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const script = join(dirname(fileURLToPath(import.meta.url)), 'chaos', 'chaos.mjs');

it('survives random kills: nothing committed is lost or doubled, no wakeup lost, memory back to baseline', () => {
  const run = spawnSync(process.execPath, [script, '--seconds', '8', '--json'], {
    encoding: 'utf8',
    timeout: 90_000,
  });
  const result = JSON.parse(run.stdout.trim().split('\n').at(-1)!);
  console.log(`chaos: ${JSON.stringify(result)}`);
  expect(result.problems).toEqual([]);
  expect(result.kills.total).toBeGreaterThan(10);
  expect(result.messagesCommitted).toBeGreaterThan(1000);
  expect(result.lockRecoveries).toBeGreaterThan(0);
  expect(run.status).toBe(0);
}, 120_000);
