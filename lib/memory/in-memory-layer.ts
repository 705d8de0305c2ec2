import { CapacityRules } from '../capacity-rules.js';
import { abortError, ChannelFull, ChannelReleased, LayerClosed } from '../errors.js';
import { Fifo } from '../fifo.js';
import { ChannelLayerBase } from '../layer-base.js';
import { clientOf, LocalChannels, nonLocalPart } from '../local-channels.js';
import { validateGroupName } from '../names.js';
import { PendingReceives } from '../pending-receives.js';
import { checkMessageSize } from '../settings.js';
import type * as api from '../types.js';

interface Queued {
  bytes: Uint8Array;
  expiresAt: number;
  /** Enqueue order across all channels: receiveAny() takes the oldest head first. */
  seq: number;
}

/**
 * A layer for one process (tests, development, a single worker). Messages are serialized on send,
 * like every other backend, so what works here works across processes too.
 */
export class InMemoryChannelLayer extends ChannelLayerBase implements api.ChannelLayer {
  private readonly capacities: CapacityRules;
  private readonly queues = new Map<string, Fifo<Queued>>();
  /**
   * The '<prefix>.<client>!' part of '!' channels with a queue, and those channels: their capacity
   * is counted together (the channel-layer spec, channels_redis's one key per part).
   */
  private readonly localQueues = new Map<string, Set<string>>();
  private readonly groups = new Map<string, Map<string, number>>();
  private readonly pending = new PendingReceives(() => this.keepAlive(false));
  /** Ref'd while receives wait: a pending receive keeps the process alive, as on every backend. */
  private alive: NodeJS.Timeout | undefined;
  private enqueued = 0;

  constructor(options: api.ChannelLayerOptions = {}) {
    super(options, new LocalChannels(6, 12));
    this.capacities = new CapacityRules(this.settings);
  }

  async send(channel: string, message: api.MessageInput): Promise<void> {
    this.checkSend(channel, message);
    const bytes = this.serializer.serialize(message);
    checkMessageSize(bytes.length, this.settings);
    this.enqueue(channel, bytes, true);
  }

  async receive<T extends api.Message = api.Message>(
    channel: string,
    options: api.ReceiveOptions = {},
  ): Promise<T> {
    this.checkReceive(channel);
    // An already-aborted signal rejects at once, even with a message queued (which stays queued).
    if (options.signal?.aborted) throw abortError(options.signal);
    const queue = this.queues.get(channel);
    if (queue) {
      this.dropExpired(channel, queue);
      const item = queue.shift();
      if (queue.length === 0) this.deleteQueue(channel);
      if (item) return this.serializer.deserialize(item.bytes) as T;
    }
    const waiting = this.pending.add(channel, options.signal);
    this.keepAlive(true);
    return (await waiting) as T;
  }

  async receiveAny<T extends api.Message = api.Message>(
    channels: readonly string[],
    options: api.ReceiveAnyOptions = {},
  ): Promise<api.ReceivedFrom<T> | null> {
    const set = this.receivableSet(this.pending, channels, options.signal);
    // The oldest head among the set's non-empty queues. Only non-empty channels have a queue, so
    // walk whichever is shorter: the set's channels or the queues.
    let best: { channel: string; queue: Fifo<Queued>; seq: number } | undefined;
    const consider = (channel: string, queue: Fifo<Queued>): void => {
      this.dropExpired(channel, queue);
      const head = queue.peek();
      if (head && (!best || head.seq < best.seq)) best = { channel, queue, seq: head.seq };
    };
    if (this.queues.size < set.channels.length) {
      for (const [channel, queue] of this.queues) if (set.has(channel)) consider(channel, queue);
    } else {
      for (const channel of set.channels) {
        const queue = this.queues.get(channel);
        if (queue) consider(channel, queue);
      }
    }
    if (best) {
      const { channel, queue } = best;
      const item = queue.shift()!;
      if (queue.length === 0) this.deleteQueue(channel);
      return { channel, message: this.serializer.deserialize(item.bytes) as T };
    }
    if (options.wait === false) return null;
    const waiting = this.pending.addAny(set, options.signal);
    this.keepAlive(true);
    return (await waiting) as api.ReceivedFrom<T>;
  }

  async groupAdd(group: string, channel: string): Promise<void> {
    this.checkMembership(group, channel);
    let members = this.groups.get(group);
    if (!members) {
      members = new Map();
      this.groups.set(group, members);
    }
    members.delete(channel); // re-adding renews and moves to the end, as a sorted set would
    members.set(channel, Date.now() + this.settings.groupExpirySeconds * 1000);
  }

  async groupDiscard(group: string, channel: string): Promise<void> {
    this.checkMembership(group, channel);
    const members = this.groups.get(group);
    if (!members) return;
    members.delete(channel);
    if (members.size === 0) this.groups.delete(group);
  }

