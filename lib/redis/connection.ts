/**
 * The few things the Redis layer needs from a Redis client, behind a small interface so the client
 * is swappable (tests, another library); the default implementation is ioredis-connector.ts.
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
