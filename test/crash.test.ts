// Crash safety and hostile conditions of the shared-memory layer, with real processes that die
// inside critical sections (test-only fault points: SHMCH_FAULT_POINT=N makes a process SIGKILL
// itself at native fault point N while it holds the segment lock).
import {
  chmodSync,
  chownSync,
  closeSync,
  openSync,
  readSync,
  rmSync,
  statfsSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runModule, shmLayers, spawnModule } from './support/fixtures.js';
import { ChannelFull, PACKAGE_ESM, SegmentFull, ShmChannelLayer } from './support/package.js';

const uid = process.getuid!();
const shm = shmLayers('crash');

async function drain(layer: ShmChannelLayer, channel: string): Promise<unknown[]> {
  const out: unknown[] = [];
  for (;;) {
    try {
      out.push(await layer.receive(channel, { signal: AbortSignal.timeout(150) }));
    } catch (error) {
      if ((error as Error).name === 'AbortError' || (error as Error).name === 'TimeoutError')
        return out;
      throw error;
    }
  }
}

async function waitFor(check: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('owner death inside a critical section', () => {
  // 1: send, node written but not linked; 2: send, linked but tail/count not updated;
  // 3: receive, payload copied but head not advanced.
  for (const point of [1, 2, 3]) {
    it(`fault point ${point}: survivors continue at once, nothing committed is lost or doubled`, async () => {
      const name = shm.name();
      const layer = shm.open({ name });
      for (let i = 0; i < 20; i++) await layer.send('work', { i });
      const child = runModule(
        `const l = new ShmChannelLayer({ name: '${name}' });
         await l.send('work', { i: 'child' });
         await l.receive('work');
         console.log('fault point not reached');`,
        { SHMCH_FAULT_POINT: String(point) },
      );
      expect(child.signal).toBe('SIGKILL');

      const started = Date.now();
      await layer.send('work', { i: 'after' });
      expect(Date.now() - started).toBeLessThan(1000);
      expect(layer.verify()).toEqual([]);

      const got = (await drain(layer, 'work')) as Array<{ i: number | string }>;
      const numbers = got.map((m) => m.i).filter((i) => typeof i === 'number');
      // Every message committed before the kill arrives exactly once, in order.
      expect(numbers).toEqual([...Array(20).keys()]);
      expect(got.at(-1)!.i).toBe('after');
      // The dying sender's own message is there iff its link was published (point 2 and 3).
      expect(got.filter((m) => m.i === 'child').length).toBe(point === 1 ? 0 : 1);
      expect(layer.stats().lockRecoveries).toBeGreaterThanOrEqual(1);
      expect(layer.verify()).toEqual([]);
    });
  }
});

describe('owner death inside receiveAny', () => {
  it('fault point 21 (receiveAny: copied out, waits registered, nothing popped): nothing is lost or doubled, order holds', async () => {
    const name = shm.name();
    const layer = shm.open({ name });
    const channels = ['any.a', 'any.b', 'any.c'];
    for (let i = 0; i < 30; i++) await layer.send(channels[i % 3]!, { i });
    const child = runModule(
      `const l = new ShmChannelLayer({ name: '${name}' });
       await l.receiveAny(${JSON.stringify(channels)});
       console.log('fault point not reached');`,
      { SHMCH_FAULT_POINT: '21' },
    );
    expect(child.signal).toBe('SIGKILL');
    const started = Date.now();
    await layer.send('any.a', { i: 'after' });
    expect(Date.now() - started).toBeLessThan(1000);
    expect(layer.verify()).toEqual([]);
    // Every message is still there, once, and the oldest still comes first.
    const got: unknown[] = [];
    for (let i = 0; i < 31; i++)
      got.push((await layer.receiveAny(channels, { signal: AbortSignal.timeout(2000) }))!.message);
    expect(got).toEqual([...[...Array(30).keys()].map((i) => ({ i })), { i: 'after' }]);
    expect(await layer.receiveAny(channels, { wait: false })).toBeNull();
    expect(layer.stats().lockRecoveries).toBeGreaterThanOrEqual(1);
    expect(layer.verify()).toEqual([]);
  });
});

describe('owner death inside a receive while its other receive loops hold messages', () => {
  // A process with several receive loops: a receive that takes its message in its own call
  // (instead of through a drain) must not run while another loop's message sits in a settled
  // promise its await has not reached yet, or a death inside that call loses the other loop's
  // message. Each loop reports a message at once (synchronous write) when its await returns;
  // what the dead process reported plus what is left must be everything, once. The skips move
  // the death over the first calls, where the loops' receives interleave.
  const cases = [
    { point: '3', kind: 'receive', take: 'l.receive(c)', id: 'got.id' },
    {
      point: '21',
      kind: 'receiveAny',
      take: "l.receiveAny([c, c + '.other'])",
      id: 'got.message.id',
    },
  ];
  for (const { point, kind, take, id } of cases) {
    it(`fault point ${point} (${kind}, three loops): what was not reported is still queued`, async () => {
      const channels = ['loops.a', 'loops.b', 'loops.c'];
      for (let skip = 0; skip < 6; skip++) {
        const name = shm.name();
        const layer = shm.open({ name });
        for (let i = 0; i < 30; i++)
          for (const channel of channels) await layer.send(channel, { id: `${channel}-${i}` });
        const child = runModule(
          `import { writeSync } from 'node:fs';
           const l = new ShmChannelLayer({ name: '${name}' });
           await Promise.all(${JSON.stringify(channels)}.map(async (c) => {
             for (;;) {
               const got = await ${take};
               writeSync(1, ${id} + '\\n');
             }
           }));`,
          { SHMCH_FAULT_POINT: point, SHMCH_FAULT_SKIP: String(skip) },
        );
        if (child.signal !== 'SIGKILL')
          throw new Error(`skip ${skip}: not killed at fault point ${point}: ${child.stderr}`);
        const reported = child.stdout.split('\n').filter(Boolean);
        expect(reported.length).toBeLessThan(90); // it died receiving, not after
        const left: string[] = [];
        for (const channel of channels)
          for (const m of (await drain(layer, channel)) as Array<{ id: string }>) left.push(m.id);
        const all = channels.flatMap((channel) =>
          [...Array(30).keys()].map((i) => `${channel}-${i}`),
        );
        expect({ skip, got: [...reported, ...left].sort() }).toEqual({ skip, got: all.sort() });
        expect(layer.verify()).toEqual([]);
        await layer.close();
      }
    }, 60_000);
  }
});

describe('owner death in every other critical section', () => {
  // What the dying child does to reach each fault point (see native/core/fault_points.h).
  const scenarios: Array<[point: number, what: string, code: string]> = [
    [4, 'group add', `await l.groupAdd('room', 'member.new');`],
    [5, 'group discard', `await l.groupDiscard('room', 'member.a');`],
    [6, 'flush', `await l.flush();`],
    [
      7,
      'expiry sweep',
      `const s = new ShmChannelLayer({ name: l.name, expiry: 0.02 });
       await s.send('stale', { old: 1 }); await s.send('stale', { old: 2 });
       await new Promise((r) => setTimeout(r, 60));
       await s.send('stale', { fresh: 1 });`,
    ],
    [8, 'arena allocation', `await l.send('work', { i: 'child' });`],
    [10, 'record creation', `await l.send('brand.new.channel', { i: 'child' });`],
    // Memory on demand: growing a table, reserving an arena chunk, giving one back.
    [
      11,
      'channel table growth',
      `for (let k = 0; k < 5000; k++) await l.send('grow.' + k, { k });`,
    ],
    [12, 'arena chunk reservation', `await l.send('big', { b: Buffer.alloc(3 << 20) });`],
    [
      13,
      'arena chunk given back',
      // Emptied chunks stay in the warm reserve while the layer is busy; prune gives them back.
      `for (let k = 0; k < 8; k++) await l.send('big', { b: Buffer.alloc(1 << 20) });
       for (let k = 0; k < 8; k++) await l.receive('big');
       ShmChannelLayer.prune(l.name);`,
    ],
    // Large payloads are copied outside the lock (native/core/payload.cc): a death in its
    // critical sections.
    [22, 'large send: block reserved', `await l.send('big', { b: Buffer.alloc(200 << 10) });`],
    [
      24,
      'large send: linked, hold not dropped',
      `await l.send('big', { b: Buffer.alloc(200 << 10) });`,
    ],
    [
      25,
      'large receive: popped into a hold',
      `await l.send('big', { b: Buffer.alloc(200 << 10) }); await l.receive('big');`,
    ],
    [
      25,
      'large receiveAny: popped into a hold',
      `await l.send('big', { b: Buffer.alloc(200 << 10) }); await l.receiveAny(['big', 'other']);`,
    ],
    // Inboxes (native/core/inbox.cc): a process's '!' channels share one queue.
    [
      27,
      'release: an entry out of the middle of an inbox',
      `const a = await l.newChannel(); const b = await l.newChannel();
       await l.send(a, { n: 1 }); await l.send(b, { n: 2 }); await l.send(b, { n: 3 });
       await l.releaseChannel(b);`,
    ],
    [
      27,
      'release: an entry off the head of an inbox',
      `const a = await l.newChannel(); await l.send(a, { n: 1 }); await l.releaseChannel(a);`,
    ],
    [
      28,
      'group add: fan linked, member not published',
      `await l.groupAdd('room', await l.newChannel());`,
    ],
    [
      29,
      'group discard: fan emptied, not removed',
      `const a = await l.newChannel(); await l.groupAdd('room', a); await l.groupDiscard('room', a);`,
    ],
  ];
  for (const [point, what, code] of scenarios) {
    it(`fault point ${point} (${what}): the segment recovers and keeps every committed message`, async () => {
      const name = shm.name();
      const layer = shm.open({ name });
      for (let i = 0; i < 10; i++) await layer.send('work', { i });
      await layer.groupAdd('room', 'member.a');
      await layer.groupAdd('room', 'member.b');
      const child = runModule(
        `const l = new ShmChannelLayer({ name: '${name}' });\n${code}\nconsole.log('fault point not reached');`,
        {
          SHMCH_FAULT_POINT: String(point),
        },
      );
      expect(child.signal, child.stdout + child.stderr).toBe('SIGKILL');

      const started = Date.now();
      await layer.groupSend('room', { to: 'members' });
      expect(Date.now() - started).toBeLessThan(1000);
      expect(layer.verify()).toEqual([]);
      expect(layer.stats().lockRecoveries).toBeGreaterThanOrEqual(1);
      const work = (await drain(layer, 'work')) as Array<{ i: number }>;
      if (point === 6) {
        // A flush killed half-way may have emptied the queues already; what is left is intact.
        expect(work.map((m) => m.i)).toEqual([...Array(work.length).keys()]);
      } else {
        expect(work.map((m) => m.i)).toEqual([...Array(10).keys()]);
        expect(await drain(layer, 'member.b')).toEqual([{ to: 'members' }]);
      }
      await layer.send('work', { i: 'again' });
      expect(await layer.receive('work')).toEqual({ i: 'again' });
      expect(layer.verify()).toEqual([]);
    });
  }

  it('fault point 9: a creator killed during initialisation leaves no poisoned segment', async () => {
    const name = shm.name();
    const child = runModule(`new ShmChannelLayer({ name: '${name}', size: 4 << 20 });`, {
      SHMCH_FAULT_POINT: '9',
    });
    expect(child.signal).toBe('SIGKILL');
    const layer = shm.open({ name, size: 4 << 20 });
    await layer.send('fresh', { ok: true });
    expect(await layer.receive('fresh')).toEqual({ ok: true });
    expect(layer.verify()).toEqual([]);
  });
});

describe('death while a large payload is copied outside the lock', () => {
  // Fault points 23 and 26 (native/core/payload.cc): no lock is held there, so nothing is
  // recovered; the dead slot's hold on its block is released when the slot is reclaimed.
  const scenarios: Array<[point: number, what: string, code: string]> = [
    [
      23,
      'a send copied its payload, not published',
      `await l.send('big', { b: Buffer.alloc(300 << 10, 7) });`,
    ],
    [26, 'a receive copied its payload, not released', `await l.receive('big');`],
  ];
  for (const [point, what, code] of scenarios) {
    it(`fault point ${point} (${what}): no block is left behind and other messages stay`, async () => {
      const name = shm.name();
      const layer = shm.open({ name });
      await layer.send('big', { first: Buffer.alloc(300 << 10, 1) });
      const child = runModule(
        `const l = new ShmChannelLayer({ name: '${name}' });\n${code}\nconsole.log('fault point not reached');`,
        { SHMCH_FAULT_POINT: String(point) },
      );
      expect(child.signal, child.stdout + child.stderr).toBe('SIGKILL');
      expect(layer.verify()).toEqual([]);
      expect(layer.stats().lockRecoveries).toBe(0);
      // Opening the layer again reclaims the dead instance's slot, and its hold.
      const other = shm.open({ name });
      await other.close();
      const left = await drain(layer, 'big');
      if (point === 23) {
        expect(left).toEqual([{ first: Buffer.alloc(300 << 10, 1) }]); // the unpublished one never appears
      } else {
        expect(left).toEqual([]); // the receiver took it: gone with it (at most once)
      }
      expect(layer.stats().arenaUsedBytes).toBe(0);
      expect(layer.verify()).toEqual([]);
    });
  }
});

describe('dead-process reclamation', () => {
  it("reclaims a SIGKILLed process's slot, '!' channels, memberships and messages", async () => {
    const name = shm.name();
    const layer = shm.open({ name });
    const baseline = layer.stats();
    const child = runModule(
      `const l = new ShmChannelLayer({ name: '${name}' });
       const inbox = await l.newChannel();
       await l.groupAdd('room', inbox);
       await l.groupAdd('room2', inbox);
       for (let i = 0; i < 50; i++) await l.send(inbox, { i, pad: 'x'.repeat(1000) });
       process.kill(process.pid, 'SIGKILL');`,
    );
    expect(child.signal).toBe('SIGKILL');
    // Housekeeping runs every 2 s in every attached process.
    await waitFor(() => {
      const s = layer.stats();
      return (
        s.processes === 1 && s.groups === 0 && s.members === 0 && s.channels === baseline.channels
      );
    });
    const after = layer.stats();
    expect(after.arenaUsedBytes).toBe(baseline.arenaUsedBytes);
    expect(after.queued).toBe(baseline.queued);
    expect(layer.verify()).toEqual([]);
  });

  it('returns memory to baseline after churning processes that die in different ways', async () => {
    const name = shm.name();
    const layer = shm.open({ name });
    await layer.send('warm', { hello: 1 });
    await layer.receive('warm');
    const baseline = layer.stats();
    const endings = [
      `process.kill(process.pid, 'SIGKILL');`,
      `process.exit(3);`,
      `await l.close();`,
      `const { Worker } = await import('node:worker_threads');
       const w = new Worker(\`import { ShmChannelLayer } from ${JSON.stringify(JSON.stringify(PACKAGE_ESM)).slice(1, -1)};
         const l = new ShmChannelLayer({ name: '${name}' });
         const c = await l.newChannel(); await l.groupAdd('churn', c); await l.send(c, { x: 1 });
         setInterval(() => {}, 1000);\`, { eval: true, type: 'module' });
       await new Promise((r) => setTimeout(r, 300));
       await w.terminate();`,
    ];
    const children = [];
    for (let round = 0; round < 24; round++) {
      const ending = endings[round % endings.length];
      children.push(
        new Promise<void>((resolve) => {
          const p = spawnModule(
            `const l = new ShmChannelLayer({ name: '${name}' });
             const inbox = await l.newChannel();
             await l.groupAdd('churn', inbox);
             for (let i = 0; i < 5; i++) await l.send(inbox, { i, pad: 'y'.repeat(500) });
             ${ending}`,
            {},
            { stdio: 'ignore' },
          );
          p.on('exit', () => resolve());
        }),
      );
      if (children.length >= 4) await Promise.all(children.splice(0));
    }
    await Promise.all(children);
    await waitFor(() => {
      const s = layer.stats();
      return s.processes === 1 && s.members === 0 && s.arenaUsedBytes === baseline.arenaUsedBytes;
    }, 15_000);
    expect(layer.stats().channels).toBe(baseline.channels);
    expect(layer.verify()).toEqual([]);
  }, 60_000);
});

describe('limits and hostile segments', () => {
  it('a full arena gives SegmentFull (a ChannelFull) and the sender keeps working', async () => {
    const name = shm.name();
    const layer = shm.open({ name, size: 2 << 20, capacity: 100000 });
    let sent = 0;
    let error: unknown;
    try {
      for (;;) {
        await layer.send(`fill.${sent % 10}`, { pad: Buffer.alloc(64 * 1024, 1) });
        sent++;
      }
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(SegmentFull);
    expect(error).toBeInstanceOf(ChannelFull);
    expect(sent).toBeGreaterThan(5);
    const first = (await layer.receive('fill.0')) as { pad: Buffer };
    expect(first.pad.length).toBe(64 * 1024);
    await layer.send('fill.0', { pad: Buffer.alloc(1000) }); // room again after one receive
    expect(layer.verify()).toEqual([]);
  });

  it('groupSend skips the members it has no room for, and throws only when it reached nobody', async () => {
    const name = shm.name();
    const layer = shm.open({ name, size: 2 << 20, maxNodes: 2048 });
    for (let i = 0; i < 8; i++) await layer.groupAdd('room', `member.${i}`);
    // Use up all but 5 nodes of the pool with plain sends.
    for (let i = 0; i < 2048 - 5; i++) await layer.send(`filler.${i % 40}`, { i });
    await layer.groupSend('room', { n: 1 });
    const got = await Promise.all([...Array(8).keys()].map((i) => drain(layer, `member.${i}`)));
    expect(got.flat()).toHaveLength(5);
    expect(layer.verify()).toEqual([]);
    // Pool full again: this one reaches nobody, which the sender is told.
    for (let i = 0; i < 5; i++) await layer.send('filler.x', { i });
    await expect(layer.groupSend('room', { n: 2 })).rejects.toBeInstanceOf(SegmentFull);
    expect(layer.verify()).toEqual([]);
  });

  it('a segment larger than /dev/shm opens: memory is reserved as it is used, not at open', async () => {
    const name = shm.name();
    const { bavail, bsize } = statfsSync('/dev/shm');
    const larger = Math.ceil((bavail * bsize + 2 ** 30) / 2 ** 20) * 2 ** 20;
    const layer = shm.open({ name, size: larger });
    expect(layer.stats().segmentBytes).toBe(larger);
    // At open only the header, slots, hash buckets and the page bitmap (1/512 of the size).
    expect(layer.stats().shmBytes).toBeLessThan(larger / 256);
    await layer.send('big', { blob: Buffer.alloc(3 << 20, 7) });
    expect(layer.stats().shmBytes).toBeGreaterThan(3 << 20);
    expect(((await layer.receive('big')).blob as Buffer).length).toBe(3 << 20);
  });

  it('refuses a segment of another layout version, naming both versions', async () => {
    const name = shm.name();
    shm.open({ name, size: 4 << 20 });
    const file = `/dev/shm/shmch.${uid}.${name}`;
    const fd = openSync(file, 'r+');
    const version = Buffer.alloc(4);
    readSync(fd, version, 0, 4, 8);
    const theirs = Buffer.alloc(4);
    theirs.writeUInt32LE(version.readUInt32LE(0) + 41);
    writeSync(fd, theirs, 0, 4, 8);
    closeSync(fd);
    expect(() => new ShmChannelLayer({ name })).toThrow(
      new RegExp(
        `layout version ${version.readUInt32LE(0) + 41}.*this build uses layout version ${version.readUInt32LE(0)}`,
      ),
    );
  });

  it('refuses a segment with a wrong magic', () => {
    const name = shm.name();
    shm.open({ name, size: 4 << 20 });
    const fd = openSync(`/dev/shm/shmch.${uid}.${name}`, 'r+');
    writeSync(fd, Buffer.from('NOTCHANS'), 0, 8, 0);
    closeSync(fd);
    expect(() => new ShmChannelLayer({ name })).toThrow(/not a shm-channels segment/);
  });

  it('creates segment and doorbells with mode 0600 and refuses a looser segment unless allowed', async () => {
    const name = shm.name();
    const layer = shm.open({ name, size: 4 << 20 });
    const other = shm.open({ name });
    await other.send('ring', { a: 1 });
    const waiting = layer.receive('ring');
    await waiting;
    expect(statSync(`/dev/shm/shmch.${uid}.${name}`).mode & 0o777).toBe(0o600);
    const bell = `/dev/shm/shmch-bell.${uid}.${name}.${layer.stats().slot}`;
    expect(statSync(bell).isFIFO()).toBe(true);
    expect(statSync(bell).mode & 0o077).toBe(0);

    const loose = shm.name();
    shm.open({ name: loose, size: 4 << 20, mode: 0o644 });
    expect(statSync(`/dev/shm/shmch.${uid}.${loose}`).mode & 0o777).toBe(0o644);
    expect(() => new ShmChannelLayer({ name: loose })).toThrow(/mode 0644, expected 0600/);
    shm.open({ name: loose, allowForeign: true });
  });

  it('refuses a doorbell planted by someone else or with a looser mode', () => {
    const name = shm.name();
    const planted = `/dev/shm/shmch-bell.${uid}.${name}.0`;
    writeFileSync(planted, Buffer.alloc(32));
    try {
      chmodSync(planted, 0o600);
      expect(() => new ShmChannelLayer({ name, size: 4 << 20 })).toThrow(
        /doorbell .* is not a FIFO; refusing it/,
      );
      chmodSync(planted, 0o666);
      expect(() => new ShmChannelLayer({ name, size: 4 << 20 })).toThrow(
        /doorbell .* mode 0666; refusing it/,
      );
      if (uid === 0) {
        chmodSync(planted, 0o600);
        chownSync(planted, 65534, 65534);
        expect(() => new ShmChannelLayer({ name, size: 4 << 20 })).toThrow(/belongs to uid 65534/);
      }
    } finally {
      rmSync(planted, { force: true });
    }
    // Without the planted file the layer opens, and its doorbell is its own.
    shm.open({ name, size: 4 << 20 });
    expect(statSync(planted).uid).toBe(uid);
    expect(statSync(planted).isFIFO()).toBe(true);
  });

  it('concurrent first opens from many processes create one segment', async () => {
    const name = shm.name();
    const children = Array.from(
      { length: 6 },
      (_, k) =>
        new Promise<string>((resolve) => {
          const p = spawnModule(
            `const l = new ShmChannelLayer({ name: '${name}', size: 4 << 20 });
             await l.send('hello', { k: ${k} });
             console.log(l.stats().segmentBytes);
             await l.close();`,
            {},
            { stdio: ['ignore', 'pipe', 'inherit'] },
          );
          let out = '';
          p.stdout!.on('data', (d) => (out += d));
          p.on('exit', () => resolve(out.trim()));
        }),
    );
    const sizes = await Promise.all(children);
    expect(sizes).toEqual(Array(6).fill(String(4 << 20)));
    const layer = shm.open({ name });
    const got = (await drain(layer, 'hello')) as Array<{ k: number }>;
    expect(got.map((m) => m.k).sort()).toEqual([0, 1, 2, 3, 4, 5]);
  });
});
