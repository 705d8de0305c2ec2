// Conformance, section 11: cancellation: receives cancelled by an AbortSignal lose no message and
// leave no listener behind.
import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { sleep, within, rejection, errorName, expectEmpty, type Suite } from './harness.js';

export function describeCancellation({ open, peerOf }: Suite): void {
  describe('cancellation', () => {
    it('an aborted receive rejects with AbortError and the next message goes to the next receive', async () => {
      const layer = await open();
      const controller = new AbortController();
      const aborted = layer.receive('conf.abort', { signal: controller.signal });
      const failed = rejection(() => aborted, 'aborted receive');
      await sleep(20);
      controller.abort();
      expect(errorName(await failed)).toBe('AbortError');
      await layer.send('conf.abort', { type: 'kept', n: 1 });
      expect(await within(layer.receive('conf.abort'))).toEqual({ type: 'kept', n: 1 });
      // Also when the send comes right after the abort, before the rejection is observed.
      const again = new AbortController();
      const second = rejection(
        () => layer.receive('conf.abort', { signal: again.signal }),
        'second aborted receive',
      );
      await sleep(20);
      again.abort(new Error('custom reason'));
      await layer.send('conf.abort', { type: 'kept', n: 2 });
      expect(errorName(await second)).toBe('AbortError');
      expect(await within(layer.receive('conf.abort'))).toEqual({ type: 'kept', n: 2 });
      await expectEmpty(layer, 'conf.abort');
    });

    it('aborting one of several waiting receives loses no message', async () => {
      const layer = await open();
      const controller = new AbortController();
      const first = within(layer.receive('conf.abort-many'));
      const middle = rejection(
        () => layer.receive('conf.abort-many', { signal: controller.signal }),
        'middle receive',
      );
      const last = within(layer.receive('conf.abort-many'));
      await sleep(20);
      controller.abort();
      expect(errorName(await middle)).toBe('AbortError');
      await layer.send('conf.abort-many', { n: 1 });
      await layer.send('conf.abort-many', { n: 2 });
      const got = [(await first).n, (await last).n].sort();
      expect(got).toEqual([1, 2]);
      await expectEmpty(layer, 'conf.abort-many');
    });

    it('an abort by one instance loses nothing sent by another', async () => {
      const layer = await open();
      const other = await peerOf(layer);
      const channel = await layer.newChannel();
      const controller = new AbortController();
      const aborted = rejection(
        () => layer.receive(channel, { signal: controller.signal }),
        'aborted receive',
      );
      await sleep(20);
      controller.abort();
      await other.send(channel, { type: 'cross', n: 1 });
      expect(errorName(await aborted)).toBe('AbortError');
      expect(await within(layer.receive(channel))).toEqual({ type: 'cross', n: 1 });
    });

    it('a receive with an already-aborted signal rejects at once and takes nothing', async () => {
      const layer = await open();
      const error = await rejection(
        () => layer.receive('conf.pre-aborted', { signal: AbortSignal.abort() }),
        'receive with an aborted signal (empty channel)',
        1000,
      );
      expect(errorName(error)).toBe('AbortError');
      await layer.send('conf.pre-aborted', { type: 'queued' });
      const withMessage = await rejection(
        () => layer.receive('conf.pre-aborted', { signal: AbortSignal.abort() }),
        'receive with an aborted signal (message queued)',
        1000,
      );
      expect(errorName(withMessage)).toBe('AbortError');
      expect(await within(layer.receive('conf.pre-aborted'))).toEqual({ type: 'queued' });
    });

    it('aborting after the message arrived changes nothing', async () => {
      const layer = await open();
      const controller = new AbortController();
      const waiting = within(layer.receive('conf.abort-late', { signal: controller.signal }));
      await sleep(20);
      await layer.send('conf.abort-late', { n: 1 });
      expect(await waiting).toEqual({ n: 1 });
      controller.abort();
      await layer.send('conf.abort-late', { n: 2 });
      expect(
        await within(layer.receive('conf.abort-late', { signal: new AbortController().signal })),
      ).toEqual({ n: 2 });
    });

    it('10,000 receives on one AbortSignal add one abort listener and no leak warning', async () => {
      const layer = await open();
      const controller = new AbortController();
      const warnings: Error[] = [];
      const onWarning = (warning: Error): void => void warnings.push(warning);
      process.on('warning', onWarning);
      try {
        const channels = Array.from({ length: 10 }, (_, i) => `conf.one-signal.${i}`);
        const outcomes = Array.from({ length: 10_000 }, (_, i) =>
          layer.receive(channels[i % channels.length]!, { signal: controller.signal }).then(
            (message) => ({ ok: true as const, message }),
            (error: unknown) => ({ ok: false as const, error }),
          ),
        );
        expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1);
        // Deliveries in between leave the one listener in place for the receives still waiting.
        await layer.send(channels[0]!, { n: 1 });
        await layer.send(channels[1]!, { n: 2 });
        const first = await within(outcomes[0]!);
        const second = await within(outcomes[1]!);
        expect(first).toEqual({ ok: true, message: { n: 1 } });
        expect(second).toEqual({ ok: true, message: { n: 2 } });
        expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1);
        controller.abort();
        const settled = await within(Promise.all(outcomes), 20_000, 'the aborted receives');
        const aborted = settled.filter((o) => !o.ok && errorName(o.error) === 'AbortError');
        expect(aborted).toHaveLength(10_000 - 2);
        expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
        await sleep(10); // warnings are emitted on a later tick
        expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
        // The aborts lost nothing: the next message sent still arrives.
        await layer.send(channels[3]!, { n: 3 });
        expect(await within(layer.receive(channels[3]!))).toEqual({ n: 3 });
      } finally {
        process.off('warning', onWarning);
      }
    }, 60_000);

    it('a signal shared by receives that all completed keeps no listener', async () => {
      const layer = await open();
      const controller = new AbortController();
      const waiting = Array.from({ length: 20 }, () =>
        layer.receive('conf.signal-done', { signal: controller.signal }),
      );
      for (let i = 0; i < 20; i++) await layer.send('conf.signal-done', { i });
      expect(
        (await within(Promise.all(waiting)))
          .map((m) => m.i)
          .sort((a, b) => (a as number) - (b as number)),
      ).toEqual(Array.from({ length: 20 }, (_, i) => i));
      expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
    });
  });
}
