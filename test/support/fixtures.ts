// The fixtures the test files share: shm layers with unique names that are destroyed after each
// test, Redis layers with unique prefixes that are closed after each test, child processes that are killed after each test, Node children running an ES module
// against the built package, and the throwaway redis-server (support/redis-server.ts). Each fixture
// registers its own afterEach when it is created, so call them at the top of a test file.
import {
  type ChildProcess,
  spawn,
  spawnSync,
  type SpawnSyncReturns,
  type StdioOptions,
} from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach } from 'vitest';
import {
  PACKAGE_ESM,
  ROOT,
  RedisChannelLayer,
  type RedisChannelLayerOptions,
  ShmChannelLayer,
  type ShmChannelLayerOptions,
} from './package.js';
import type { RedisServer } from './redis-server.js';

export { freePort, haveRedisServer, RedisServer } from './redis-server.js';

// ---------------------------------------------------------------------------------------------
// Shared-memory layers

export interface ShmLayers {
  /** A layer name no other test (or test process) uses; destroyed after the test. */
  name(): string;
  /**
   * Opens a ShmChannelLayer with the fixture's defaults under `options` (a fresh name() unless
   * `options.name` is given); it is closed, and its segment destroyed, after the test.
   */
  open(options?: ShmChannelLayerOptions): ShmChannelLayer;
  /** Destroys `name` after the test too (a layer opened elsewhere, e.g. by a child). */
  destroyAfter(name: string): string;
}

/**
 * Layers of one test file. After each test every layer it opened is closed, then every name it
 * used is destroyed, passed or failed. `ignoreCloseErrors`: a test may leave layers whose
 * segment was removed or damaged on purpose; their close() failing is not a finding.
 */
export function shmLayers(
  prefix: string,
  defaults: ShmChannelLayerOptions = {},
  { ignoreCloseErrors = false }: { ignoreCloseErrors?: boolean } = {},
): ShmLayers {
  const names = new Set<string>();
  const layers: ShmChannelLayer[] = [];
  let counter = 0;
  afterEach(async () => {
    try {
      for (const layer of layers.splice(0)) {
        if (ignoreCloseErrors) await layer.close().catch(() => {});
        else await layer.close();
      }
    } finally {
      for (const name of names) ShmChannelLayer.destroy(name);
      names.clear();
    }
  });
  const fixture: ShmLayers = {
    name: () => fixture.destroyAfter(`${prefix}-${process.pid}-${++counter}`),
    open(options = {}) {
      const layer = new ShmChannelLayer({
        ...defaults,
        ...options,
        name: options.name ?? fixture.name(),
      });
      layers.push(layer);
      names.add(layer.name);
      return layer;
    },
    destroyAfter(name) {
      names.add(name);
      return name;
    },
  };
  return fixture;
}

// ---------------------------------------------------------------------------------------------
// Redis layers

export interface RedisLayers {
  /** A key prefix no other test (or test process) uses. */
  prefix(): string;
  /** A RedisChannelLayer closed after the test. */
  open(options: RedisChannelLayerOptions): RedisChannelLayer;
  /** Closes `layer` (e.g. a subclass instance) after the test. */
  track<T extends RedisChannelLayer>(layer: T): T;
  /** Disposes `server` after the test, once its layers are closed. */
  disposeAfter(server: RedisServer): RedisServer;
}

/** Redis layers of one test file: after each test, its layers are closed, then its servers go. */
export function redisLayers(): RedisLayers {
  const layers: RedisChannelLayer[] = [];
  const servers: RedisServer[] = [];
  let counter = 0;
  afterEach(async () => {
    try {
      await Promise.all(layers.splice(0).map((layer) => layer.close()));
    } finally {
      for (const server of servers.splice(0)) await server.dispose();
    }
  });
  const fixture: RedisLayers = {
    prefix: () => `t${process.pid}x${Date.now().toString(36)}x${counter++}:`,
    open: (options) => fixture.track(new RedisChannelLayer(options)),
    track(layer) {
      layers.push(layer);
      return layer;
    },
    disposeAfter(server) {
      servers.push(server);
      return server;
    },
  };
  return fixture;
}

