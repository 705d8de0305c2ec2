// Conformance, section 9: name validation: invalid channel, group and prefix names are rejected
// with TypeError; 200 characters and every allowed character are accepted.
import { describe, expect, it } from 'vitest';
import { within, rejection, expectEmpty, type Suite } from './harness.js';

export function describeNameValidation({ open }: Suite): void {
  describe('name validation', () => {
    const badChannels: unknown[] = [
      '',
      ' ',
      'with space',
      'tab\there',
      'line\nbreak',
      'héllo',
      'ü',
      '日本',
      'emoji😀',
      'a/b',
      'a:b',
      'a!b!c',
      '!!',
      'x'.repeat(201),
      'x'.repeat(150) + '!' + 'y'.repeat(50),
    ];
    const badGroups: unknown[] = [
      '',
      ' ',
      'with space',
      'héllo',
      'ü',
      'a!b',
      'a!',
      '!',
      'a/b',
      'g'.repeat(201),
    ];
    const notStrings: unknown[] = [
      undefined,
      null,
      1,
      true,
      {},
      ['a'],
      Symbol('a'),
      Buffer.from('a'),
    ];

    async function expectTypeError(call: () => unknown, what: string): Promise<void> {
      const error = await rejection(call, what);
      expect(error, what).toBeInstanceOf(TypeError);
    }

    const show = (value: unknown): string =>
      typeof value === 'string'
        ? JSON.stringify(value.length > 40 ? `${value.slice(0, 20)}…(${value.length})` : value)
        : String(typeof value);

    it('rejects invalid channel names with TypeError in every method', async () => {
      const layer = await open();
      for (const name of badChannels) {
        const n = name as string;
        await expectTypeError(() => layer.send(n, { type: 'x' }), `send(${show(name)})`);
        await expectTypeError(() => layer.receive(n), `receive(${show(name)})`);
        await expectTypeError(() => layer.groupAdd('conf-valid', n), `groupAdd(_, ${show(name)})`);
        await expectTypeError(
          () => layer.groupDiscard('conf-valid', n),
          `groupDiscard(_, ${show(name)})`,
        );
      }
      await expectEmpty(layer, 'conf.still-works');
    });

    it('rejects invalid group names with TypeError in every method', async () => {
      const layer = await open();
      for (const name of badGroups) {
        const n = name as string;
        await expectTypeError(() => layer.groupAdd(n, 'conf.valid'), `groupAdd(${show(name)})`);
        await expectTypeError(
          () => layer.groupDiscard(n, 'conf.valid'),
          `groupDiscard(${show(name)})`,
        );
        await expectTypeError(() => layer.groupSend(n, { type: 'x' }), `groupSend(${show(name)})`);
        await expectTypeError(() => layer.groupMembers(n), `groupMembers(${show(name)})`);
      }
      await layer.groupSend('conf-valid', { type: 'x' });
      await expectEmpty(layer, 'conf.valid');
    });

    it('rejects non-string names with TypeError', async () => {
      const layer = await open();
      for (const name of notStrings) {
        const n = name as string;
        await expectTypeError(() => layer.send(n, { type: 'x' }), `send(${show(name)})`);
        await expectTypeError(() => layer.receive(n), `receive(${show(name)})`);
        await expectTypeError(() => layer.groupAdd(n, 'conf.valid'), `groupAdd(${show(name)}, _)`);
        await expectTypeError(() => layer.groupAdd('conf-valid', n), `groupAdd(_, ${show(name)})`);
        await expectTypeError(
          () => layer.groupDiscard(n, 'conf.valid'),
          `groupDiscard(${show(name)}, _)`,
        );
        await expectTypeError(
          () => layer.groupDiscard('conf-valid', n),
          `groupDiscard(_, ${show(name)})`,
        );
        await expectTypeError(() => layer.groupSend(n, { type: 'x' }), `groupSend(${show(name)})`);
        await expectTypeError(() => layer.groupMembers(n), `groupMembers(${show(name)})`);
      }
    });

    it('rejects a newChannel prefix that makes an invalid name', async () => {
      const layer = await open();
      for (const prefix of ['with space', 'a!b', 'héllo', 'p'.repeat(200)]) {
        await expectTypeError(() => layer.newChannel(prefix), `newChannel(${show(prefix)})`);
      }
    });

    it('accepts 200-character channel and group names, and every allowed character', async () => {
      const layer = await open();
      const channel = 'c'.repeat(199) + 'z';
      const group = 'g'.repeat(199) + 'z';
      expect(channel).toHaveLength(200);
      await layer.send(channel, { type: 'long' });
      expect(await within(layer.receive(channel))).toEqual({ type: 'long' });
      await layer.groupAdd(group, channel);
      await layer.groupSend(group, { type: 'long-group' });
      expect(await within(layer.receive(channel))).toEqual({ type: 'long-group' });
      await layer.groupDiscard(group, channel);
      const bang = 'b'.repeat(100) + '!' + 'd'.repeat(99);
      expect(bang).toHaveLength(200);
      await layer.send(bang, { type: 'bang' }); // sending to a '!' name needs no ownership
      const chars = 'azAZ09-_.';
      await layer.send(chars, { type: 'chars' });
      expect(await within(layer.receive(chars))).toEqual({ type: 'chars' });
      await layer.groupAdd(chars, chars);
      await layer.groupSend(chars, { type: 'chars-group' });
      expect(await within(layer.receive(chars))).toEqual({ type: 'chars-group' });
    });
  });
}
