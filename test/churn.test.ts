// Long-running servers (issue 14): connection churn must leave nothing behind in the shared
// segment. Each test uses a small segment, so a leak of one record per connection fills the
// table within the test instead of after a day of traffic.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { CLI, type ShmChannelLayer, type ShmChannelLayerOptions } from './support/package.js';
import { outputOf, shmLayers, startWorker } from './support/fixtures.js';

const shm = shmLayers('churn');

const small = (): ShmChannelLayerOptions => ({
  name: shm.name(),
  size: 1024 * 1024,
  maxMessageSize: 1024,
  maxChannels: 64,
  maxGroups: 8,
  maxMembers: 64,
  maxNodes: 256,
});

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * A client connecting to a server: its own channel in 'room' and a receive on it, registered in
 * the segment when this resolves. `receiving` resolves with the message or the error's name.
 */
async function connect(server: ShmChannelLayer): Promise<{
  channel: string;
  controller: AbortController;
  receiving: Promise<unknown>;
}> {
  const channel = await server.newChannel();
  await server.groupAdd('room', channel);
  const controller = new AbortController();
  const receiving = server
    .receive(channel, { signal: controller.signal })
    .catch((e: Error) => e.name);
  await tick(); // the receive registered its wait in the segment
  return { channel, controller, receiving };
}

describe('connection churn on ShmChannelLayer', () => {
  // The issue's reproduction: one newChannel() per client, groupAdd on join, a receive loop ended
  // by an AbortSignal, groupDiscard on leave. It used to fail at connection maxChannels + 1 with
  // ETABLEFULL: every aborted receive left its waiter bit, and with it the channel record.
  it('connect, join, abort the receive, leave: repeated 5x past maxChannels, no record is left', async () => {
    const options = small();
    const server = shm.open(options);
    const other = shm.open(options);
    for (let connection = 0; connection < 5 * 64; connection++) {
      const { channel, controller, receiving } = await connect(server);
      if (connection % 8 === 0) await other.groupSend('room', { type: 'chat', connection });
      if (connection % 8 === 0) expect(await receiving).toEqual({ type: 'chat', connection });
      // Half the clients leave before their receive is cancelled, half after.
      const leaveFirst = connection % 2 === 1;
      if (leaveFirst) await server.groupDiscard('room', channel);
      controller.abort();
      if (connection % 8 !== 0) expect(await receiving).toBe('AbortError');
      if (!leaveFirst) await server.groupDiscard('room', channel);
    }
    await tick();
    const stats = other.stats();
    expect({
      channels: stats.channels,
      members: stats.members,
      groups: stats.groups,
      queued: stats.queued,
    }).toEqual({
      channels: 0,
      members: 0,
      groups: 0,
      queued: 0,
    });
    expect(stats.arenaUsedBytes).toBe(0);
    expect(server.verify()).toEqual([]);
  });

  it('leaving before the receive is cancelled frees the record too', async () => {
    const options = small();
    const server = shm.open(options);
    for (let connection = 0; connection < 3 * 64; connection++) {
      const { channel, controller, receiving } = await connect(server);
      await server.groupDiscard('room', channel);
      controller.abort();
      expect(await receiving).toBe('AbortError');
    }
    await tick();
    expect(server.stats().channels).toBe(0);
  });

  // The review's case (finding 4): 100 receives with AbortSignal.timeout on distinct channels of a
  // 64-record table used to end with 36 ETABLEFULL rejections, and another process's send failed.
  it('100 timed-out receives on a 64-record table: all time out, nothing is left, another process can send', async () => {
    const options = small();
    const layer = shm.open(options);
    const outcomes: Record<string, number> = {};
    for (let round = 0; round < 4; round++) {
      const receives = [];
      for (let i = 0; i < 25; i++) {
        receives.push(
          layer.receive(`rpc.reply-${round}-${i}`, { signal: AbortSignal.timeout(2) }).then(
            () => 'message',
            (e: Error & { code?: string }) => `${e.name}${e.code ? `:${e.code}` : ''}`,
          ),
        );
      }
      for (const outcome of await Promise.all(receives))
        outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
    }
    expect(outcomes).toEqual({ AbortError: 100 });
    await tick();
    expect(layer.stats().channels).toBe(0);
    const child = await outputOf(startWorker('churn-sender.mjs', [options.name!]));
    expect(child.output.trim()).toBe('sent 60');
    expect(child.code).toBe(0);
  });

  it('a receive that got its message leaves nothing; a new receive on an abandoned channel still works', async () => {
    const options = small();
    const layer = shm.open(options);
    const other = shm.open(options);
    const controller = new AbortController();
    const first = layer
      .receive('reuse.ch', { signal: controller.signal })
      .catch((e: Error) => e.name);
    await tick();
    controller.abort();
    // A new receive in the same turn as the abort: the batched withdrawal must not cancel it.
    const second = layer.receive('reuse.ch');
    expect(await first).toBe('AbortError');
    await tick();
    await other.send('reuse.ch', { n: 1 });
    expect(await second).toEqual({ n: 1 });
    await tick();
    expect(other.stats().channels).toBe(0);
  });
});