// ---------------------------------------------------------------------------------------------
// Child processes

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Resolves when `child` has exited (at once if it already has). */
export function waitExit(child: ChildProcess): Promise<Exit> {
  if (exited(child)) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((done) => child.once('exit', (code, signal) => done({ code, signal })));
}

export interface Children {
  /** Kills `child` after the test unless it has exited by then. */
  track<T extends ChildProcess>(child: T): T;
  /** Process ids (e.g. cluster workers) to SIGKILL after the test; forget() when they died. */
  trackPid(pid: number): void;
  forget(pid: number): void;
}

/**
 * Child processes of one test file: after each test, passed or failed, every one still running
 * is continued (it may be stopped on purpose) and SIGKILLed, and waited for up to 5 s.
 */
export function childProcesses(): Children {
  const children = new Set<ChildProcess>();
  const pids = new Set<number>();
  afterEach(async () => {
    const waits: Promise<unknown>[] = [];
    for (const child of children) {
      if (exited(child)) continue;
      child.kill('SIGCONT');
      child.kill('SIGKILL');
      waits.push(Promise.race([waitExit(child), sleep(5000)]));
    }
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    }
    await Promise.all(waits);
    children.clear();
    pids.clear();
  });
  return {
    track(child) {
      children.add(child);
      return child;
    },
    trackPid: (pid) => void pids.add(pid),
    forget: (pid) => void pids.delete(pid),
  };
}

/** `code` as an ES module that first imports `imports` from the built package. */
function moduleSource(code: string, imports: string[]): string {
  const header = imports.length
    ? `import { ${imports.join(', ')} } from ${JSON.stringify(PACKAGE_ESM)};\n`
    : '';
  return header + code;
}

/**
 * Runs `code` as an ES module in a child Node process and waits for it; `imports` (default
 * `ShmChannelLayer`) are imported from the built package first.
 */
export function runModule(
  code: string,
  env: Record<string, string> = {},
  {
    imports = ['ShmChannelLayer'],
    timeout = 20_000,
  }: { imports?: string[]; timeout?: number } = {},
): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, ['--input-type=module', '-e', moduleSource(code, imports)], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout,
  });
}

/** Starts `code` as runModule() does, without waiting: the caller owns (or tracks) the child. */
export function spawnModule(
  code: string,
  env: Record<string, string> = {},
  {
    imports = ['ShmChannelLayer'],
    stdio = ['ignore', 'pipe', 'pipe'],
  }: { imports?: string[]; stdio?: StdioOptions } = {},
): ChildProcess {
  return spawn(process.execPath, ['--input-type=module', '-e', moduleSource(code, imports)], {
    env: { ...process.env, ...env },
    stdio,
  });
}

/** Where the child scripts live: test/workers/, ES modules importing 'shm-channels' itself. */
export const WORKERS = join(ROOT, 'test', 'workers');

/**
 * Runs test/workers/`script` with `args` in a child Node process and waits for it (SIGKILLed
 * after `timeout` ms).
 */
export function runWorker(
  script: string,
  args: string[] = [],
  env: Record<string, string> = {},
  { timeout = 20_000, flags = [] }: { timeout?: number; flags?: string[] } = {},
): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [...flags, join(WORKERS, script), ...args], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout,
  });
}

/** Starts test/workers/`script` as runWorker() does, without waiting for it. */
export function startWorker(
  script: string,
  args: string[] = [],
  env: Record<string, string> = {},
  {
    stdio = ['ignore', 'pipe', 'pipe'],
    flags = [],
  }: { stdio?: StdioOptions; flags?: string[] } = {},
): ChildProcess {
  return spawn(process.execPath, [...flags, join(WORKERS, script), ...args], {
    env: { ...process.env, ...env },
    stdio,
  });
}

/**
 * Gathers `child`'s stdout and stderr until it exits; SIGKILLs it after `ms` (then `killed`).
 */
export function outputOf(
  child: ChildProcess,
  ms = 10_000,
): Promise<{
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
  killed: boolean;
}> {
  return new Promise((resolve, reject) => {
    let output = '';
    let killed = false;
    child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => {
      killed = true;
      child.kill('SIGKILL');
    }, ms);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output, killed });
    });
  });
}
