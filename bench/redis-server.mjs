// A throwaway redis-server for the bench: 127.0.0.1, a free port, no persistence
// (`--save '' --appendonly no`), a temporary directory. Started and stopped by bench/run.mjs.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

export function findRedisServer() {
  if (process.env.REDIS_SERVER_BIN) return process.env.REDIS_SERVER_BIN;
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/bin', '/usr/local/bin', '/usr/sbin'];
  for (const dir of dirs) if (dir && existsSync(join(dir, 'redis-server'))) return join(dir, 'redis-server');
  return undefined;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export class RedisServer {
  constructor(binary, port) {
    this.binary = binary;
    this.port = port;
    this.dir = mkdtempSync(join(tmpdir(), 'shm-channels-bench-redis-'));
    this.child = undefined;
    this.version = undefined;
  }

  static async start() {
    const binary = findRedisServer();
    if (!binary) throw new Error('redis-server not found (install it, or set REDIS_SERVER_BIN, or use --backends without redis)');
    const server = new RedisServer(binary, await freePort());
    await server.launch();
    return server;
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  get pid() {
    return this.child?.pid;
  }

  launch() {
    const args = [
      '--port', String(this.port),
      '--bind', '127.0.0.1',
      '--save', '',
      '--appendonly', 'no',
      '--dir', this.dir,
      '--daemonize', 'no',
      '--logfile', '',
      '--loglevel', 'warning',
    ];
    const child = spawn(this.binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    return new Promise((resolve, reject) => {
      let output = '';
      let settled = false;
      const timer = setTimeout(() => fail(new Error(`redis-server did not start in 10 s:\n${output}`)), 10_000);
      const fail = (error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        child.kill('SIGKILL');
        this.child = undefined;
        reject(error);
      };
      // With --loglevel warning nothing announces readiness: poll the port with PING.
      const probe = async () => {
        while (!settled) {
          if (await ping(this.port)) {
            settled = true;
            clearTimeout(timer);
            resolve();
            return;
          }
          await new Promise((r) => setTimeout(r, 50));
        }
      };
      child.stdout.on('data', (chunk) => (output += chunk));
      child.stderr.on('data', (chunk) => (output += chunk));
      child.on('error', fail);
      child.on('exit', (code, signal) => {
        if (this.child === child) this.child = undefined;
        fail(new Error(`redis-server exited (${code ?? signal}):\n${output}`));
      });
      probe();
    });
  }

  /** SIGTERM, SIGKILL after 3 s; removes the directory. Safe to call twice. */
  async stop() {
    const child = this.child;
    this.child = undefined;
    if (child && child.exitCode === null && child.signalCode === null) {
      await new Promise((resolve) => {
        const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
        child.once('exit', () => {
          clearTimeout(timer);
          resolve();
        });
        child.kill('SIGTERM');
      });
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Synchronous last resort (process 'exit' handler). */
  killNow() {
    try {
      this.child?.kill('SIGKILL');
    } catch {}
    try {
      rmSync(this.dir, { recursive: true, force: true });
    } catch {}
  }
}

function ping(port) {
  return new Promise((resolve) => {
    import('node:net').then(({ connect }) => {
      const socket = connect(port, '127.0.0.1');
      const done = (ok) => {
        socket.destroy();
        resolve(ok);
      };
      socket.setTimeout(500, () => done(false));
      socket.on('error', () => done(false));
      socket.on('connect', () => socket.write('PING\r\n'));
      socket.on('data', (d) => done(d.toString().startsWith('+PONG')));
    });
  });
}

/** A few fields of INFO (memory, server) of the server at `url`, through ioredis. */
export async function redisInfo(url) {
  const { default: Redis } = await import('ioredis');
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await client.connect();
    const text = await client.info();
    const fields = {};
    for (const line of text.split('\r\n')) {
      const at = line.indexOf(':');
      if (at > 0) fields[line.slice(0, at)] = line.slice(at + 1);
    }
    return {
      version: fields.redis_version,
      usedMemory: Number(fields.used_memory),
      usedMemoryRss: Number(fields.used_memory_rss),
      usedMemoryPeak: Number(fields.used_memory_peak),
      keys: Number((fields.db0 ?? '').match(/keys=(\d+)/)?.[1] ?? 0),
    };
  } finally {
    client.disconnect();
  }
}

/** FLUSHALL (between measurements). */
export async function redisFlushAll(url) {
  const { default: Redis } = await import('ioredis');
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await client.connect();
    await client.flushall();
  } finally {
    client.disconnect();
  }
}
