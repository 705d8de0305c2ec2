// Where Node servers run: a container's /dev/shm, 64 MB unless `docker run --shm-size` says
// otherwise. Each test runs its scenario in a child process with a private mount namespace
// (`unshare -m`) whose /dev/shm is a fresh 64 MB tmpfs, as Docker gives a container. Needs root
// (CI runs as root); without it the tests are skipped with a loud message, never when CI is set.
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { WORKERS } from './support/fixtures.js';
import { CLI, PACKAGE_ESM } from './support/package.js';

const MiB = 1 << 20;

function canUnshare(): boolean {
  if (process.getuid?.() !== 0) return false;
  return spawnSync('unshare', ['-m', 'true']).status === 0;
}
const available = canUnshare();
if (!available) {
  const why = 'needs root and unshare(1) for a private 64 MB /dev/shm';
  if (process.env.CI) throw new Error(`docker-shm tests cannot run under CI: ${why}`);
  console.warn(`\n*** SKIPPING the 64 MB /dev/shm (Docker) tests: ${why} ***\n`);
}

// What every scenario gets: the package, the fs calls the scenarios make, and the helpers of
// test/workers/small-shm.mjs (how full /dev/shm is, what is in it, a filler file, the CLI, report).
const prelude = `
import { rmSync, statfsSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { ShmChannelLayer, SegmentFull, ShmError, ChannelFull } from ${JSON.stringify(PACKAGE_ESM)};
import { MiB, used, free, files, fileUse, fill, cli, sleep, report } from ${JSON.stringify(join(WORKERS, 'small-shm.mjs'))};
`;

interface Run {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the child's JSON report, asserted field by field
  result: any;
  status: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/** Runs an ES module body in a child with its own 64 MB /dev/shm; returns what it report()ed. */
function inSmallShm(body: string, sizeMb = 64): Promise<Run> {
  const script =
    prelude + `\ntry {\n${body}\n} catch (error) { console.error(error); process.exit(1); }\n`;
  return new Promise((resolve) => {
    const child = spawn(
      'unshare',
      [
        '-m',
        '--propagation',
        'private',
        'sh',
        '-c',
        `mount -t tmpfs -o size=${sizeMb}m,mode=1777 tmpfs /dev/shm && exec "$0" --input-type=module -e "$1"`,
        process.execPath,
        script,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SHMCH_CLI: CLI } },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (status, signal) => {
      const line = out.split('\n').find((l) => l.startsWith('RESULT '));
      resolve({
        result: line ? JSON.parse(line.slice(7)) : undefined,
        status,
        signal,
        stderr: err,
      });
    });
  });
}

function expectClean(run: Run): void {
  expect(run.signal, `the child died of ${run.signal}: ${run.stderr}`).toBeNull();
  expect(run.status, run.stderr).toBe(0);
  expect(run.result, run.stderr).toBeDefined();
}

