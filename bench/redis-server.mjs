// The bench's redis-server: the shared throwaway launcher (scripts/redis-server.mjs), plus the
// INFO and FLUSHALL calls the bench makes between measurements.
export { RedisServer } from '../scripts/redis-server.mjs';

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
