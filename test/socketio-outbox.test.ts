// The adapter's outbox on its own: a full destination channel makes sends wait and retry, in
// order, and nothing is dropped. InMemoryChannelLayer with capacity 1 makes "full" certain.
import { describe, expect, it } from 'vitest';
import { Outbox } from './support/internal.js';
import { InMemoryChannelLayer } from './support/package.js';

describe('socket.io adapter outbox', () => {
  it('batches what is sent in one turn, retries a full destination, delivers every entry once, in order', async () => {
    const layer = new InMemoryChannelLayer({ capacity: 1 });
    const errors: unknown[] = [];
    const outbox = new Outbox(
      (channel, message) => layer.send(channel, message),
      (error) => errors.push(error),
      async () => true,
    );
    // 600 entries make three batches; the destination holds one layer message and is not read
    // until the outbox has met ChannelFull, so the later batches must wait and be retried.
    for (let i = 0; i < 600; i++) outbox.send('dest', Uint8Array.of(i % 256, i >> 8));
    const until = Date.now() + 5000;
    while (outbox.retries === 0 && Date.now() < until)
      await new Promise((resolve) => setTimeout(resolve, 5));
    expect(outbox.retries).toBeGreaterThan(0);
    const got: number[] = [];
    while (got.length < 600) {
      const message = await layer.receive<{ type: string; b: Uint8Array[] }>('dest', {
        signal: AbortSignal.timeout(10_000),
      });
      for (const entry of message.b) got.push(entry[0]! + (entry[1]! << 8));
    }
    expect(got).toEqual(Array.from({ length: 600 }, (_, i) => i));
    expect(outbox.batches).toBeGreaterThanOrEqual(3);
    expect(outbox.waiting()).toBe(0);
    expect(errors).toEqual([]);
    outbox.close();
    await layer.close();
  });

  it("an emit leaves once the code that made it is done, not after the rest of the turn's I/O", async () => {
    const layer = new InMemoryChannelLayer();
    const outbox = new Outbox(
      (channel, message) => layer.send(channel, message),
      () => {},
      async () => true,
    );
    // A synchronous burst and what promise jobs add behind it: one batch, sent before any
    // callback of the check phase (setImmediate) runs.
    let sentBeforeCheckPhase = -1;
    setImmediate(() => (sentBeforeCheckPhase = outbox.batches));
    for (let i = 0; i < 10; i++) outbox.send('dest', Uint8Array.of(i));
    await Promise.resolve();
    outbox.send('dest', Uint8Array.of(10));
    await new Promise((resolve) => setImmediate(resolve));
    expect(sentBeforeCheckPhase).toBe(1);
    const first = await layer.receive<{ b: Uint8Array[] }>('dest');
    expect(first.b.map((entry) => entry[0])).toEqual(Array.from({ length: 11 }, (_, i) => i));
    outbox.close();
    await layer.close();
  });

  it('what other callbacks of the same turn emit for a destination goes together, in order', async () => {
    const layer = new InMemoryChannelLayer();
    const outbox = new Outbox(
      (channel, message) => layer.send(channel, message),
      () => {},
      async () => true,
    );
    // Three immediates queued together run in one check phase (timers due "together" may fall
    // into two phases on a loaded machine): the first one's entry leaves at once, the next two
    // wait for the next check phase and travel in one layer message.
    await new Promise<void>((resolve) => {
      for (let i = 0; i < 3; i++)
        setImmediate(() => {
          outbox.send('dest', Uint8Array.of(i));
          if (i === 2) resolve();
        });
    });
    await outbox.idle();
    expect(outbox.batches).toBe(2);
    const got: number[] = [];
    while (got.length < 3) {
      const message = await layer.receive<{ b: Uint8Array[] }>('dest');
      for (const entry of message.b) got.push(entry[0]!);
    }
    expect(got).toEqual([0, 1, 2]);
    outbox.close();
    await layer.close();
  });

  it('drops the queue of a destination that is no longer alive', async () => {
    const layer = new InMemoryChannelLayer({ capacity: 1 });
    let alive = true;
    const outbox = new Outbox(
      (channel, message) => layer.send(channel, message),
      () => {},
      async () => alive,
    );
    outbox.send('gone', Uint8Array.of(1));
    await new Promise((resolve) => setTimeout(resolve, 5));
    outbox.send('gone', Uint8Array.of(2));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(outbox.waiting('gone')).toBe(1);
    alive = false;
    const until = Date.now() + 5000;
    while (outbox.waiting('gone') > 0 && Date.now() < until)
      await new Promise((resolve) => setTimeout(resolve, 20));
    expect(outbox.waiting('gone')).toBe(0);
    outbox.close();
    await layer.close();
  });
});
