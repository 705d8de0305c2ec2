// The conformance suite against RedisChannelLayer, on a throwaway redis-server. Every layer gets a
// prefix of its own, so tests are isolated; a "peer" is a second instance with the same prefix and
// hosts (another process, as far as Redis can tell). After each test the prefix's keys are deleted.
// Without redis-server the suite is skipped loudly (or fails when CI is set): see support/redis-server.
import { afterAll, beforeAll, describe } from 'vitest';
import { describeConformance } from './conformance.js';
import { RedisChannelLayer, type ChannelLayer, type RedisChannelLayerOptions } from './support/package.js';
import { haveRedisServer, RedisServer } from './support/redis-server.js';

const enabled = haveRedisServer();

describe.skipIf(!enabled)('RedisChannelLayer on redis-server', () => {
  let server: RedisServer | undefined;
  let counter = 0;
  const optionsOf = new WeakMap<ChannelLayer, RedisChannelLayerOptions>();
  const prefixes = new Set<string>();

  beforeAll(async () => {
    server = await RedisServer.start();
  }, 20_000);

  afterAll(async () => {
    await server?.dispose();
  });

  function open(options: RedisChannelLayerOptions): RedisChannelLayer {
    const layer = new RedisChannelLayer(options);
    optionsOf.set(layer, options);
    return layer;
  }

  /** A fresh layer with a prefix of its own ('conf<pid>x<n>:' is never a prefix of another). */
  function makeLayer(options: RedisChannelLayerOptions = {}): RedisChannelLayer {
    const prefix = `conf${process.pid}x${++counter}:`;
    prefixes.add(prefix);
    return open({ ...options, hosts: [server!.url], prefix });
  }

  function peer(layer: ChannelLayer): RedisChannelLayer {
    const options = optionsOf.get(layer);
    if (!options) throw new Error('peer() of a layer this file did not open');
    return open(options);
  }

  /** Deletes the keys the test left (flush() through a fresh layer per prefix). */
  async function cleanup(): Promise<void> {
    for (const prefix of prefixes) {
      const cleaner = new RedisChannelLayer({ hosts: [server!.url], prefix });
      try {
        await cleaner.flush();
      } finally {
        await cleaner.close();
      }
    }
    prefixes.clear();
  }

  describeConformance('RedisChannelLayer', makeLayer, { peer, afterEach: cleanup });
});
