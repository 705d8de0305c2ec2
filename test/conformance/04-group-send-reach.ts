// Conformance, section 4: what groupSend() reports about its reach, releaseChannel(), and the full-
// channel counts in stats().
import { describe, expect, it } from 'vitest';
import { ChannelFull } from '../support/package.js';
import { sleep, within, rejection, errorName, expectEmpty, type Suite } from './harness.js';

export function describeGroupSendReach({ open, peerOf, hooks }: Suite): void {
  describe('groupSend reports its reach; releaseChannel', () => {
    it('groupSend resolves to how many member channels got the message', async () => {
      const layer = await open({ capacity: 1 });
      expect(await layer.groupSend('conf-reach', { type: 'x' })).toBe(0);
      await layer.groupAdd('conf-reach', 'conf.reach-a');
      await layer.groupAdd('conf-reach', 'conf.reach-b');
      await layer.groupAdd('conf-reach', 'conf.reach-c');
      expect(await layer.groupSend('conf-reach', { type: 'first' })).toBe(3);
      await layer.receive('conf.reach-a');
      await layer.receive('conf.reach-b');
      // c is still full (capacity 1): skipped, and not counted.
      expect(await layer.groupSend('conf-reach', { type: 'second' })).toBe(2);
      await layer.groupDiscard('conf-reach', 'conf.reach-a');
      await layer.receive('conf.reach-b');
      expect(await layer.groupSend('conf-reach', { type: 'third' })).toBe(1);
    });

    it('releaseChannel drops queued messages and memberships; a waiting receive rejects with ChannelReleased', async () => {
      const layer = await open();
      const other = await peerOf(layer);
      const channel = await layer.newChannel();
      await layer.groupAdd('conf-release', channel);
      await layer.groupAdd('conf-release', 'conf.release-stays');
      await other.send(channel, { type: 'queued' });
      expect(await other.groupSend('conf-release', { type: 'fan' })).toBe(2);
      await layer.releaseChannel(channel);
      expect(await layer.groupMembers('conf-release')).toEqual(['conf.release-stays']);
      expect(await other.groupSend('conf-release', { type: 'after' })).toBe(1);
      expect(await within(layer.receive('conf.release-stays'))).toEqual({ type: 'fan' });
      // A new channel for the next client; a receive waiting on a released one ends.
      const next = await layer.newChannel();
      const waiting = rejection(() => layer.receive(next), 'receive on a released channel');
      await sleep(10);
      await layer.releaseChannel(next);
      expect(errorName(await waiting)).toBe('ChannelReleased');
      await layer.releaseChannel(next); // twice is harmless
    });

    it("releaseChannel drops only that channel's messages: the instance's other '!' channels keep theirs, in order", async () => {
      const layer = await open();
      const other = await peerOf(layer);
      const [gone, kept] = [await layer.newChannel(), await layer.newChannel()];
      await layer.groupAdd('conf-release-one', gone);
      await layer.groupAdd('conf-release-one', kept);
      const orphanedBefore = layer.stats().messagesOrphaned;
      await other.send(gone, { n: 0 });
      await other.send(kept, { n: 1 });
      expect(await other.groupSend('conf-release-one', { n: 2 })).toBe(2);
      await other.send(gone, { n: 3 });
      await other.send(kept, { n: 4 });
      // Take one of kept's messages first, so what the instance holds for gone has left the queue.
      expect(await within(layer.receive(kept))).toEqual({ n: 1 });
      await layer.releaseChannel(gone);
      expect(await layer.groupMembers('conf-release-one')).toEqual([kept]);
      expect(await other.groupSend('conf-release-one', { n: 5 })).toBe(1);
      await other.send(kept, { n: 6 });
      for (const n of [2, 4, 5, 6]) expect(await within(layer.receive(kept))).toEqual({ n });
      await expectEmpty(other, kept, layer);
      // Its three messages were dropped and counted, wherever they were when it was released.
      await expect
        .poll(() => layer.stats().messagesOrphaned - orphanedBefore, { timeout: 5000 })
        .toBe(3);
    });

    it('stats() counts members skipped as full and sends refused as full', async () => {
      const layer = await open({ capacity: 1 });
      const before = layer.stats();
      await layer.groupAdd('conf-counted', 'conf.counted-a');
      await layer.groupAdd('conf-counted', 'conf.counted-b');
      await layer.send('conf.counted-a', { type: 'fills' });
      expect(await layer.groupSend('conf-counted', { type: 'one' })).toBe(1);
      expect(await layer.groupSend('conf-counted', { type: 'two' })).toBe(0);
      expect(
        await rejection(
          () => layer.send('conf.counted-b', { type: 'x' }),
          'send to a full channel',
        ),
      ).toBeInstanceOf(ChannelFull);
      const after = layer.stats();
      expect(after.deliveriesSkippedFull - before.deliveriesSkippedFull).toBe(3);
      expect(after.sendsRefusedFull - before.sendsRefusedFull).toBe(1);
    });

    it("releaseChannel rejects a channel that is not this instance's '!' channel with TypeError", async () => {
      const layer = await open();
      const other = await peerOf(layer);
      const theirs = await (other === layer ? await open() : other).newChannel();
      for (const channel of ['conf.plain', theirs, 'specific.abc123!def456']) {
        expect(
          await rejection(() => layer.releaseChannel(channel), `releaseChannel(${channel})`),
        ).toBeInstanceOf(TypeError);
      }
    });

    // Issue 14: a server that makes a channel per connection, joins a room, ends each receive
    // loop with an AbortSignal and leaves must end up holding what it held before.
    it.skipIf(!hooks.footprint)('connection churn leaves nothing behind', async () => {
      const layer = await open();
      const other = await peerOf(layer);
      const before = await hooks.footprint!(layer);
      for (let connection = 0; connection < 120; connection++) {
        const channel = await layer.newChannel();
        await layer.groupAdd('conf-churn', channel);
        const controller = new AbortController();
        const receiving = layer
          .receive(channel, { signal: controller.signal })
          .catch((error: unknown) => error);
        if (connection % 3 === 0) {
          expect(
            await other.groupSend('conf-churn', { type: 'chat', connection }),
          ).toBeGreaterThanOrEqual(1);
          expect(await within(receiving)).toEqual({ type: 'chat', connection });
        } else {
          await sleep(1);
          controller.abort();
          expect(errorName(await within(receiving))).toBe('AbortError');
        }
        if (connection % 2) await layer.releaseChannel(channel);
        else await layer.groupDiscard('conf-churn', channel);
      }
      // Aborted receives end asynchronously (Redis: a blocking pop returns when its connection is
      // unblocked), so wait for the footprint to return, under a deadline generous for a loaded
      // machine; a leak never returns and still fails.
      await expect
        .poll(() => hooks.footprint!(layer), { timeout: 10_000, interval: 20 })
        .toEqual(before);
    });
  });
}