// Issue 14: a killed process's '!' channel accepted sends until it was full, and nothing counted
// the deliveries groupSend skipped.
describe('deliveries not made are counted', () => {
  it("a send to a '!' channel of a process that is gone is dropped and counted, never queued", async () => {
    const options = { ...small(), capacity: 5 };
    const server = shm.open(options);
    const child = await outputOf(startWorker('member-then-exit.mjs', [options.name!]));
    expect(child.code).toBe(0);
    const inbox = child.output.trim();
    // The next instance to attach reclaims the dead slot (housekeeping does so every 2 s too).
    const observer = shm.open(options);
    for (let i = 0; i < 20; i++) await server.send(inbox, { i });
    expect(await server.groupSend('room', { type: 'fan' })).toBe(0);
    const stats = observer.stats();
    expect({
      queued: stats.queued,
      channels: stats.channels,
      orphaned: stats.messagesOrphaned,
    }).toEqual({
      queued: 0,
      channels: 0,
      orphaned: 20,
    });
  });

  it('stats() and the CLI show members skipped as full and sends refused as full', async () => {
    const options = { ...small(), capacity: 1 };
    const layer = shm.open(options);
    await layer.groupAdd('room', 'member.a');
    await layer.groupAdd('room', 'member.b');
    await layer.send('member.a', { fills: true });
    expect(await layer.groupSend('room', { n: 1 })).toBe(1);
    expect(await layer.groupSend('room', { n: 2 })).toBe(0);
    await expect(layer.send('member.b', { n: 3 })).rejects.toThrow(/full/);
    const stats = layer.stats();
    expect({ skipped: stats.deliveriesSkippedFull, refused: stats.sendsRefusedFull }).toEqual({
      skipped: 3,
      refused: 1,
    });
    const cli = spawnSync(process.execPath, [CLI, 'stats', options.name!], {
      encoding: 'utf8',
    });
    expect(cli.status).toBe(0);
    expect(cli.stdout).toContain(
      'not delivered: group members full 3, sends refused (channel full) 1',
    );
  });
});

// Review finding 10: the native wake callback and the housekeeping timer held the layer, so a
// layer dropped without close() kept its slot (one of 256 per segment), its doorbell (then a waiter
// thread and a semaphore; now the FIFO's read end, polled by the event loop) until the process
// exited: 0 of 20 were collected.
describe('a layer dropped without close()', () => {
  it('is collected and gives back its slot and doorbell', async () => {
    const name = shm.name();
    const child = await outputOf(
      startWorker('dropped-layers.mjs', [name], {}, { flags: ['--expose-gc'] }),
    );
    expect(child.code, child.output).toBe(0);
    const { before, dropped, after } = JSON.parse(child.output.trim()) as Record<
      string,
      { processes: number; doorbells: number }
    >;
    expect(dropped!.processes).toBe(before!.processes + 20); // the layers were really open
    expect(dropped!.doorbells).toBeGreaterThanOrEqual(before!.doorbells + 20);
    expect(after).toEqual(before);
  });

  it('is kept while a receive waits on it, and that receive still gets its message', async () => {
    const name = shm.name();
    const child = await outputOf(
      startWorker('dropped-receiving-layer.mjs', [name], {}, { flags: ['--expose-gc'] }),
    );
    // The receiving layer is never closed: the process exits because, once its receive is
    // done, an idle layer does not keep it alive.
    expect({ code: child.code, output: child.output.trim() }).toEqual({ code: 0, output: 'late' });
  });
});
