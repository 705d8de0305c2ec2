// layer.lockHoldStats(): how long this process held the segment lock, per kind of operation,
// counted by the core around every critical section. Real segments, a real second process.
import { expect, it } from 'vitest';
import { runWorker, shmLayers } from './support/fixtures.js';
import { type LockHoldStats } from './support/package.js';

const shm = shmLayers('lockhold', {
  size: 8 << 20,
  maxChannels: 64,
  maxNodes: 1024,
  capacity: 100,
});

function checkConsistent(stats: LockHoldStats): void {
  for (const [kind, op] of Object.entries(stats)) {
    const inBuckets = op.buckets.reduce((sum, [, n]) => sum + n, 0);
    expect(inBuckets, kind).toBe(op.count);
    if (op.count === 0) continue;
    expect(op.p50Ns, kind).toBeLessThanOrEqual(op.p99Ns);
    expect(op.p99Ns, kind).toBeLessThanOrEqual(op.maxNs);
    expect(op.totalNs, kind).toBeGreaterThanOrEqual(op.maxNs);
    expect(op.maxNs, kind).toBeGreaterThan(0);
  }
}

it('counts every critical section under its own kind, per process, and resets on request', async () => {
  const name = shm.name();
  const receiver = shm.open({ name });
  const before = receiver.lockHoldStats();
  expect(before.other.count).toBeGreaterThanOrEqual(1); // attaching took the lock
  expect(before.send.count).toBe(0);

  // Another process sends 7 messages and one groupSend, and reports its own figures.
  await receiver.groupAdd('lockhold.group', 'lockhold.q');
  const child = runWorker('lock-hold-sender.mjs', [name], {}, { timeout: 30_000 });
  expect(child.stderr).toBe('');
  const sender = JSON.parse(child.stdout) as LockHoldStats;
  checkConsistent(sender);
  expect(sender.send.count).toBe(7);
  expect(sender.groupSend.count).toBe(1);
  expect(sender.receive.count).toBe(0);

  for (let i = 0; i < 8; i++) expect((await receiver.receive('lockhold.q')).i).toBe(i);
  await receiver.groupDiscard('lockhold.group', 'lockhold.q');
  await receiver.flush();
  const mine = receiver.lockHoldStats({ reset: true });
  checkConsistent(mine);
  // The sends were the other process's: none here.
  expect(mine.send.count).toBe(0);
  expect(mine.groupSend.count).toBe(0);
  expect(mine.receive.count).toBeGreaterThanOrEqual(1);
  expect(mine.receive.count).toBeLessThanOrEqual(8);
  expect(mine.groupAdd.count).toBe(1);
  expect(mine.groupDiscard.count).toBe(1);
  expect(mine.flush.count).toBe(1);
  expect(mine.receiveAny.count).toBe(0);
  expect(mine.recover.count).toBe(0);

  const after = receiver.lockHoldStats();
  expect(after.receive.count + after.groupAdd.count + after.flush.count).toBe(0);
  await receiver.send('lockhold.q', { type: 'm' });
  expect(receiver.lockHoldStats().send.count).toBe(1);
});

it('counts receiveAny under its own kind', async () => {
  const name = shm.name();
  const layer = shm.open({ name });
  await layer.send('lockhold.a', { type: 'm', from: 'a' });
  await layer.send('lockhold.b', { type: 'm', from: 'b' });
  const got = await layer.receiveAny(['lockhold.a', 'lockhold.b']);
  expect(['a', 'b']).toContain(got?.message.from);
  const stats = layer.lockHoldStats();
  checkConsistent(stats);
  expect(stats.send.count).toBe(2);
  expect(stats.receiveAny.count).toBeGreaterThanOrEqual(1);
});
