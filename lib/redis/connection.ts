/**
 * The few things the Redis layer needs from a Redis client, behind a small interface so the client
 * is swappable (tests, another library). The default implementation wraps ioredis, loaded lazily:
 * nothing here imports ioredis until a RedisChannelLayer is constructed.
 */

/** A Redis server: a 'redis://[user:password@]host:port[/db]' (or 'rediss://') URL, or its parts. */
export type RedisHost =
  | string
  | {
      host?: string;
      port?: number;
      username?: string;
      password?: string;
      db?: number;
      /** Passed to `tls.connect`; set (even to `{}`) for TLS. */
      tls?: Record<string, unknown>;
    };

export type RedisArg = string | number | Buffer | Uint8Array;

export interface RedisConnection {
  /**
   * Sends one command. Bulk replies come back as Buffers, arrays as arrays, integers as numbers,
   * nil as null. Rejects on a Redis error or when the connection is lost while it is in flight.
   */
  call(command: string, ...args: RedisArg[]): Promise<unknown>;
  /** Closes the connection now; commands in flight reject. */
  close(): void;
}

export interface RedisConnector {
  /**
   * Opens a connection that reconnects by itself after a network error or a server restart.
   * `blocking` connections are used only for blocking commands (BZPOPMIN).
   */
  connect(host: RedisHost, purpose: 'commands' | 'blocking'): RedisConnection;
}

export const DEFAULT_HOST: RedisHost = { host: '127.0.0.1', port: 6379 };

/** 'host:port' (for messages), without credentials. */
export function describeHost(host: RedisHost): string {
  if (typeof host === 'string') {
    try {
      const url = new URL(host);
      return `${url.hostname}:${url.port || 6379}`;
    } catch {
      return '(invalid URL)';
    }
  }
  return `${host.host ?? '127.0.0.1'}:${host.port ?? 6379}`;
}

export function validateHosts(hosts: unknown): RedisHost[] {
  if (hosts === undefined) return [DEFAULT_HOST];
  if (!Array.isArray(hosts) || hosts.length === 0) {
    throw new TypeError('hosts must be a non-empty array of redis:// URLs or {host, port} objects');
  }
  for (const host of hosts) {
    if (typeof host === 'string') {
      let url: URL;
      try {
        url = new URL(host);
      } catch {
        throw new TypeError(`invalid Redis URL ${JSON.stringify(host)}`);
      }
      if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
        throw new TypeError(
          `Redis URL must start with redis:// or rediss://, got ${JSON.stringify(host)}`,
        );
      }
    } else if (typeof host !== 'object' || host === null) {
      throw new TypeError('each host must be a redis:// URL or a {host, port} object');
    }
  }
  return hosts as RedisHost[];
}

interface IoredisClient {
  callBuffer(command: string, ...args: RedisArg[]): Promise<unknown>;
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  disconnect(): void;
  /** The current socket (replaced on every reconnect). */
  stream?: { ref(): unknown; unref(): unknown };
}
type IoredisConstructor = new (...args: unknown[]) => IoredisClient;

let ioredisCache: IoredisConstructor | undefined;

/** Loads ioredis on first use; a clear error if it is not installed. */
export function loadIoredis(load: (id: string) => unknown = require): IoredisConstructor {
  if (ioredisCache && load === require) return ioredisCache;
  let mod: unknown;
  try {
    mod = load('ioredis');
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === 'MODULE_NOT_FOUND' || code === 'ERR_MODULE_NOT_FOUND') {
      throw new Error(
        "RedisChannelLayer needs the 'ioredis' package (version 5), which is not installed: " +
          'run `npm install ioredis`',
        { cause: error },
      );
    }
    throw error;
  }
  const ctor = ((mod as { default?: unknown }).default ?? mod) as IoredisConstructor;
  if (typeof ctor !== 'function')
    throw new Error("the 'ioredis' module does not export a client class");
  if (load === require) ioredisCache = ctor;
  return ctor;
}

/**
 * ioredis with settings for a channel layer: a command in flight when the connection drops fails
 * at once (no silent resend), commands sent while reconnecting fail after the next failed attempt,
 * and the client keeps reconnecting in the background (backing off to 2 s) until closed.
 */
export class IoredisConnector implements RedisConnector {
  private readonly Redis: IoredisConstructor;

  constructor(load?: (id: string) => unknown) {
    this.Redis = loadIoredis(load);
  }

  connect(host: RedisHost, purpose: 'commands' | 'blocking'): RedisConnection {
    const options = {
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      enableReadyCheck: true,
      retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
      connectionName: purpose === 'blocking' ? 'shm-channels:receive' : 'shm-channels',
    };
    const client =
      typeof host === 'string'
        ? new this.Redis(host, options)
        : new this.Redis({ ...host, ...options });
    // Connection errors surface on the commands that fail; without a listener ioredis logs them.
    client.on('error', () => {});
    // The socket keeps the process alive only while a command is in flight (a blocked BZPOPMIN
    // is a waiting receive): an idle layer never does, as on every other backend.
    let inFlight = 0;
    const applyRef = (): void => {
      if (inFlight > 0) client.stream?.ref();
      else client.stream?.unref();
    };
    client.on('connect', applyRef);
    applyRef();
    return {
      call: (command, ...args) => {
        if (inFlight++ === 0) applyRef();
        return client
          .callBuffer(command, ...args)
          .catch((error: unknown) => {
            throw translateConnectionError(error, host);
          })
          .finally(() => {
            if (--inFlight === 0) applyRef();
          });
      },
      close: () => client.disconnect(),
    };
  }
}

/** Redis could not be reached, or the connection dropped while a command was in flight. */
export class RedisUnavailable extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RedisUnavailable';
  }
}

/** ioredis's connection-loss errors as RedisUnavailable; Redis's own errors unchanged. */
export function translateConnectionError(error: unknown, host: RedisHost): unknown {
  if (!(error instanceof Error)) return error;
  if (
    error.name === 'MaxRetriesPerRequestError' ||
    error.message === 'Connection is closed.' ||
    /ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|ENOTFOUND|EHOSTUNREACH/.test(error.message) ||
    /Stream isn't writeable/.test(error.message)
  ) {
    return new RedisUnavailable(`Redis at ${describeHost(host)} is unavailable: ${error.message}`, {
      cause: error,
    });
  }
  return error;
}
