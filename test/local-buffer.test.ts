// The receive buffer of an instance's own '!' channels: a drain of such a channel takes its next
// messages along (up to 16, within 32 KiB) and the following receive()s are served from this
// process's memory. Real segments; the sender is a second instance, as another process would be.
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { shmLayers } from './support/fixtures.js';
import type { ShmChannelLayer, ShmChannelLayerOptions } from './support/package.js';

const shm = shmLayers('localbuf', { size: 8 << 20, maxNodes: 4096 });

/** A receiving and a sending instance of one fresh layer. */
function pair(options: ShmChannelLayerOptions = {}): [ShmChannelLayer, ShmChannelLayer] {
  const name = shm.name();
  return [shm.open({ ...options, name }), shm.open({ ...options, name })];
}

const within = <T>(promise: Promise<T>, ms = 2000): Promise<T> =>
  Promise.race([
    promise,
    sleep(ms).then(() => Promise.reject(new Error(`nothing within ${ms} ms`))),
  ]);

describe("receive buffer of own '!' channels", () => {
  it('takes the next messages along with one receive and hands them out in order', async () => {
    const [receiver, sender] = pair();
    const channel = await receiver.newChannel();
    for (let i = 0; i < 10; i++) await sender.send(channel, { i });
    expect(await within(receiver.receive(channel))).toEqual({ i: 0 });
    // The other nine left the segment with that one call.
    expect(receiver.stats().queued).toBe(0);
    await sender.send(channel, { i: 10 });
    for (let i = 1; i <= 10; i++) expect(await within(receiver.receive(channel))).toEqual({ i });
  });

  it('takes at most 16 more than the receives want, and at most 32 KiB of them', async () => {
    const [receiver, sender] = pair();
    const small = await receiver.newChannel();
    for (let i = 0; i < 30; i++) await sender.send(small, { i });
    await within(receiver.receive(small));
    expect(receiver.stats().queued).toBe(30 - 1 - 16);
    const big = await receiver.newChannel();
    const pad = 'x'.repeat(10_000);
    for (let i = 0; i < 6; i++) await sender.send(big, { i, pad });
    await within(receiver.receive(big));
    // ~10 KB each: three fit the 32 KiB budget, two stay queued.
    expect(receiver.stats().queued).toBe(30 - 1 - 16 + 2);
    for (let i = 1; i < 6; i++) expect((await within(receiver.receive(big))).i).toBe(i);
  });

  it('leaves normal channels alone: another receiver still gets what one receive did not take', async () => {
    const [receiver, sender] = pair();
    for (let i = 0; i < 5; i++) await sender.send('localbuf.shared', { i });
    expect(await within(receiver.receive('localbuf.shared'))).toEqual({ i: 0 });
    expect(receiver.stats().queued).toBe(4);
    expect(await within(sender.receive('localbuf.shared'))).toEqual({ i: 1 });
  });

  it('gives each receiver of a buffered group message its own copy', async () => {
    const [receiver, sender] = pair();
    const a = await receiver.newChannel();
    await receiver.groupAdd('localbuf.copies', a);
    await sender.groupSend('localbuf.copies', { n: 0, nested: { v: 1 } });
    await sender.groupSend('localbuf.copies', { n: 1, nested: { v: 1 } });
    const first = await within(receiver.receive(a));
    (first.nested as { v: number }).v = 2;
    expect(await within(receiver.receive(a))).toEqual({ n: 1, nested: { v: 1 } });
  });

  it('drops buffered messages once their expiry has passed, counted as expired', async () => {
    const [receiver, sender] = pair({ expiry: 1 });
    const channel = await receiver.newChannel();
    for (let i = 0; i < 3; i++) await sender.send(channel, { i });
    expect(await within(receiver.receive(channel))).toEqual({ i: 0 });
    const expiredBefore = receiver.stats().messagesExpired;
    await sleep(1100);
    await sender.send(channel, { i: 'fresh' });
    expect(await within(receiver.receive(channel))).toEqual({ i: 'fresh' });
    expect(receiver.stats().messagesExpired - expiredBefore).toBe(2);
  });

  it('releaseChannel drops the buffer, counted as orphaned', async () => {
    const [receiver, sender] = pair();
    const channel = await receiver.newChannel();
    for (let i = 0; i < 4; i++) await sender.send(channel, { i });
    await within(receiver.receive(channel));
    const orphanedBefore = sender.stats().messagesOrphaned;
    const receivedBefore = sender.stats().messagesReceived;
    await receiver.releaseChannel(channel);
    // In the segment's counters, as every process sees them: orphaned, no longer received.
    expect(sender.stats().messagesOrphaned - orphanedBefore).toBe(3);
    expect(receivedBefore - sender.stats().messagesReceived).toBe(3);
    const next = await receiver.newChannel();
    await sender.send(next, { after: true });
    expect(await within(receiver.receive(next))).toEqual({ after: true });
  });

  it('close() counts what the buffers held as orphaned, in the segment', async () => {
    const [receiver, sender] = pair();
    const channel = await receiver.newChannel();
    for (let i = 0; i < 5; i++) await sender.send(channel, { i });
    await within(receiver.receive(channel));
    const orphanedBefore = sender.stats().messagesOrphaned;
    await receiver.close();
    expect(sender.stats().messagesOrphaned - orphanedBefore).toBe(4);
  });

  it('buffered messages that expire are counted in the segment by the next housekeeping', async () => {
    const [receiver, sender] = pair({ expiry: 1 });
    const channel = await receiver.newChannel();
    for (let i = 0; i < 3; i++) await sender.send(channel, { i });
    await within(receiver.receive(channel));
    const expiredBefore = sender.stats().messagesExpired;
    // Expiry (1 s) and then one housekeeping round (every 2 s) later: about 3 s on a quiet
    // machine; a loaded one runs the housekeeping timer late, so wait for the count (nothing else
    // receives or releases the channel, so only housekeeping can count them).
    await expect
      .poll(() => sender.stats().messagesExpired - expiredBefore, {
        timeout: 15_000,
        interval: 100,
      })
      .toBe(2);
  });

  it('flush() empties the buffers with the queues', async () => {
    const [receiver, sender] = pair();
    const channel = await receiver.newChannel();
    for (let i = 0; i < 4; i++) await sender.send(channel, { i });
    await within(receiver.receive(channel));
    await sender.flush();
    await receiver.flush();
    await sender.send(channel, { i: 'after flush' });
    expect(await within(receiver.receive(channel))).toEqual({ i: 'after flush' });
  });

  it('receiveAny() naming a channel takes its buffered messages first, in order', async () => {
    const [receiver, sender] = pair();
    const channel = await receiver.newChannel();
    for (let i = 0; i < 4; i++) await sender.send(channel, { i });
    await within(receiver.receive(channel));
    const set = Object.freeze([channel, 'localbuf.other']);
    for (let i = 1; i < 4; i++) {
      expect(await within(receiver.receiveAny(set, { wait: false }))).toEqual({
        channel,
        message: { i },
      });
    }
    expect(await receiver.receiveAny(set, { wait: false })).toBeNull();
    // While a set names it, a drain of the channel takes no more than its receives want.
    for (let i = 4; i < 8; i++) await sender.send(channel, { i });
    expect(await within(receiver.receive(channel))).toEqual({ i: 4 });
    expect(receiver.stats().queued).toBe(3);
  });

  it('a receive with an aborted signal rejects and leaves the buffer to the next one', async () => {
    const [receiver, sender] = pair();
    const channel = await receiver.newChannel();
    for (let i = 0; i < 3; i++) await sender.send(channel, { i });
    await within(receiver.receive(channel));
    const aborted = AbortSignal.abort();
    await expect(receiver.receive(channel, { signal: aborted })).rejects.toThrow();
    expect(await within(receiver.receive(channel))).toEqual({ i: 1 });
    expect(await within(receiver.receive(channel))).toEqual({ i: 2 });
  });
});
