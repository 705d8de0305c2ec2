// Conformance, section 12: concurrent receivers: many receives on one channel, in one or two
// instances, get each message exactly once.
import { describe, expect, it } from 'vitest';
import { type Message } from '../support/package.js';
import { sleep, within, expectEmpty, type Suite } from './harness.js';

export function describeConcurrentReceivers({ open, peerOf }: Suite): void {
  describe('concurrent receivers', () => {
    const ids = (messages: Message[]): number[] =>
      messages.map((m) => m.id as number).sort((a, b) => a - b);
    const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

    it('many waiting receives on one channel each get a distinct message', async () => {
      const layer = await open();
      const receives = Array.from({ length: 60 }, () => layer.receive('conf.many'));
      await sleep(20);
      for (let i = 0; i < 60; i++) await layer.send('conf.many', { id: i });
      expect(ids(await within(Promise.all(receives)))).toEqual(range(60));
      await expectEmpty(layer, 'conf.many');
    });

    it('many receives on queued messages each get a distinct message', async () => {
      const layer = await open();
      for (let i = 0; i < 60; i++) await layer.send('conf.many-queued', { id: i });
      const receives = Array.from({ length: 60 }, () => layer.receive('conf.many-queued'));
      expect(ids(await within(Promise.all(receives)))).toEqual(range(60));
      await expectEmpty(layer, 'conf.many-queued');
    });

    it('receives waiting in two instances on one channel share the messages: none twice, none lost', async () => {
      const layer = await open();
      const other = await peerOf(layer);
      const receives = [
        ...Array.from({ length: 30 }, () => layer.receive('conf.shared-many')),
        ...Array.from({ length: 30 }, () => other.receive('conf.shared-many')),
      ];
      await sleep(20);
      for (let i = 0; i < 60; i++)
        await (i % 2 ? other : layer).send('conf.shared-many', { id: i });
      expect(ids(await within(Promise.all(receives)))).toEqual(range(60));
      await expectEmpty(layer, 'conf.shared-many', other);
      await expectEmpty(other, 'conf.shared-many', layer);
    });

    it("receives waiting on many channels at once each get their own channel's messages", async () => {
      const layer = await open();
      const other = await peerOf(layer);
      const channels = Array.from({ length: 40 }, (_, i) => `conf.fan-in-${i}`);
      const local = await layer.newChannel();
      const receives = [...channels, local].map((channel) =>
        Promise.all([layer.receive(channel), layer.receive(channel)]),
      );
      await sleep(20);
      for (const [i, channel] of [...channels, local].entries()) {
        await (i % 2 ? other : layer).send(channel, { channel, n: 1 });
        await (i % 2 ? layer : other).send(channel, { channel, n: 2 });
      }
      const results = await within(Promise.all(receives));
      for (const [i, channel] of [...channels, local].entries()) {
        expect(results[i], channel).toEqual([
          { channel, n: 1 },
          { channel, n: 2 },
        ]);
      }
    });

    it('two instances racing on queued messages and a stream of sends: none twice, none lost', async () => {
      const layer = await open({ capacity: 500 });
      const other = await peerOf(layer);
      for (let i = 0; i < 100; i++) await layer.send('conf.race', { id: i });
      const receives = Array.from({ length: 200 }, (_, i) =>
        (i % 2 ? other : layer).receive('conf.race'),
      );
      for (let i = 100; i < 200; i++) {
        await (i % 2 ? layer : other).send('conf.race', { id: i });
        if (i % 10 === 0) await sleep(1);
      }
      expect(ids(await within(Promise.all(receives)))).toEqual(range(200));
      await expectEmpty(layer, 'conf.race', other);
    });
  });
}
