// The default RedisConnector: ioredis, loaded lazily (nothing imports ioredis until a
// RedisChannelLayer is constructed), so the package needs it only when Redis is used.
import type { RedisArg, RedisConnection, RedisConnector, RedisHost } from './connection.js';
import { translateConnectionError } from './redis-unavailable.js';

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
