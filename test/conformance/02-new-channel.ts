// Conformance, section 2: newChannel(): a fresh name on every call, usable for sends and receives,
// from another instance too.
import { describe, expect, it } from 'vitest';
import { sleep, within, rejection, type Suite } from './harness.js';

export function describeNewChannel({ open, peerOf }: Suite): void {
  describe('newChannel', () => {
    it("returns 'specific.<x>!<y>' names by default and respects the prefix", async () => {
      const layer = await open();
      const name = await layer.newChannel();
      expect(name).toMatch(/^specific\.[a-zA-Z\d\-_.]+![a-zA-Z\d\-_.]+$/);
      const prefixed = await layer.newChannel('chat.worker-1');
      expect(prefixed).toMatch(/^chat\.worker-1\.[a-zA-Z\d\-_.]+![a-zA-Z\d\-_.]+$/);
      expect(prefixed.split('!')).toHaveLength(2);
    });

    it('returns a different name on every call', async () => {
      const layer = await open();
      const names = await Promise.all(Array.from({ length: 200 }, () => layer.newChannel()));
      expect(new Set(names).size).toBe(200);
      const other = await peerOf(layer);
      const otherNames = await Promise.all(Array.from({ length: 50 }, () => other.newChannel()));
      expect(new Set([...names, ...otherNames]).size).toBe(250);
    });

    it('can be sent to and received from', async () => {
      const layer = await open();
      const channel = await layer.newChannel();
      await layer.send(channel, { type: 'direct', n: 1 });
      expect(await within(layer.receive(channel))).toEqual({ type: 'direct', n: 1 });
      const waiting = within(layer.receive(channel));
      await sleep(20);
      await layer.send(channel, { type: 'direct', n: 2 });
      expect(await waiting).toEqual({ type: 'direct', n: 2 });
    });

    it('receives what another instance sends to it', async () => {
      const layer = await open();
      const other = await peerOf(layer);
      const channel = await layer.newChannel('reply');
      const waiting = within(layer.receive(channel));
      await sleep(20);
      await other.send(channel, { type: 'reply', n: 1 });
      expect(await waiting).toEqual({ type: 'reply', n: 1 });
      await other.send(channel, { type: 'reply', n: 2 });
      expect(await within(layer.receive(channel))).toEqual({ type: 'reply', n: 2 });
    });

    it("rejects receive on a '!' channel this instance did not create", async () => {
      const layer = await open();
      let other = await peerOf(layer);
      if (other === layer) other = await open();
      const theirs = await layer.newChannel();
      await layer.send(theirs, { type: 'private' });
      const error = await rejection(
        () => other.receive(theirs),
        'receive of a foreign process-local channel',
      );
      expect(error).toBeInstanceOf(Error);
      const madeUp = await rejection(
        () => layer.receive('specific.abc123!def456'),
        'receive of a made-up channel',
      );
      expect(madeUp).toBeInstanceOf(Error);
      // The rejected receive took nothing: the owner still gets the message.
      expect(await within(layer.receive(theirs))).toEqual({ type: 'private' });
    });
  });
}
