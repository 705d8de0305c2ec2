// Conformance, section 14: close(): waiting receives and later calls reject, it is idempotent, and
// other instances keep working and lose nothing.
import { describe, expect, it } from 'vitest';
import { LayerClosed } from '../support/package.js';
import { SETTLE_MS, sleep, within, rejection, type Suite } from './harness.js';

export function describeClose({ open, peerOf, hooks }: Suite): void {
  describe('close', () => {
    it('rejects waiting receives', async () => {
      const layer = await open();
      const local = await layer.newChannel();
      const plain = rejection(() => layer.receive('conf.closing'), 'receive during close');
      const mine = rejection(() => layer.receive(local), 'receive on a local channel during close');
      await sleep(20);
      await within(layer.close(), SETTLE_MS, 'close()');
      expect(await plain).toBeInstanceOf(LayerClosed);
      expect(await mine).toBeInstanceOf(LayerClosed);
    });

    it('makes every later call reject', async () => {
      const layer = await open();
      const local = await layer.newChannel();
      await layer.send('conf.closed', { type: 'before' });
      await layer.close();
      const calls: Array<[string, () => unknown]> = [
        ['send', () => layer.send('conf.closed', { type: 'x' })],
        ['receive', () => layer.receive('conf.closed')],
        ['receive(local)', () => layer.receive(local)],
        ['newChannel', () => layer.newChannel()],
        ['groupAdd', () => layer.groupAdd('conf-closed', 'conf.closed')],
        ['groupDiscard', () => layer.groupDiscard('conf-closed', 'conf.closed')],
        ['groupSend', () => layer.groupSend('conf-closed', { type: 'x' })],
        ['groupMembers', () => layer.groupMembers('conf-closed')],
        ['flush', () => layer.flush()],
      ];
      for (const [what, call] of calls) {
        expect(await rejection(call, `${what} after close`), what).toBeInstanceOf(LayerClosed);
      }
    });

    it('is idempotent', async () => {
      const layer = await open();
      await layer.close();
      await expect(layer.close()).resolves.toBeUndefined();
      await expect(Promise.all([layer.close(), layer.close()])).resolves.toBeDefined();
      const fresh = await open();
      await expect(Promise.all([fresh.close(), fresh.close()])).resolves.toBeDefined();
    });

    describe.skipIf(!hooks.peer)('with two instances', () => {
      it('closing one instance leaves the other working, with the messages it holds', async () => {
        const layer = await open();
        const other = await peerOf(layer);
        await layer.send('conf.survivor', { type: 'kept' });
        const waiting = within(other.receive('conf.survivor-wait'));
        await sleep(20);
        await layer.close();
        expect(await within(other.receive('conf.survivor'))).toEqual({ type: 'kept' });
        const third = await peerOf(other);
        await third.send('conf.survivor-wait', { type: 'woken' });
        expect(await waiting).toEqual({ type: 'woken' });
      });

      it('a receive cut short by close takes no message: another instance gets it', async () => {
        const layer = await open();
        const other = await peerOf(layer);
        const cut = rejection(() => layer.receive('conf.cut'), 'receive during close');
        await sleep(20);
        await layer.close();
        expect(await cut).toBeInstanceOf(LayerClosed);
        await other.send('conf.cut', { type: 'not-lost' });
        expect(await within(other.receive('conf.cut'))).toEqual({ type: 'not-lost' });
      });
    });
  });
}
