// Conformance, section 8: flush(): channels and groups emptied, for every instance; waiting
// receives keep working.
import { describe, expect, it } from 'vitest';
import { sleep, within, expectEmpty, fill, type Suite } from './harness.js';

export function describeFlush({ open, peerOf }: Suite): void {
  describe('flush', () => {
    it('empties channels and groups', async () => {
      const layer = await open();
      const local = await layer.newChannel();
      await layer.send('conf.flush-a', { n: 1 });
      await layer.send('conf.flush-a', { n: 2 });
      await layer.send('conf.flush-b', { n: 3 });
      await layer.send(local, { n: 4 });
      await layer.groupAdd('conf-flush', 'conf.flush-member');
      await layer.flush();
      expect(await layer.groupMembers('conf-flush')).toEqual([]);
      await expectEmpty(layer, 'conf.flush-a');
      await expectEmpty(layer, 'conf.flush-b');
      await expectEmpty(layer, local);
      await layer.groupSend('conf-flush', { type: 'after-flush' });
      await expectEmpty(layer, 'conf.flush-member');
      // The layer is fully usable afterwards, including the capacity of flushed channels.
      expect(await fill(layer, 'conf.flush-a', 200)).toBe(100);
    });

    it('flush by one instance empties what the other sees; waiting receives keep working', async () => {
      const layer = await open();
      const other = await peerOf(layer);
      await layer.send('conf.flush-shared', { type: 'flushed' });
      await layer.groupAdd('conf-flush-shared', 'conf.flush-shared-member');
      const waiting = within(layer.receive('conf.flush-waiting'));
      await sleep(20);
      await other.flush();
      await other.send('conf.flush-waiting', { type: 'after-flush' });
      expect(await waiting).toEqual({ type: 'after-flush' });
      await expectEmpty(other, 'conf.flush-shared', layer);
      await other.groupSend('conf-flush-shared', { type: 'after-flush' });
      await expectEmpty(layer, 'conf.flush-shared-member');
    });
  });
}
