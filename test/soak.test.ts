// The short version of `npm run soak` (issue 14): connection churn across processes with group
// traffic leaves the segment's tables and arena empty and the processes' JS heap and private RSS
// flat; every delivery is received or counted as dropped.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { haveRedisServer } from './support/redis-server.js';

const script = join(dirname(fileURLToPath(import.meta.url)), 'soak', 'soak.mjs');

it('30,000 connection cycles in 2 processes: tables end empty, heap and RSS flat, deliveries accounted for', () => {
  const run = spawnSync(
    process.execPath,
    [script, '--cycles', '30000', '--processes', '2', '--json'],
    {
      encoding: 'utf8',
      timeout: 90_000,
    },
  );
  const result = JSON.parse(run.stdout.trim().split('\n').at(-1)!);
  console.log(`soak: ${JSON.stringify(result)}`);
  expect(result.problems.join('\n'), JSON.stringify(result)).toBe('');
  expect(result.cycles).toBeGreaterThanOrEqual(30000);
  expect(result.end).toEqual({ channels: 0, members: 0, groups: 0, queued: 0, arenaUsedBytes: 0 });
  expect(result.deliveries).toBeGreaterThan(30000); // real traffic reached the receive loops
  expect(result.received).toBeGreaterThan(result.deliveries / 2);
  expect(run.status).toBe(0);
}, 120_000);

it.skipIf(!haveRedisServer())(
  'the same churn on RedisChannelLayer: keys end at zero, per-process maps bounded, heap flat',
  () => {
    const run = spawnSync(
      process.execPath,
      [script, '--cycles', '10000', '--processes', '2', '--redis', '--json'],
      {
        encoding: 'utf8',
        timeout: 90_000,
      },
    );
    const result = JSON.parse(run.stdout.trim().split('\n').at(-1)!);
    console.log(`soak (redis): ${JSON.stringify(result)}`);
    expect(result.problems.join('\n'), JSON.stringify(result)).toBe('');
    expect(result.cycles).toBeGreaterThanOrEqual(10000);
    expect(result.end.channels).toBe(0); // Redis keys
    expect(result.mapsPeak.pollers).toBeLessThanOrEqual(2);
    expect(result.received).toBeGreaterThan(result.deliveries / 2);
    expect(run.status).toBe(0);
  },
  120_000,
);
