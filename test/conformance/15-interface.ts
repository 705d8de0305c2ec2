// Conformance, section 15: the interface itself: receive<T>() typing, invalid options.
import { describe, expect, expectTypeOf, it } from 'vitest';
import { type Message } from '../support/package.js';
import { within, rejection, type Suite } from './harness.js';

export function describeLayerInterface({ open }: Suite): void {
  describe('interface', () => {
    it("lists the 'groups' and 'flush' extensions", async () => {
      const layer = await open();
      expect(layer.extensions).toContain('groups');
      expect(layer.extensions).toContain('flush');
    });

    it('types receive<T>() by its type argument', async () => {
      const layer = await open();
      await layer.send('conf.typed', { type: 'typed.message', count: 3 });
      const message = await within(layer.receive<{ type: string; count: number }>('conf.typed'));
      expectTypeOf(message).toEqualTypeOf<{ type: string; count: number }>();
      expectTypeOf(layer.receive).returns.resolves.toEqualTypeOf<Message>();
      // @ts-expect-error a message type must be an object type
      expectTypeOf(layer.receive<string>).toBeFunction();
      expect(message.type.toUpperCase()).toBe('TYPED.MESSAGE');
      expect(message.count + 1).toBe(4);
    });

    it('rejects invalid options with TypeError', async () => {
      for (const options of [
        { capacity: 0 },
        { capacity: 1.5 },
        { expiry: -1 },
        { groupExpiry: 0 },
        { channelCapacity: { 'a*': 0 } },
      ]) {
        const error = await rejection(
          async () => open(options),
          `open(${JSON.stringify(options)})`,
        );
        expect(error, JSON.stringify(options)).toBeInstanceOf(TypeError);
      }
    });
  });
}
