// A throwaway redis-server for the tests and the bench: loopback only, a free port, no
// persistence (`--save '' --appendonly no`), a temporary working directory.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

/** A binary on the PATH or in the usual system directories. */
export function findBinary(name) {
  const dirs = [
    ...(process.env.PATH ?? '').split(delimiter),
    '/usr/bin',
    '/usr/local/bin',
    '/usr/sbin',
  ];
  for (const dir of dirs) if (dir && existsSync(join(dir, name))) return join(dir, name);
  return undefined;
}

export function findRedisServer() {
  return process.env.REDIS_SERVER_BIN ?? findBinary('redis-server');
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {any} */ (server.address());
      server.close(() => resolve(port));
    });
  });
}

/** True once the server on `port` answers PING. */
function ping(port) {
  return new Promise((resolve) => {
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
}

export class RedisServer {
  constructor(binary, port) {
    this.binary = binary;
    this.port = port;
    this.dir = mkdtempSync(join(tmpdir(), 'shm-channels-redis-'));
    this.child = undefined;
  }

  /** Starts a server on a free loopback port (or `port`) and waits until it answers. */
  static async start(port) {
    const binary = findRedisServer();
    if (!binary)
      throw new Error(
        'redis-server not found: install it (Debian: apt-get install redis-server) or set REDIS_SERVER_BIN',
      );
    const server = new RedisServer(binary, port ?? (await freePort()));
    await server.launch();
    return server;
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  get host() {
    return { host: '127.0.0.1', port: this.port };
  }

  get pid() {
    return this.child?.pid;
  }

  get running() {
    return this.child !== undefined;
  }

  launch() {
    const args = [
      '--port',
      String(this.port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      this.dir,
      '--daemonize',
      'no',
      '--logfile',
      '',
      '--loglevel',
      'warning',
    ];
    const child = spawn(this.binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    return new Promise((resolve, reject) => {
      let output = '';
      let settled = false;
      const timer = setTimeout(
        () => fail(new Error(`redis-server did not start in 10 s:\n${output}`)),
        10_000,
      );
      const fail = (error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        child.kill('SIGKILL');
        if (this.child === child) this.child = undefined;
        reject(error);
      };
      child.stdout.on('data', (chunk) => (output += chunk));
      child.stderr.on('data', (chunk) => (output += chunk));
      child.on('error', fail);
      child.on('exit', (code, signal) => {
        if (this.child === child) this.child = undefined;
        fail(new Error(`redis-server exited (${code ?? signal}):\n${output}`));
      });
      (async () => {
        while (!settled) {
          if (await ping(this.port)) {
            settled = true;
            clearTimeout(timer);
            resolve();
            return;
          }
          await new Promise((r) => setTimeout(r, 50));
        }
      })();
    });
  }

  /** Stops the server (SIGTERM, SIGKILL after 5 s); its data is gone, its directory kept. */
  async stop() {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise((resolve) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      child.kill('SIGTERM');
    });
  }

  /** Stops and starts again on the same port (empty, as there is no persistence). */
  async restart() {
    await this.stop();
    await this.launch();
  }

  /** Stops the server and removes its directory. Safe to call twice. */
  async dispose() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Synchronous last resort (a process 'exit' handler). */
  killNow() {
    try {
      this.child?.kill('SIGKILL');
    } catch {}
    rmSync(this.dir, { recursive: true, force: true });
  }
}
