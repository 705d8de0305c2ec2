import { describeHost, type RedisHost } from './connection.js';

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
