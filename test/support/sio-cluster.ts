// Socket.IO servers with the shm-channels adapter in real node:cluster workers
// (test/workers/sio-server.mjs), driven over IPC, and real socket.io-client clients
// (websocket transport) connected to them. Helpers wait for conditions; nothing sleeps and hopes.
import cluster, { type Worker } from 'node:cluster';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { io as connectClient, type Socket as ClientSocket } from 'socket.io-client';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface ServerOptions {
  /** 'shm:<name>' or 'redis:<url>|<prefix>'. */
  layer: string;
  name: string;
  /** Connection-state recovery window (ms); off when unset. */
  recoveryMs?: number;
  adapter?: Record<string, unknown>;
  groupExpiry?: number;
  /** Capacity of the adapter's channels in its shm layer. */
  channelCapacity?: number;
}

export class SioServer {
  private nextId = 1;
  private readonly waiting = new Map<
    number,
    { resolve(v: unknown): void; reject(e: Error): void }
  >();
  readonly exited: Promise<{ code: number | null; signal: string | null }>;

  private constructor(
    readonly name: string,
    private readonly worker: Worker,
    readonly port: number,
    readonly pid: number,
  ) {
    worker.on(
      'message',
      (message: { id?: number; ok?: boolean; result?: unknown; error?: string }) => {
        if (typeof message?.id !== 'number') return;
        const waiter = this.waiting.get(message.id);
        if (!waiter) return;
        this.waiting.delete(message.id);
        if (message.ok) waiter.resolve(message.result);
        else waiter.reject(new Error(`${name}: ${message.error}`));
      },
    );
    this.exited = new Promise((resolve) => {
      worker.once('exit', (code, signal) => {
        for (const waiter of this.waiting.values())
          waiter.reject(new Error(`${name} exited (${code ?? signal})`));
        this.waiting.clear();
        resolve({ code, signal });
      });
    });
  }

  static async start(options: ServerOptions): Promise<SioServer> {
    cluster.setupPrimary({ exec: join(root, 'test', 'workers', 'sio-server.mjs'), silent: false });
    const worker = cluster.fork({
      SHMCH_ROOT: root,
      SIO_LAYER: options.layer,
      SIO_NAME: options.name,
      SIO_ADAPTER: JSON.stringify(options.adapter ?? {}),
      ...(options.recoveryMs ? { SIO_RECOVERY: String(options.recoveryMs) } : {}),
      ...(options.groupExpiry ? { SIO_GROUP_EXPIRY: String(options.groupExpiry) } : {}),
      ...(options.channelCapacity ? { SIO_CHANNEL_CAPACITY: String(options.channelCapacity) } : {}),
    });
    const { port, pid } = await new Promise<{ port: number; pid: number }>((resolve, reject) => {
      const onMessage = (message: { ready?: boolean; port: number; pid: number }) => {
        if (!message?.ready) return;
        worker.off('message', onMessage);
        resolve(message);
      };
      worker.on('message', onMessage);
      worker.once('exit', (code, signal) =>
        reject(new Error(`${options.name} exited before it was ready (${code ?? signal})`)),
      );
    });
    return new SioServer(options.name, worker, port, pid);
  }

  call<T = unknown>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.send({ id, op, ...args });
    });
  }

  signal(signal: NodeJS.Signals): void {
    process.kill(this.pid, signal);
  }

  async stop(): Promise<void> {
    if (this.worker.isDead()) return;
    try {
      await Promise.race([this.call('close'), this.exited]);
    } catch {
      // it died on its way out
    }
    const timer = setTimeout(() => this.worker.isDead() || this.worker.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(timer);
  }
}

/** A socket.io-client socket with every event it got recorded. */
export class Client {
  readonly events: Array<{ event: string; args: unknown[] }> = [];

  /** `nsp` is the namespace it connected to (socket.io-client keeps its own copy private). */
  constructor(
    readonly socket: ClientSocket,
    readonly nsp = '/',
  ) {
    socket.onAny((event: string, ...args: unknown[]) => this.events.push({ event, args }));
  }

  static async connect(
    server: SioServer,
    nsp = '/',
    options: {
      auth?: Record<string, unknown>;
      ackWith?: (event: string, args: unknown[]) => unknown;
    } = {},
  ): Promise<Client> {
    const socket = connectClient(`http://127.0.0.1:${server.port}${nsp}`, {
      transports: ['websocket'],
      forceNew: true,
      reconnection: false,
      auth: options.auth,
    });
    const client = new Client(socket, nsp);
    if (options.ackWith) {
      socket.onAny((event: string, ...args: unknown[]) => {
        const ack = args[args.length - 1];
        if (typeof ack === 'function') ack(options.ackWith!(event, args.slice(0, -1)));
      });
    }
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('connect_error', (error) => reject(error));
    });
    return client;
  }

  /** Arguments of every `event` received so far. */
  got(event: string): unknown[][] {
    return this.events
      .filter((e) => e.event === event)
      .map((e) => e.args.filter((a) => typeof a !== 'function'));
  }

  emitWithAck<T = unknown>(event: string, ...args: unknown[]): Promise<T> {
    return this.socket.timeout(10_000).emitWithAck(event, ...args) as Promise<T>;
  }

  join(...rooms: string[]): Promise<unknown> {
    return this.emitWithAck('join', rooms);
  }

  close(): void {
    this.socket.disconnect();
  }
}

/** Waits until `condition()` is true (polling), failing with `what` after `ms`. */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  what: string,
  ms = 10_000,
): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
