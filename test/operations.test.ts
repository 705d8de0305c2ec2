// Operating a layer: the CLI (stats, inspect, verify, destroy, list), attach-only opens, and a
// segment removed underneath running processes.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { shmLayers } from './support/fixtures.js';
import { CLI, ShmChannelLayer } from './support/package.js';

const shm = shmLayers('ops');

function run(...args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
}

describe('shm-channels CLI', () => {
  it('stats, inspect and verify show what the processes did', async () => {
    const name = shm.name();
    const layer = shm.open({ name });
    await layer.send('jobs.a', { n: 1 });
    await layer.send('jobs.a', { n: 2 });
    const client = await layer.newChannel();
    await layer.groupAdd('room.1', client);

    // The '!' channel, and its instance's inbox ('<prefix>.<client>!', where its messages queue).
    const stats = JSON.parse(run('stats', name, '--json').stdout);
    expect(stats).toMatchObject({ processes: 1, channels: 3, groups: 1, members: 1, queued: 2 });

    const inspect = JSON.parse(run('inspect', name, '--json').stdout);
    expect(inspect.channelList).toContainEqual({ name: 'jobs.a', depth: 2, groups: 0 });
    expect(inspect.channelList).toContainEqual({ name: client, depth: 0, groups: 1 });
    expect(inspect.channelList).toContainEqual({
      name: client.slice(0, client.indexOf('!') + 1),
      depth: 0,
      groups: 1,
    });
    expect(inspect.groupList).toEqual([{ name: 'room.1', members: 1 }]);

    const text = run('inspect', name);
    expect(text.status).toBe(0);
    expect(text.stdout).toContain('jobs.a  2  0');

    const verify = run('verify', name);
    expect(verify.status).toBe(0);
    expect(verify.stdout).toContain('consistent');
    expect(JSON.parse(run('list', '--json').stdout).map((l: { name: string }) => l.name)).toContain(
      name,
    );
  });

  it('does not create a layer it is asked about, and says so', () => {
    const name = shm.name();
    const result = run('stats', name);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`no layer named '${name}'`);
    expect(
      JSON.parse(run('list', '--json').stdout).map((l: { name: string }) => l.name),
    ).not.toContain(name);
    expect(() => new ShmChannelLayer({ name, create: false })).toThrow(/no layer named/);
  });

  it('destroy removes the segment; an attached process notices instead of splitting in two', async () => {
    const name = shm.name();
    const layer = shm.open({ name });
    const pending = layer.receive('never');
    const destroyed = run('destroy', name);
    expect(destroyed.status).toBe(0);
    expect(destroyed.stdout).toContain(`removed layer '${name}'`);
    // Housekeeping (every 2 s) finds the name gone, fails what waits and refuses new calls.
    await expect(pending).rejects.toMatchObject({ code: 'EUNLINKED' });
    await expect(layer.send('x', { a: 1 })).rejects.toMatchObject({ code: 'EUNLINKED' });
    expect(run('destroy', name).status).toBe(1);
  });

  it('usage errors exit with status 2', () => {
    expect(run().status).toBe(2);
    expect(run('frobnicate', 'x').status).toBe(2);
  });
});