describe.skipIf(!available)('a 64 MB /dev/shm, as Docker gives a container', () => {
  it('three layers with default options open at once, carry a 5 MB message, and stay small', async () => {
    const run = await inSmallShm(`
      const layers = ['a', 'b', 'c'].map((n) => new ShmChannelLayer({ name: 'app-' + n }));
      const idleAtOpen = used();
      const big = Buffer.alloc(5_000_000, 7);
      await layers[1].send('upload', { type: 'file', body: big });
      const got = await layers[1].receive('upload');
      const intact = Buffer.compare(got.body, big) === 0;
      const afterMessage = used();
      await sleep(4500); // two housekeeping rounds with nothing sent: the layer is idle
      const idleAfterUse = used();
      const perLayerOpen = files().filter((f) => f.startsWith('shmch.')).map(fileUse);
      for (const l of layers) await l.close();
      const perLayerClosed = files().filter((f) => f.startsWith('shmch.')).map(fileUse);
      report({ idleAtOpen, afterMessage, idleAfterUse, perLayerOpen, perLayerClosed, intact, total: statfsSync('/dev/shm').blocks * statfsSync('/dev/shm').bsize });
    `);
    expectClean(run);
    const r = run.result;
    expect(r.total).toBe(64 * MiB);
    expect(r.intact).toBe(true);
    expect(r.idleAtOpen).toBeLessThanOrEqual(16 * MiB);
    expect(r.afterMessage).toBeGreaterThan(5 * MiB);
    expect(r.idleAfterUse).toBeLessThanOrEqual(16 * MiB);
    expect(r.perLayerClosed).toHaveLength(3);
    // After every process closed, a layer costs at most a few MB (its records; no empty arena).
    for (const bytes of r.perLayerClosed) expect(bytes).toBeLessThanOrEqual(3 * MiB);
  }, 60_000);

  it('filling a layer gives SegmentFull at the send, never a crash, and it works again after draining', async () => {
    const run = await inSmallShm(`
      const others = [new ShmChannelLayer({ name: 'other-1' }), new ShmChannelLayer({ name: 'other-2' })];
      const layer = new ShmChannelLayer({ name: 'filled' });
      const blob = Buffer.alloc(MiB - 200, 3);
      const outcome = async () => {
        let sent = 0;
        for (;;) {
          try { await layer.send('fill.' + (sent % 40), { blob }); sent++; }
          catch (error) { return { sent, name: error.name, message: error.message, isChannelFull: error instanceof ChannelFull }; }
        }
      };
      // The arena of the default 64 MiB segment fills before this /dev/shm does.
      const arenaFull = await outcome();
      let drained = 0;
      for (let i = 0; i < 40; i++) while (true) {
        const m = await Promise.race([layer.receive('fill.' + i), sleep(50).then(() => null)]);
        if (!m) break;
        drained++;
      }
      await layer.send('after', { n: 1 });
      const afterArena = (await layer.receive('after')).n;
      // Now /dev/shm itself runs out first: something else in the container took most of it.
      fill(20 * MiB);
      const shmFull = await outcome();
      for (let i = 0; i < 40; i++) while (true) {
        const m = await Promise.race([layer.receive('fill.' + i), sleep(50).then(() => null)]);
        if (!m) break;
      }
      await layer.send('after', { n: 2 });
      const afterShm = (await layer.receive('after')).n;
      for (const l of [layer, ...others]) await l.close();
      report({ arenaFull, drained, afterArena, shmFull, afterShm });
    `);
    expectClean(run);
    const r = run.result;
    expect(r.arenaFull.name).toBe('SegmentFull');
    expect(r.arenaFull.isChannelFull).toBe(true);
    expect(r.arenaFull.sent).toBeGreaterThan(30);
    expect(r.drained).toBe(r.arenaFull.sent);
    expect(r.afterArena).toBe(1);
    expect(r.shmFull.name).toBe('SegmentFull');
    expect(r.shmFull.sent).toBeLessThan(r.arenaFull.sent);
    expect(r.shmFull.message).toMatch(/\/dev\/shm has [\d.]+ MiB free of 64\.0 MiB/);
    expect(r.shmFull.message).toMatch(/--shm-size/);
    expect(r.afterShm).toBe(2);
  }, 90_000);

  it('an open that finds /dev/shm full fails naming the numbers and the way out, and leaves nothing behind', async () => {
    const run = await inSmallShm(`
      // What one default layer needs to open (segment and doorbell), measured on the empty mount.
      const probe = new ShmChannelLayer({ name: 'probe' });
      const needed = used();
      await probe.close();
      ShmChannelLayer.destroy('probe');
      const emptyAfterDestroy = files();
      const failures = [];
      let opened = 0;
      // Every amount of free space around what an open needs, page by page: each open either
      // works or fails cleanly, whichever of its steps runs out.
      for (let left = needed - 6 * 4096; left <= needed + 2 * 4096; left += 4096) {
        fill(left);
        try {
          const layer = new ShmChannelLayer({ name: 'tight' });
          opened++;
          await layer.close();
          ShmChannelLayer.destroy('tight');
        } catch (error) {
          failures.push({ left, name: error.name, code: error.code, message: error.message, leftBehind: files() });
        }
      }
      rmSync('/dev/shm/filler');
      const layer = new ShmChannelLayer({ name: 'tight' });
      await layer.send('x', { ok: true });
      const works = (await layer.receive('x')).ok;
      await layer.close();
      report({ needed, emptyAfterDestroy, failures, opened, works });
    `);
    expectClean(run);
    const r = run.result;
    expect(r.emptyAfterDestroy).toEqual([]);
    expect(r.needed).toBeLessThan(4 * MiB);
    expect(r.failures.length).toBeGreaterThan(0);
    expect(r.opened).toBeGreaterThan(0);
    for (const f of r.failures) {
      expect(f.leftBehind, `after a failed open with ${f.left} bytes free`).toEqual([]);
      expect(f.code).toBe('ENOSPACE');
      expect(f.message).toMatch(/\/dev\/shm has [\d.]+ MiB free of 64\.0 MiB/);
      expect(f.message).toMatch(/size 64\.0 MiB|up to its size of 64\.0 MiB/);
      expect(f.message).toMatch(/docker run --shm-size/);
      expect(f.message).toMatch(/smaller `size`/);
    }
    expect(r.works).toBe(true);
  }, 90_000);

  it('a layer whose processes all died keeps only a few MB beyond its messages; list shows it, prune removes it', async () => {
    const run = await inSmallShm(`
      // A process that carries a 5 MB message, leaves one small message queued, and is killed
      // (test/workers/crashed-holder.mjs).
      const child = spawn(process.execPath, [${JSON.stringify(join(WORKERS, 'crashed-holder.mjs'))}], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      await new Promise((resolve) => child.stdout.on('data', (d) => String(d).includes('ready') && resolve()));
      const whileAlive = JSON.parse(cli('list', '--json'));
      child.kill('SIGKILL');
      await new Promise((resolve) => child.on('exit', resolve));
      const deadCost = fileUse(files().find((f) => f.startsWith('shmch.')));
      const afterDeath = JSON.parse(cli('list', '--json'));
      const listText = cli('list');
      // An idle layer that expired its message, a layer in use, and doorbells left without a layer.
      const expiring = new ShmChannelLayer({ name: 'expiring', expiry: 0.2 });
      await expiring.send('gone', { soon: true });
      await expiring.close();
      const busy = new ShmChannelLayer({ name: 'busy' });
      // A segment of an older layout version nobody runs, and one whose creator died before it
      // was initialised.
      const header = Buffer.alloc(65536);
      header.write('SSHMCHAN', 0, 'latin1'); // kMagic, little-endian
      header.writeUInt32LE(1, 8);
      header.writeUInt32LE(1, 16);
      writeFileSync('/dev/shm/shmch.' + process.getuid() + '.old-version', header, { mode: 0o600 });
      writeFileSync('/dev/shm/shmch.' + process.getuid() + '.half-made', Buffer.alloc(65536), { mode: 0o600 });
      const listedOld = JSON.parse(cli('list', '--json')).find((l) => l.name === 'old-version');
      await sleep(300);
      const pruned = JSON.parse(cli('prune', '--json'));
      const left = JSON.parse(cli('list', '--json')).map((l) => l.name);
      // The crashed layer's queued message was kept: prune only after it was received.
      const again = new ShmChannelLayer({ name: 'crashed' });
      const kept = await again.receive('later');
      await again.close();
      const prunedAgain = JSON.parse(cli('prune', '--json'));
      await busy.close();
      report({ whileAlive, afterDeath, listText, deadCost, pruned, left, kept, prunedAgain, listedOld, remaining: files() });
    `);
    expectClean(run);
    const r = run.result;
    expect(r.whileAlive).toEqual([
      expect.objectContaining({ name: 'crashed', processes: 1, queued: 1, sizeBytes: 64 * MiB }),
    ]);
    expect(r.whileAlive[0].shmBytes).toBeGreaterThan(0);
    expect(r.afterDeath).toEqual([
      expect.objectContaining({ name: 'crashed', processes: 0, queued: 1 }),
    ]);
    expect(r.listText).toMatch(/layer\s+size\s+\/dev\/shm\s+processes\s+queued/);
    expect(r.listText).toMatch(/crashed\s+64\.0 MiB\s+[\d.]+ [KM]iB\s+0\s+1/);
    // Nobody closed it, yet all it keeps is its records and a reserve the size of its largest
    // message plus a chunk (so a busy layer does not punch and re-reserve for every message).
    expect(r.deadCost).toBeLessThanOrEqual(5 * MiB + 3 * MiB);
    const byName = Object.fromEntries(r.pruned.map((p: { name: string }) => [p.name, p]));
    expect(byName.expiring.removed).toBe(true);
    expect(r.listedOld).toMatchObject({
      processes: 0,
      queued: null,
      problem: expect.stringMatching(/not readable/),
    });
    expect(byName['old-version']).toMatchObject({
      removed: true,
      why: expect.stringMatching(/another layout version/),
    });
    expect(byName['half-made']).toMatchObject({
      removed: true,
      why: expect.stringMatching(/never initialised/),
    });
    expect(byName.busy.removed).toBe(false);
    expect(byName.busy.why).toMatch(/1 processes attached/);
    expect(byName.crashed.removed).toBe(false);
    expect(byName.crashed.why).toMatch(/1 messages queued/);
    expect(r.left).toEqual(['busy', 'crashed']);
    expect(r.kept).toEqual({ kept: true, n: 1 });
    expect(r.prunedAgain.find((p: { name: string }) => p.name === 'crashed').removed).toBe(true);
    expect(r.remaining.filter((f: string) => !f.includes('.busy'))).toEqual([]);
  }, 90_000);
});
