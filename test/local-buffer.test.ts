// The inbox and receive buffers of an instance's own '!' channels: every send to one of them and
// every group send to its '!' members is one entry in the instance's inbox; a drain takes up to
// 64 entries (within 48 KiB), hands them to waiting receives and keeps the rest per channel, so
// the following receive()s are served from this process's memory. Real segments; the sender is
// a second instance, as another process would be.
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

  it('takes at most 64 entries per drain, and at most 48 KiB of them', async () => {
    const [receiver, sender] = pair({ capacity: 200 });
    const small = await receiver.newChannel();
    for (let i = 0; i < 100; i++) await sender.send(small, { i });
    await within(receiver.receive(small));
    expect(receiver.stats().queued).toBe(100 - 64);
    for (let i = 1; i < 100; i++) expect((await within(receiver.receive(small))).i).toBe(i);
    const big = await receiver.newChannel();
    const pad = 'x'.repeat(10_000);
    for (let i = 0; i < 8; i++) await sender.send(big, { i, pad });
    await within(receiver.receive(big));
    // ~10 KB each: the one wanted and four more within the 48 KiB budget; three stay queued.
    expect(receiver.stats().queued).toBe(3);
    for (let i = 1; i < 8; i++) expect((await within(receiver.receive(big))).i).toBe(i);
  });

  // Issue 9: a group send follows processes, not members.
  it("a groupSend to 25 '!' channels of one instance is one entry in its inbox, decoded once", async () => {
    const [receiver, sender] = pair();
    const channels: string[] = [];
    for (let i = 0; i < 25; i++) channels.push(await receiver.newChannel());
    for (const channel of channels) await receiver.groupAdd('localbuf.fan', channel);
    const before = sender.stats();
    expect(await sender.groupSend('localbuf.fan', { n: 1, nested: { v: 1 } })).toBe(25);
    const after = sender.stats();
    expect(after.queued - before.queued).toBe(1);
    expect(after.messagesSent - before.messagesSent).toBe(25);
    const got = [];
    for (const channel of channels) got.push(await within(receiver.receive(channel)));
    expect(got[0]).toEqual({ n: 1, nested: { v: 1 } });
    // One decode for the instance: every receiver got the same object (as channels_redis's).
    for (const message of got) expect(message).toBe(got[0]);
    expect(receiver.stats().queued).toBe(0);
    expect(receiver.stats().messagesReceived - before.messagesReceived).toBe(25);
  });

  it("a channel's buffer holds at most its capacity: the oldest give way, counted as skipped", async () => {
    const [receiver, sender] = pair({ capacity: 5 });
    const busy = await receiver.newChannel();
    const idle = await receiver.newChannel();
    const skippedBefore = receiver.stats().deliveriesSkippedFull;
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 4; i++) await sender.send(idle, { i: round * 4 + i });
      await sender.send(busy, { round });
      // The inbox is full (capacity 5 for the instance): the receive takes all of it.
      expect(await within(receiver.receive(busy))).toEqual({ round });
    }
    expect(receiver.stats().deliveriesSkippedFull - skippedBefore).toBe(3);
    for (let i = 3; i < 8; i++) expect(await within(receiver.receive(idle))).toEqual({ i });
  });

  it('an entry for a channel released meanwhile is dropped, counted as orphaned', async () => {
    const [receiver, sender] = pair();
    const gone = await receiver.newChannel();
    const kept = await receiver.newChannel();
    await receiver.releaseChannel(gone);
    const orphanedBefore = sender.stats().messagesOrphaned;
    await sender.send(gone, { late: true });
    await sender.send(kept, { n: 1 });
    expect(await within(receiver.receive(kept))).toEqual({ n: 1 });
    await expect
      .poll(() => receiver.stats().messagesOrphaned - orphanedBefore, { timeout: 5000 })
      .toBe(1);
  });

  it('leaves normal channels alone: another receiver still gets what one receive did not take', async () => {
    const [receiver, sender] = pair();
    for (let i = 0; i < 5; i++) await sender.send('localbuf.shared', { i });
    expect(await within(receiver.receive('localbuf.shared'))).toEqual({ i: 0 });
    expect(receiver.stats().queued).toBe(4);
    expect(await within(sender.receive('localbuf.shared'))).toEqual({ i: 1 });
  });

  // Two prefixes are two inboxes of one instance; direct and group sends to one '!' channel
  // share its inbox's queue, so several receive() loops and a receiveAny() loop see each
  // channel's messages once each, in send order.
  it("keeps each '!' channel's order across direct and group sends, two prefixes, several loops", async () => {
    const [receiver, sender] = pair({ capacity: 1000 });
    const a = await receiver.newChannel('localbuf.one');
    const b = await receiver.newChannel('localbuf.one');
    const c = await receiver.newChannel('localbuf.two');
    for (const channel of [a, b, c]) await receiver.groupAdd('localbuf.mix', channel);
    const want = new Map<string, number[]>([
      [a, []],
      [b, []],
      [c, []],
    ]);
    for (let i = 0; i < 300; i++) {
      if (i % 3 === 0) {
        expect(await sender.groupSend('localbuf.mix', { i })).toBe(3);
        for (const list of want.values()) list.push(i);
      } else {
        const to = i % 3 === 1 ? a : c;
        await sender.send(to, { i });
        want.get(to)!.push(i);
      }
    }
    const got = new Map<string, number[]>([
      [a, []],
      [b, []],
      [c, []],
    ]);
    const total = [...want.values()].reduce((n, list) => n + list.length, 0);
    let received = 0;
    const controller = new AbortController();
    const loop = async (next: () => Promise<[string, { i: number }]>) => {
      try {
        for (;;) {
          const [channel, message] = await next();
          got.get(channel)!.push(message.i);
          if (++received === total) controller.abort();
        }
      } catch (error) {
        if ((error as Error).name !== 'AbortError') throw error;
      }
    };
    const { signal } = controller;
    const one = (channel: string) => async (): Promise<[string, { i: number }]> => [
      channel,
      (await receiver.receive(channel, { signal })) as { i: number },
    ];
    const any = async (): Promise<[string, { i: number }]> => {
      const got = await receiver.receiveAny([b, c], { signal });
      if (!got) throw new Error('a waiting receiveAny() resolved null');
      return [got.channel, got.message as { i: number }];
    };
    await within(
      Promise.all([loop(one(a)), loop(one(a)), loop(one(c)), loop(any), loop(any)]),
      10_000,
    );
    expect(got).toEqual(want);
    expect(receiver.stats().queued).toBe(0);
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
    // wait: false sees what the inbox holds now.
    await sender.send(channel, { i: 4 });
    expect(await within(receiver.receiveAny(set, { wait: false }))).toEqual({
      channel,
      message: { i: 4 },
    });
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
