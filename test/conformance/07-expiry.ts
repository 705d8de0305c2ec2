// Conformance, section 7: expiry: messages older than expiry are never delivered; memberships older
// than groupExpiry are dropped.
import { describe, expect, it } from 'vitest';
import { ChannelFull } from '../support/package.js';
import { sleepUntil, within, rejection, expectEmpty, type Suite } from './harness.js';

export function describeExpiry({ open, peerOf }: Suite): void {
  describe('expiry', () => {
    it('never delivers a message older than expiry, and expired messages do not count against capacity', async () => {
      const layer = await open({ expiry: 1, capacity: 3 });
      const start = Date.now();
      await layer.send('conf.exp', { type: 'old', n: 1 });
      await layer.send('conf.exp', { type: 'old', n: 2 });
      await layer.groupAdd('conf-exp', 'conf.exp-member');
      await layer.groupSend('conf-exp', { type: 'old-group' });
      await sleepUntil(start + 600);
      await layer.send('conf.exp', { type: 'young' });
      expect(await rejection(() => layer.send('conf.exp', { type: 'overflow' }))).toBeInstanceOf(
        ChannelFull,
      );
      await sleepUntil(start + 1300);
      // The two old messages expired: they free their places, 'young' (0.7 s old) still counts.
      await layer.send('conf.exp', { type: 'new', n: 1 });
      await layer.send('conf.exp', { type: 'new', n: 2 });
      expect(await rejection(() => layer.send('conf.exp', { type: 'overflow' }))).toBeInstanceOf(
        ChannelFull,
      );
      expect(await within(layer.receive('conf.exp'))).toEqual({ type: 'young' });
      expect(await within(layer.receive('conf.exp'))).toEqual({ type: 'new', n: 1 });
      expect(await within(layer.receive('conf.exp'))).toEqual({ type: 'new', n: 2 });
      await expectEmpty(layer, 'conf.exp-member');
    });

    it('drops a group membership older than groupExpiry; groupAdd renews it', async () => {
      const layer = await open({ groupExpiry: 1 });
      const start = Date.now();
      await layer.groupAdd('conf-gexp', 'conf.gexp-stale');
      await layer.groupAdd('conf-gexp', 'conf.gexp-renewed');
      await layer.groupSend('conf-gexp', { type: 'early' });
      expect(await within(layer.receive('conf.gexp-stale'))).toEqual({ type: 'early' });
      expect(await within(layer.receive('conf.gexp-renewed'))).toEqual({ type: 'early' });
      await sleepUntil(start + 600);
      await layer.groupAdd('conf-gexp', 'conf.gexp-renewed');
      await layer.groupAdd('conf-gexp', 'conf.gexp-late');
      await sleepUntil(start + 1300);
      expect((await layer.groupMembers('conf-gexp')).sort()).toEqual([
        'conf.gexp-late',
        'conf.gexp-renewed',
      ]);
      await layer.groupSend('conf-gexp', { type: 'late' });
      expect(await within(layer.receive('conf.gexp-renewed'))).toEqual({ type: 'late' });
      expect(await within(layer.receive('conf.gexp-late'))).toEqual({ type: 'late' });
      await expectEmpty(layer, 'conf.gexp-stale');
    });

    it('groupMembers leaves out a membership older than groupExpiry, seen from another instance too', async () => {
      const layer = await open({ groupExpiry: 1 });
      const other = await peerOf(layer);
      const start = Date.now();
      await layer.groupAdd('conf-gexp-list', 'conf.gexp-list-old');
      expect(await other.groupMembers('conf-gexp-list')).toEqual(['conf.gexp-list-old']);
      await sleepUntil(start + 1300);
      expect(await other.groupMembers('conf-gexp-list')).toEqual([]);
      expect(await layer.groupMembers('conf-gexp-list')).toEqual([]);
      // A later groupAdd makes it a member again.
      await other.groupAdd('conf-gexp-list', 'conf.gexp-list-old');
      expect(await layer.groupMembers('conf-gexp-list')).toEqual(['conf.gexp-list-old']);
    });
  });
}
