// The conformance suite against RedisChannelLayer, on a throwaway redis-server. Every layer gets a
// prefix of its own, so tests are isolated; a "peer" is a second instance with the same prefix and
// hosts (another process, as far as Redis can tell). After each test the prefix's keys are deleted.
// Without redis-server the suite is skipped loudly (or fails when CI is set): see support/redis-server.
import { afterAll, beforeAll, describe } from 'vitest';
import { describeConformance } from './conformance/index.js';
import {
  PACKAGE_ESM,
  RedisChannelLayer,
  type ChannelLayer,
  type RedisChannelLayerOptions,
} from './support/package.js';
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

  /** Keys under the layer's prefix, and the layer's own maps (private, read for the churn test). */
  async function footprint(layer: ChannelLayer): Promise<Record<string, number>> {
    const inner = layer as unknown as {
      prefix: string;
      command(index: number): { call(...args: unknown[]): Promise<unknown> };
      pending: { size: number; signalCount: number };
      keyChannels: Map<string, unknown>;
      pollers: Map<string, unknown>;
      buffers: Map<string, unknown>;
      localGroups: Map<string, unknown>;
      blocked: Map<string, unknown>;
    };
    // Receive loops of cancelled receives end once their BZPOPMIN is unblocked.
    for (let i = 0; i < 100 && inner.pollers.size > 0; i++)
      await new Promise((resolve) => setTimeout(resolve, 10));
    const keys = (await inner
      .command(0)
      .call('KEYS', `${inner.prefix.replace(/[*?[\]\\]/g, '\\$&')}*`)) as unknown[];
    return {
      // Not the heartbeat key a layer keeps from its first newChannel() on (one per process).
      keys: keys.filter((key) => !String(key).includes(':alive:')).length,
      pending: inner.pending.size,
      signals: inner.pending.signalCount,
      keyChannels: inner.keyChannels.size,
      pollers: inner.pollers.size,
      buffers: inner.buffers.size,
      localGroups: inner.localGroups.size,
      blocked: inner.blocked.size,
    };
  }

  function childLayer(): string {
    const prefix = `conf${process.pid}x${++counter}:`;
    prefixes.add(prefix);
    return `import { RedisChannelLayer } from ${JSON.stringify(PACKAGE_ESM)};
const layer = new RedisChannelLayer({ hosts: [${JSON.stringify(server!.url)}], prefix: ${JSON.stringify(prefix)} });`;
  }

  describeConformance('RedisChannelLayer', makeLayer, {
    peer,
    afterEach: cleanup,
    footprint,
    childLayer,
  });
});
