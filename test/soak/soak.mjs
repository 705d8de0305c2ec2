#!/usr/bin/env node
// Connection-churn soak (issue 14): several processes each play a WebSocket server whose clients
// come and go. Per connection: newChannel(), groupAdd() to a room, a receive loop ended by an
// AbortSignal, then leaving (half groupDiscard + abort, the way the README's first example
// ends a client; half abort + releaseChannel). Every cycle also sends to a random room, so the
// receive loops get real traffic while others are torn down.
//
// Sampled throughout: the segment's tables (channels, memberships, groups, queued), its arena,
// and each process's JS heap (after gc) and RSS. Flat means: the tables stay within what the live
// connections need and end empty, and heap and RSS stop growing once warm.
//
//   node test/soak/soak.mjs [--cycles 1000000] [--processes 4] [--window 64] [--redis] [--json]
//
// --redis runs the same churn on RedisChannelLayer against a throwaway redis-server: then the
// tables are Redis's keys (they must end at zero) and each process's own maps (receive loops,
// buffers, memberships it tracks), which must stay within what its live connections need.
import { fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const here = dirname(fileURLToPath(import.meta.url));
const { ShmChannelLayer, RedisChannelLayer } = await import(
  join(here, '..', '..', 'dist', 'esm', 'index.mjs')
);

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at === -1 ? fallback : Number(process.argv[at + 1]);
}

const ROOMS = 16;
const EXPIRY_SECONDS = 2;
const layerOptions = (name) => ({ name, expiry: EXPIRY_SECONDS });

if (process.argv.includes('--worker')) await worker();
else await primary();

/** RSS split: the process's own memory, and the shared segment's pages it has touched so far. */
function rssParts() {
  const status = readFileSync('/proc/self/status', 'utf8');
  const kib = (field) =>
    Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0) * 1024;
  return { rss: kib('VmRSS'), rssAnon: kib('RssAnon'), rssShmem: kib('RssShmem') };
}

async function worker() {
  const layer = process.env.SOAK_REDIS
    ? new RedisChannelLayer({
        hosts: [process.env.SOAK_REDIS],
        prefix: `${process.env.SOAK_LAYER}:`,
        expiry: EXPIRY_SECONDS,
      })
    : new ShmChannelLayer(layerOptions(process.env.SOAK_LAYER));
  // RedisChannelLayer's own bookkeeping (private; read to prove churn does not grow it).
  const ownMaps = () => {
    if (!process.env.SOAK_REDIS) return {};
    const inner = layer;
    return {
      pending: inner.pending.size,
      keyChannels: inner.keyChannels.size,
      pollers: inner.pollers.size,
      buffers: inner.buffers.size,
      localGroups: inner.localGroups.size,
    };
  };
  const cycles = Number(process.env.SOAK_CYCLES);
  const window = Number(process.env.SOAK_WINDOW);
  const samples = Number(process.env.SOAK_SAMPLES);
  const counts = { connections: 0, sent: 0, reached: 0, received: 0 };
  const live = [];
  let random = Number(process.env.SOAK_SEED) >>> 0 || 1;
  const next = (n) => {
    random = (Math.imul(random, 1103515245) + 12345) >>> 0;
    return random % n;
  };

  async function connect() {
    const channel = await layer.newChannel('client');
    const room = `soak-room-${next(ROOMS)}`;
    await layer.groupAdd(room, channel);
    const controller = new AbortController();
    const loop = (async () => {
      for (;;) {
        try {
          await layer.receive(channel, { signal: controller.signal });
          counts.received++;
        } catch (error) {
          if (error.name === 'AbortError' || error.name === 'ChannelReleased') return;
          throw error;
        }
      }
    })();
    return { channel, room, controller, loop };
  }

  async function disconnect(connection, viaRelease) {
    if (viaRelease) {
      connection.controller.abort();
      await layer.releaseChannel(connection.channel);
    } else {
      await layer.groupDiscard(connection.room, connection.channel);
      connection.controller.abort();
    }
    await connection.loop;
  }

  const sampleEvery = Math.max(1, Math.floor(cycles / samples));
  for (let cycle = 0; cycle < cycles; cycle++) {
    if (live.length >= window) await disconnect(live.shift(), cycle % 2 === 0);
    live.push(await connect());
    counts.connections++;
    counts.reached += await layer.groupSend(`soak-room-${next(ROOMS)}`, {
      type: 'chat',
      cycle,
      pid: process.pid,
    });
    counts.sent++;
    // Let the receive loops run now and then, as a server's event loop would between frames.
    if (cycle % 8 === 7) await new Promise((resolve) => setImmediate(resolve));
    if (cycle % sampleEvery === sampleEvery - 1) {
      globalThis.gc();
      process.send({
        sample: {
          cycle: cycle + 1,
          heapUsed: process.memoryUsage().heapUsed,
          ...rssParts(),
          maps: ownMaps(),
        },
      });
    }
  }
  for (const [i, connection] of live.splice(0).entries()) await disconnect(connection, i % 2 === 0);
  const own = layer.stats();
  process.send({
    done: {
      ...counts,
      orphaned: own.messagesOrphaned,
      expired: own.messagesExpired,
      skippedFull: own.deliveriesSkippedFull,
    },
  });
  await layer.close();
}

