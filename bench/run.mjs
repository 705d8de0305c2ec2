#!/usr/bin/env node
// npm run bench: every workload on every backend, same machine, same run.
//
//   node bench/run.mjs                         3 repetitions of everything
//   node bench/run.mjs --quick                 1 short repetition
//   node bench/run.mjs --only W1,W2 --backends shm,redis --reps 5
//
// Each measurement (workload x backend x repetition) runs in a fresh host process
// (bench/host.mjs) with fresh workers, its own shm layer name (destroyed after) or Redis key
// prefix (FLUSHALL after). Repetitions are interleaved (rep 1 of every backend, then rep 2, ...)
// so slow drift of the machine spreads over all backends. Results: the terminal table,
// bench/results.json (every raw sample + medians) and bench/results.svg.
import { execFileSync, fork, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ShmChannelLayer } from '../dist/esm/index.mjs';
import { BACKENDS } from './backends.mjs';
import { RedisServer, redisInfo } from './redis-server.mjs';
import { computeMedians, renderSvg, renderTable } from './report.mjs';
import { WORKLOADS } from './workloads/index.mjs';

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    backends: { type: 'string' },
    reps: { type: 'string' },
    out: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log(`usage: node bench/run.mjs [--quick] [--only W1,W2,...] [--backends shm,redis,inmemory,cluster] [--reps N] [--out PREFIX]
  --quick      1 short repetition (smoke test; numbers are indicative only)
  --only       workloads: ${WORKLOADS.map((w) => w.id).join(', ')} (W3 and W5 have two parts each)
  --backends   ${BACKENDS.join(', ')}
  --reps       repetitions per measurement (default 3, --quick 1)
  --out        output path prefix (default bench/results -> .json and .svg)`);
  process.exit(0);
}

const quick = args.quick;
const reps = Number(args.reps ?? (quick ? 1 : 3));
const backends = args.backends
  ? args.backends.split(',').map((s) => s.trim().toLowerCase())
  : BACKENDS;
for (const b of backends)
  if (!BACKENDS.includes(b)) throw new Error(`unknown backend ${b} (use ${BACKENDS.join(',')})`);
const only = args.only
  ? new Set(args.only.split(',').map((s) => s.trim().toUpperCase()))
  : undefined;
const workloads = WORKLOADS.filter(
  (w) => !only || only.has(w.id) || only.has(w.part?.toUpperCase()),
);
if (workloads.length === 0 && !only?.has('SIO'))
  throw new Error(`--only ${args.only} selects no workload`);
const outPrefix = args.out ?? fileURLToPath(new URL('./results', import.meta.url));