  async groupMembers(group: string): Promise<string[]> {
    this.checkOpen();
    validateGroupName(group);
    const members = this.groups.get(group);
    if (!members) return [];
    const now = Date.now();
    const live: string[] = [];
    for (const [channel, expiresAt] of members) if (expiresAt > now) live.push(channel);
    return live;
  }

  async groupSend(group: string, message: api.MessageInput): Promise<number> {
    this.checkGroupSend(group, message);
    const members = this.groups.get(group);
    const bytes = this.serializer.serialize(message);
    checkMessageSize(bytes.length, this.settings);
    if (!members) return 0;
    const now = Date.now();
    let handedOut = false;
    let reached = 0;
    for (const [channel, expiresAt] of members) {
      if (expiresAt <= now) {
        members.delete(channel);
        continue;
      }
      // Each member gets its own bytes: deserialized binary values are views into them, so
      // shared bytes would let one receiver's changes show in another's message.
      if (this.enqueue(channel, handedOut ? Buffer.from(bytes) : bytes, false)) reached++;
      handedOut = true;
    }
    if (members.size === 0) this.groups.delete(group);
    return reached;
  }

  async releaseChannel(channel: string): Promise<void> {
    this.checkRelease(channel);
    this.pending.rejectChannel(channel, new ChannelReleased(channel));
    this.counts.messagesOrphaned += this.queues.get(channel)?.length ?? 0;
    this.deleteQueue(channel);
    for (const [group, members] of this.groups) {
      if (members.delete(channel) && members.size === 0) this.groups.delete(group);
    }
  }

  async flush(): Promise<void> {
    this.checkOpen();
    this.queues.clear();
    this.localQueues.clear();
    this.groups.clear();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.queues.clear();
    this.localQueues.clear();
    this.groups.clear();
    this.pending.rejectAll(new LayerClosed());
  }

  /** False if the channel was full (and `throwWhenFull` is false). */
  private enqueue(channel: string, bytes: Uint8Array, throwWhenFull: boolean): boolean {
    let queue = this.queues.get(channel);
    if (queue) this.dropExpired(channel, queue);
    const full =
      this.depthOf(channel, this.queues.get(channel)) >= this.capacities.capacityOf(channel);
    queue = this.queues.get(channel);
    if (full) {
      if (throwWhenFull) {
        this.counts.sendsRefusedFull++;
        throw new ChannelFull(`channel ${channel} is full`);
      }
      this.counts.deliveriesSkippedFull++;
      return false;
    }
    if (!queue && this.pending.waits(channel)) {
      let message: api.Message;
      try {
        message = this.serializer.deserialize(bytes);
      } catch (error) {
        this.pending.fail(channel, error);
        return true;
      }
      this.pending.deliver(channel, message);
      return true;
    }
    if (!queue) {
      queue = new Fifo();
      this.queues.set(channel, queue);
      if (clientOf(channel) !== undefined) {
        const part = nonLocalPart(channel);
        let channels = this.localQueues.get(part);
        if (!channels) {
          channels = new Set();
          this.localQueues.set(part, channels);
        }
        channels.add(channel);
      }
    }
    queue.push({
      bytes,
      expiresAt: Date.now() + this.settings.expirySeconds * 1000,
      seq: this.enqueued++,
    });
    return true;
  }

  private dropExpired(channel: string, queue: Fifo<Queued>): void {
    const now = Date.now();
    // Expiry times only grow along a queue (one expiry for every message of the layer).
    while ((queue.peek()?.expiresAt ?? Infinity) <= now) {
      queue.shift();
      this.counts.messagesExpired++;
    }
    if (queue.length === 0) this.deleteQueue(channel);
  }

  /**
   * What counts against `channel`'s capacity: its queue, or for a '<prefix>.<client>!' channel the
   * queues of every channel sharing that part (their expired messages dropped first).
   */
  private depthOf(channel: string, queue: Fifo<Queued> | undefined): number {
    const shared =
      clientOf(channel) === undefined ? undefined : this.localQueues.get(nonLocalPart(channel));
    if (!shared) return queue?.length ?? 0;
    let depth = 0;
    for (const name of [...shared]) {
      const list = this.queues.get(name)!;
      this.dropExpired(name, list);
      depth += list.length;
    }
    return depth;
  }

  private deleteQueue(channel: string): void {
    if (!this.queues.delete(channel) || clientOf(channel) === undefined) return;
    const part = nonLocalPart(channel);
    const shared = this.localQueues.get(part);
    if (shared?.delete(channel) && shared.size === 0) this.localQueues.delete(part);
  }

  /** Deliveries not made by this layer, and what it holds now. */
  stats(): api.DeliveryStats & { channels: number; groups: number; queued: number } {
    let queued = 0;
    for (const queue of this.queues.values()) queued += queue.length;
    return { ...this.counts, channels: this.queues.size, groups: this.groups.size, queued };
  }

  private keepAlive(on: boolean): void {
    if (on && this.pending.size > 0) this.alive ??= setInterval(() => {}, 2 ** 31 - 1);
    else if (!on && this.alive) {
      clearInterval(this.alive);
      this.alive = undefined;
    }
  }
}