async function primary() {
  const cycles = option('cycles', 1_000_000);
  const processes = option('processes', 4);
  const window = option('window', 64);
  const samplesPerProcess = option('samples', 20);
  const json = process.argv.includes('--json');
  const name = `soak-${process.pid}`;
  const useRedis = process.argv.includes('--redis');
  let redisServer;
  let redisClient;
  if (useRedis) {
    const { RedisServer } = await import(join(here, '..', '..', 'scripts', 'redis-server.mjs'));
    const { default: Redis } = await import('ioredis');
    redisServer = await RedisServer.start();
    redisClient = new Redis(redisServer.url);
  }
  const layer = useRedis ? undefined : new ShmChannelLayer(layerOptions(name));
  const started = Date.now();
  const tables = [];
  const sampleTables = async () => {
    if (useRedis) {
      // A server of its own: every key is ours, but for one heartbeat key per process.
      const keys = (await redisClient.keys('*')).filter((key) => !key.includes(':alive:')).length;
      tables.push({
        ms: Date.now() - started,
        channels: keys,
        idleRecords: 0,
        members: 0,
        groups: 0,
        queued: 0,
        arenaUsedBytes: 0,
      });
      return { channels: keys, members: 0, groups: 0, queued: 0 };
    }
    const s = layer.stats(1 << 20);
    tables.push({
      ms: Date.now() - started,
      channels: s.channels,
      // Records with no message and no membership: only a waiting receive (a live connection)
      // justifies one. A leaked registration shows up here whatever the send rate.
      idleRecords: s.channelList.filter((c) => c.depth === 0 && c.groups === 0).length,
      members: s.members,
      groups: s.groups,
      queued: s.queued,
      arenaUsedBytes: s.arenaUsedBytes,
    });
    return s;
  };
  const problems = [];
  const workers = [];
  const memory = new Map();
  const done = [];
  try {
    const perProcess = Math.ceil(cycles / processes);
    for (let i = 0; i < processes; i++) {
      const child = fork(fileURLToPath(import.meta.url), ['--worker'], {
        execArgv: ['--expose-gc'],
        env: {
          ...process.env,
          SOAK_LAYER: name,
          ...(useRedis ? { SOAK_REDIS: redisServer.url } : {}),
          SOAK_CYCLES: String(perProcess),
          SOAK_WINDOW: String(window),
          SOAK_SAMPLES: String(samplesPerProcess),
          SOAK_SEED: String(i + 1),
        },
      });
      memory.set(child.pid, []);
      child.on('message', (/** @type {any} */ message) => {
        if (message.sample) memory.get(child.pid).push(message.sample);
        if (message.done) done.push(message.done);
      });
      workers.push(
        new Promise((resolve) => {
          child.on('exit', (code, signal) => {
            if (code !== 0) problems.push(`worker ${i} exited with ${code ?? signal}`);
            resolve();
          });
        }),
      );
    }
    let finished = false;
    const all = Promise.all(workers).then(() => (finished = true));
    while (!finished) {
      await sampleTables();
      await Promise.race([all, sleep(500)]);
    }
    // What is left: messages that reached a channel after its receive loop ended (left to
    // expire, as any undelivered message is) and nothing else. Housekeeping drops them.
    const deadline = Date.now() + (EXPIRY_SECONDS + 5) * 1000;
    let last = await sampleTables();
    while (Date.now() < deadline && (last.channels || last.members || last.groups || last.queued)) {
      await sleep(250);
      last = await sampleTables();
    }
    const end = await sampleTables();
    const elapsed = (Date.now() - started) / 1000;
    const peak = (key) => Math.max(...tables.map((t) => t[key]));
    const totals = done.reduce((sum, counts) => {
      for (const key of Object.keys(counts)) sum[key] = (sum[key] ?? 0) + counts[key];
      return sum;
    }, {});
    // Heap and RSS: the median of the second quarter of each process's samples (warm) against
    // the median of its last quarter.
    const median = (values) => {
      const sorted = [...values].sort((a, b) => a - b);
      return sorted[Math.floor(sorted.length / 2)] ?? 0;
    };
    const growth = [...memory.values()].map((samples) => {
      const quarter = Math.max(1, Math.floor(samples.length / 4));
      const warm = samples.slice(quarter, 2 * quarter);
      const late = samples.slice(-quarter);
      return {
        heapWarmMiB: median(warm.map((s) => s.heapUsed)) / 2 ** 20,
        heapLateMiB: median(late.map((s) => s.heapUsed)) / 2 ** 20,
        rssWarmMiB: median(warm.map((s) => s.rss)) / 2 ** 20,
        rssLateMiB: median(late.map((s) => s.rss)) / 2 ** 20,
        anonWarmMiB: median(warm.map((s) => s.rssAnon)) / 2 ** 20,
        anonLateMiB: median(late.map((s) => s.rssAnon)) / 2 ** 20,
      };
    });
    const liveConnections = processes * window;
    if (end.channels || end.members || end.groups || end.queued || end.arenaUsedBytes) {
      problems.push(`tables not empty at the end: ${JSON.stringify(end)}`);
    }
    // Live connections each hold a record and a membership. Records of clients that left with
    // messages still queued stay until those expire (EXPIRY_SECONDS): bounded by the send rate,
    // and gone at the end (checked above). A record with nothing in it and no membership is
    // justified only by a live connection's waiting receive: more of them than connections is a
    // leak, however fast or slow the machine runs.
    if (peak('idleRecords') > liveConnections + 16) {
      problems.push(
        `${peak('idleRecords')} records with no message and no membership (live connections: ${liveConnections})`,
      );
    }
    if (peak('members') > liveConnections + 16)
      problems.push(`memberships peaked at ${peak('members')}`);
    for (const [i, g] of growth.entries()) {
      if (g.heapLateMiB - g.heapWarmMiB > 4)
        problems.push(
          `process ${i}: JS heap grew ${g.heapWarmMiB.toFixed(1)} -> ${g.heapLateMiB.toFixed(1)} MiB`,
        );
      // The segment's pages count in RSS as they are first touched (up to its size): only the
      // process's own memory must stay flat.
      if (g.anonLateMiB - g.anonWarmMiB > 32)
        problems.push(
          `process ${i}: private RSS grew ${g.anonWarmMiB.toFixed(1)} -> ${g.anonLateMiB.toFixed(1)} MiB`,
        );
    }
    if ((totals.connections ?? 0) < cycles)
      problems.push(`only ${totals.connections} connections ran`);
    // Redis: each process's own maps hold what its live connections need, no more. (Not
    // `buffers`: messages that reached a client after its receive loop ended wait there until
    // they expire, as on shm they wait in the channel; the heap check covers them.)
    for (const [i, samples] of [...memory.values()].entries()) {
      for (const [map, size] of Object.entries(samples.at(-1)?.maps ?? {})) {
        if (map === 'buffers') continue;
        const most = Math.max(...samples.map((s) => s.maps?.[map] ?? 0));
        if (most > window + 16)
          problems.push(
            `process ${i}: ${map} reached ${most} entries (${window} live connections); last ${size}`,
          );
      }
    }
    // shm counts for the whole segment; Redis per instance (summed over the processes).
    const stats = layer
      ? layer.stats(0)
      : {
          messagesOrphaned: totals.orphaned ?? 0,
          messagesExpired: totals.expired ?? 0,
          deliveriesSkippedFull: totals.skippedFull ?? 0,
        };
    const result = /** @type {any} */ ({
      backend: useRedis ? 'redis' : 'shm',
      cycles: totals.connections ?? 0,
      processes,
      window,
      seconds: Number(elapsed.toFixed(1)),
      cyclesPerSecond: Math.round((totals.connections ?? 0) / elapsed),
      groupSends: totals.sent ?? 0,
      deliveries: totals.reached ?? 0,
      received: totals.received ?? 0,
      orphaned: stats.messagesOrphaned,
      expired: stats.messagesExpired,
      skippedFull: stats.deliveriesSkippedFull,
      peak: {
        channels: peak('channels'),
        idleRecords: peak('idleRecords'),
        members: peak('members'),
        queued: peak('queued'),
        arenaUsedBytes: peak('arenaUsedBytes'),
      },
      end: {
        channels: end.channels,
        members: end.members,
        groups: end.groups,
        queued: end.queued,
        arenaUsedBytes: end.arenaUsedBytes,
      },
      // Records over time (every 10th sample): flat, or a leak.
      ...(useRedis
        ? {
            mapsPeak: Object.fromEntries(
              ['pending', 'keyChannels', 'pollers', 'buffers', 'localGroups'].map((k) => [
                k,
                Math.max(0, ...[...memory.values()].flat().map((s) => s.maps?.[k] ?? 0)),
              ]),
            ),
          }
        : {}),
      channelsOverTime: tables
        .filter((_, i) => i % 10 === 0)
        .map((t) => [Math.round(t.ms / 1000), t.channels, t.idleRecords]),
      memory: growth.map((g) =>
        Object.fromEntries(Object.entries(g).map(([k, v]) => [k, Number(v.toFixed(1))])),
      ),
      problems,
    });
    // Every delivery is accounted for: received, or dropped for a reason the stats name. (Redis
    // expires what was left in a key when its receivers had gone without telling anyone: there
    // the remainder is reported, not a failure.)
    const unaccounted = result.deliveries - result.received - result.orphaned - result.expired;
    if (useRedis) result.expiredInRedis = unaccounted;
    else if (unaccounted !== 0)
      problems.push(`${unaccounted} deliveries neither received, orphaned nor expired`);
    if (json) {
      console.log(JSON.stringify(result));
    } else {
      console.log(
        `soak (${result.backend}): ${result.cycles} connection cycles in ${result.processes} processes, ${result.seconds} s (${result.cyclesPerSecond}/s)`,
      );
      console.log(
        `  deliveries ${result.deliveries}: received ${result.received}, orphaned ${result.orphaned}, expired ${result.expired}` +
          (useRedis ? `, left to expire in Redis ${result.expiredInRedis}` : ''),
      );
      console.log(`  peak: ${JSON.stringify(result.peak)}`);
      console.log(`  end:  ${JSON.stringify(result.end)}`);
      if (result.mapsPeak)
        console.log(`  per-process maps, peak: ${JSON.stringify(result.mapsPeak)}`);
      console.log(
        `  [seconds, ${useRedis ? 'Redis keys' : 'records, idle records'}] over time: ${JSON.stringify(result.channelsOverTime)}`,
      );
      for (const [i, g] of result.memory.entries()) {
        console.log(
          `  process ${i}: JS heap ${g.heapWarmMiB} -> ${g.heapLateMiB} MiB, private RSS ${g.anonWarmMiB} -> ${g.anonLateMiB} MiB, ` +
            `RSS ${g.rssWarmMiB} -> ${g.rssLateMiB} MiB${useRedis ? '' : ' (includes segment pages touched)'}`,
        );
      }
      console.log(problems.length ? `PROBLEMS:\n  ${problems.join('\n  ')}` : 'flat: no problems');
    }
    process.exitCode = problems.length ? 1 : 0;
  } finally {
    if (layer) {
      await layer.close();
      ShmChannelLayer.destroy(name);
    }
    redisClient?.disconnect();
    await redisServer?.dispose();
  }
}