const hostScript = fileURLToPath(new URL('./host.mjs', import.meta.url));
const started = new Date();
const t0 = Date.now();
const log = (text) =>
  console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${text}`);
if (workloads.length === 0) {
  // --only SIO: just the Socket.IO workload; the other results files are left as they are.
  runSocketIoWorkload();
  process.exit();
}

// --- cleanup, even on errors and ^C ---
// Only through ChildProcess objects (never a bare pid that may have been reused since): each host
// kills its own workers when it exits or gets SIGTERM, and workers exit when their host's IPC
// channel closes, so killing a host takes its workers with it.
let redis;
const liveHosts = new Set();
function killEverything() {
  for (const host of liveHosts) {
    try {
      host.kill('SIGKILL');
    } catch {}
  }
  redis?.killNow();
  removeLeftoverSegments();
}

/** Segments of this run that a killed host could not destroy: /dev/shm/shmch.<uid>.bench-<our pid>-*. */
function removeLeftoverSegments() {
  let names;
  try {
    names = readdirSync('/dev/shm');
  } catch {
    return;
  }
  const prefix = `shmch.${process.getuid?.() ?? ''}.bench-${process.pid}-`;
  for (const file of names) {
    if (!file.startsWith(prefix)) continue;
    try {
      ShmChannelLayer.destroy(file.slice(`shmch.${process.getuid?.() ?? ''}.`.length));
    } catch {}
  }
}
process.on('exit', killEverything);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    log(`${signal}: stopping children and redis-server`);
    killEverything();
    process.exit(130);
  });
}

/** Runs one measurement in a fresh host; resolves with its result (or throws). */
function measure(workload, backend, rep) {
  const params = quick ? workload.quick : workload.full;
  const tag = `${process.pid}-${workload.module}-${backend}-${rep}`.replace(/[^A-Za-z0-9-]/g, '');
  return new Promise((resolve, reject) => {
    const host = fork(hostScript, [], {
      execArgv: ['--expose-gc'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'advanced',
    });
    liveHosts.add(host);
    host.on('exit', () => liveHosts.delete(host));
    let settled = false;
    const finish = (error, result) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (host.exitCode === null && host.signalCode === null) {
        // SIGTERM: the host kills its workers and exits; SIGKILL if it does not within 3 s.
        host.kill('SIGTERM');
        setTimeout(() => host.kill('SIGKILL'), 3000).unref();
      }
      if (error) reject(error);
      else resolve(result);
    };
    const timeoutS = workload.timeoutS * (quick ? 0.5 : 1);
    const timer = setTimeout(
      () => finish(new Error(`timed out after ${timeoutS} s`)),
      timeoutS * 1000,
    );
    host.on('message', (/** @type {any} */ m) => {
      if (m.progress) log(`  ${workload.id} ${backend}: ${m.progress}`);
      if (m.result) finish(undefined, m.result);
      if (m.error) finish(new Error(m.error));
    });
    host.on('exit', (code, signal) =>
      finish(new Error(`host exited (${code ?? signal}) without a result`)),
    );
    host.send({
      workload: workload.module,
      backend,
      params,
      redisUrl: redis?.url,
      redisPid: redis?.pid,
      tag,
      ipcSerialization: workload.ipcSerialization,
    });
  });
}

/**
 * The machine's floor: bench/floor.c, compiled here with the system C compiler and run once
 * (spin and futex ping-pong, memcpy into a shared mapping, an SPSC ring). Never fails the run.
 */
function measureFloor() {
  const dir = mkdtempSync(join(os.tmpdir(), 'shmch-floor-'));
  try {
    const source = fileURLToPath(new URL('./floor.c', import.meta.url));
    const binary = join(dir, 'floor');
    execFileSync(process.env.CC ?? 'cc', ['-O2', '-o', binary, source], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    return JSON.parse(execFileSync(binary, { encoding: 'utf8', timeout: 120_000 }));
  } catch (error) {
    return { error: String(error?.message ?? error).split('\n')[0] };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Which code was measured: commit, local changes under lib/ and native/, the addon file loaded. */
function sourceInfo() {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const git = (...a) => {
    try {
      return execFileSync('git', a, {
        cwd: root,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim();
    } catch {
      return undefined;
    }
  };
  let addon;
  try {
    const require = createRequire(import.meta.url);
    const path = require('node-gyp-build').path(root);
    addon = { path: path.slice(root.length), modified: statSync(path).mtime.toISOString() };
  } catch {}
  const dirty = git('status', '--porcelain', '--', 'lib', 'native', 'binding.gyp');
  return {
    commit: git('rev-parse', 'HEAD'),
    uncommittedFilesInLibNative: dirty ? dirty.split('\n').length : 0,
    addon,
  };
}

const results = {
  bench: 'shm-channels',
  date: started.toISOString(),
  node: process.version,
  machine: {
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memoryGB: +(os.totalmem() / 1e9).toFixed(1),
    loadAverageAtStart: os.loadavg(),
  },
  options: { quick, reps, backends, workloads: workloads.map((w) => w.module) },
  source: sourceInfo(),
  params: Object.fromEntries(workloads.map((w) => [w.module, quick ? w.quick : w.full])),
  samples: {},
  errors: [],
};

try {
  if (backends.includes('redis')) {
    try {
      redis = await RedisServer.start();
      const info = await redisInfo(redis.url);
      results.redis = {
        version: info.version,
        port: redis.port,
        args: "--save '' --appendonly no",
      };
      log(`redis-server ${info.version} on 127.0.0.1:${redis.port} (pid ${redis.pid})`);
    } catch (error) {
      // Without a server the other backends still run; the failure is in the results.
      await redis?.dispose();
      redis = undefined;
      backends.splice(backends.indexOf('redis'), 1);
      results.errors.push({ backend: 'redis', error: `redis-server: ${error.message}` });
      log(`REDIS SKIPPED: ${error.message}`);
    }
  }
  results.machine.floor = measureFloor();
  log(`machine floor (bench/floor.c): ${JSON.stringify(results.machine.floor)}`);
  log(
    `${quick ? 'QUICK run' : 'run'}: ${reps} repetition(s) of ${workloads.map((w) => w.module).join(', ')} ` +
      `on ${backends.join(', ')}; ${os.cpus().length} CPUs, load ${os
        .loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
  );
  for (let rep = 1; rep <= reps; rep++) {
    for (const workload of workloads) {
      for (const backend of backends) {
        if (workload.backends && !workload.backends.includes(backend)) continue;
        const label = `${workload.module} ${backend} (rep ${rep}/${reps})`;
        log(`${label}: ${workload.title}`);
        const began = Date.now();
        try {
          const sample = await measure(workload, backend, rep);
          ((results.samples[workload.module] ??= {})[backend] ??= []).push({ rep, ...sample });
          log(
            `${label}: done in ${((Date.now() - began) / 1000).toFixed(1)} s — ${workload.summary(sample)}`,
          );
        } catch (error) {
          const text = String(error?.message ?? error)
            .split('\n')
            .slice(0, 12)
            .join('\n');
          results.errors.push({ workload: workload.module, backend, rep, error: text });
          log(`${label}: FAILED: ${text}`);
        }
      }
    }
  }
} finally {
  if (redis) {
    await redis.dispose();
    redis = undefined;
  }
  killEverything();
}

results.loadAverageAtEnd = os.loadavg();
results.durationSeconds = (Date.now() - t0) / 1000;
results.medians = computeMedians(results.samples);
writeFileSync(`${outPrefix}.json`, JSON.stringify(results, null, 2) + '\n');
writeFileSync(`${outPrefix}.svg`, renderSvg(results));
console.log('');
console.log(renderTable(results));
log(`wrote ${outPrefix}.json and ${outPrefix}.svg`);
if (results.errors.length) {
  log(`${results.errors.length} measurement(s) failed (listed in results.json "errors")`);
  process.exitCode = 1;
}

// The Socket.IO workload (issue 12) has processes of its own (servers, a client load process):
// bench/socketio/run.mjs, after everything else unless --only leaves it out (--only SIO picks it).
if (!only || only.has('SIO')) runSocketIoWorkload();

function runSocketIoWorkload() {
  log('Socket.IO workload (bench/socketio/run.mjs)');
  const sio = spawnSync(
    process.execPath,
    [
      fileURLToPath(new URL('./socketio/run.mjs', import.meta.url)),
      ...(quick ? ['--quick'] : []),
      '--reps',
      String(reps),
      '--json',
      `${outPrefix}-socketio.json`,
    ],
    { stdio: 'inherit' },
  );
  if (sio.status !== 0) process.exitCode = 1;
}
