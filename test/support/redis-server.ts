/**
 * Starts throwaway redis-server processes for the tests: loopback only, a free port, no
 * persistence (`--save '' --appendonly no`), a temporary working directory.
 *
 * Without a `redis-server` binary the Redis tests are skipped with a loud message, unless CI is
 * set: then they fail, so a CI image without Redis cannot pass silently.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

export function findBinary(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  for (const dir of ['/usr/bin', '/usr/local/bin', '/usr/sbin']) {
    if (existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

const REDIS_SERVER = process.env.REDIS_SERVER_BIN ?? findBinary('redis-server');

/**
 * True when redis-server is installed. Missing: throws under CI, else warns loudly and returns
 * false (use with `describe.skipIf(!haveRedisServer())`).
 */
export function haveRedisServer(): boolean {
  if (REDIS_SERVER && existsSync(REDIS_SERVER)) return true;
  if (process.env.CI) {
    throw new Error('redis-server is not installed and CI is set: install it (Debian: apt-get install redis-server)');
  }
  console.warn(
    '\n' +
      '************************************************************************\n' +
      '*  redis-server NOT FOUND: the Redis channel-layer tests are SKIPPED.  *\n' +
      '*  Install it (Debian: apt-get install redis-server) to run them.      *\n' +
      '************************************************************************\n',
  );
  return false;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export class RedisServer {
  private child: ChildProcess | undefined;
  private readonly dir = mkdtempSync(join(tmpdir(), 'shm-channels-redis-'));

  private constructor(readonly port: number) {}

  /** Starts a server on a free loopback port (or `port`) and waits until it accepts connections. */
  static async start(port?: number): Promise<RedisServer> {
    const server = new RedisServer(port ?? (await freePort()));
    await server.launch();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get host(): { host: string; port: number } {
    return { host: '127.0.0.1', port: this.port };
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  private launch(): Promise<void> {
    if (!REDIS_SERVER) throw new Error('redis-server is not installed');
    const args = [
      '--port', String(this.port),
      '--bind', '127.0.0.1',
      '--save', '',
      '--appendonly', 'no',
      '--dir', this.dir,
      '--daemonize', 'no',
      '--logfile', '',
      '--loglevel', 'notice',
    ];
    const child = spawn(REDIS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    return new Promise<void>((resolve, reject) => {
      let output = '';
      const timer = setTimeout(() => fail(new Error(`redis-server did not start in 10 s:\n${output}`)), 10_000);
      const fail = (error: Error): void => {
        clearTimeout(timer);
        child.kill('SIGKILL');
        this.child = undefined;
        reject(error);
      };
      const onData = (chunk: Buffer): void => {
        output += chunk.toString();
        if (output.includes('Ready to accept connections')) {
          clearTimeout(timer);
          child.stdout!.off('data', onData);
          child.stdout!.resume();
          resolve();
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.on('error', fail);
      child.on('exit', (code, signal) => {
        if (this.child === child) this.child = undefined;
        if (!output.includes('Ready to accept connections')) {
          fail(new Error(`redis-server exited (${code ?? signal}) before it was ready:\n${output}`));
        }
      });
    });
  }

  /** Stops the server (SIGTERM, then SIGKILL after 5 s); the data is gone. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = undefined;
    await new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      child.kill('SIGTERM');
    });
  }

  /** Stops and starts again on the same port (empty, as there is no persistence). */
  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }

  /** Stops the server and removes its directory. */
  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
