import { setTimeout as sleep } from 'node:timers/promises';
import { CapacityRules } from '../capacity-rules.js';
import type { ChannelSet } from '../channel-set.js';
import { ChannelFull, ChannelReleased, LayerClosed } from '../errors.js';
import { ChannelLayerBase } from '../layer-base.js';
import { clientOf, isProcessLocal, LocalChannels, nonLocalPart } from '../local-channels.js';
import { validateChannelName, validateGroupName } from '../names.js';
import { PendingReceives } from '../pending-receives.js';
import { checkMessageSize } from '../settings.js';
import type * as api from '../types.js';
import { ASGI_CHANNEL_KEY, decodeMessage, encodeMessage, RANDOM_PREFIX_BYTES } from './codec.js';
import {
  validateHosts,
  type RedisConnection,
  type RedisConnector,
  type RedisHost,
} from './connection.js';
import { IoredisConnector } from './ioredis-connector.js';
import {
  FLUSH,
  GROUP_ADD,
  GROUP_MEMBERS,
  GROUP_SEND,
  PUT_BACK,
  RESTORE_PARKED,
  SEND,
} from './scripts.js';
import { OldestPicker, type Picked } from './oldest-picker.js';
import { consistentHash } from './sharding.js';

export interface RedisChannelLayerOptions extends api.ChannelLayerOptions {
  /**
   * Redis servers, as 'redis://host:port' URLs or `{ host, port }`. Several hosts shard the keys
   * exactly as channels_redis does; every process must list the same hosts in the same order.
   * Default: 127.0.0.1:6379.
   */
  hosts?: RedisHost[];
  /** Prefix of every Redis key, as channels_redis's `prefix`. Default 'asgi'. */
  prefix?: string;
  /** Opens Redis connections. Default: ioredis, loaded when the layer is constructed. */
  connector?: RedisConnector;
}

/** Idle blocking connections kept per host for later receives. */
const MAX_IDLE_BLOCKING = 4;

interface Buffered {
  message: api.Message;
  expiresAt: number;
}

/** What a receiveAny() channel set needs here: its distinct Redis keys. */
interface SetKeys {
  keys: string[];
  /** Per key: holds '!' channels (messages name their channel inside). */
  local: boolean[];
  /** The set's '!' channels (their messages may be buffered here already). */
  locals: string[];
  /** Per host: the oldest-first pick over `keys`, with the heads it knows. */
  pickers: OldestPicker[];
  /**
   * Per host: the id of the set's receive loop there. Made once: the set's key names every
   * channel, and building and hashing it per call cost more than the rest of a receiveAny().
   */
  pollerIds: string[];
}

/** Send-time scores (seconds), strictly increasing within this process so FIFO order holds. */
let lastScore = 0;
function nextScore(): number {
  const now = Date.now() / 1000;
  lastScore = now > lastScore ? now : lastScore + 1e-6;
  return lastScore;
}

/** Seconds between heartbeats of a layer that made '!' channels. */
const HEARTBEAT_SECONDS = 3;
/** A heartbeat key outlives its process this long (sends to its channels are dropped meanwhile). */
const HEARTBEAT_KEY_TTL_SECONDS = 86400;

/**
 * A channel layer over one or more Redis servers, wire-compatible with channels_redis 4.x
 * (`channels_redis.core.RedisChannelLayer`): Python and Node processes with the same `prefix` and
 * `hosts` send to and receive from each other, share groups, and reach each other's '!' channels.
 *
 * Needs Redis 5 or later (BZPOPMIN, CLIENT UNBLOCK). As in channels_redis, with several hosts a
 * normal channel's messages are spread round-robin over them: each host holds its own queue (and
 * capacity) and order is kept per host only. Not supported: Redis Cluster, Sentinel, and
 * channels_redis's symmetric_encryption_keys.
 *
 * Beyond channels_redis: a layer that made '!' channels keeps a heartbeat key
 * (`<prefix>:alive:<client>`, on every host); sends to the '!' channels of a process whose
 * heartbeat is stale (or 0: closed) are dropped and counted instead of queued for nobody.
 */
export class RedisChannelLayer extends ChannelLayerBase implements api.ChannelLayer {
  readonly prefix: string;
  private readonly hosts: RedisHost[];
  private readonly connector: RedisConnector;
  private readonly capacities: CapacityRules;
  private readonly commandConnections: Array<RedisConnection | undefined>;
  private readonly idleBlocking: RedisConnection[][];
  /** Per host: ms the next receive loop waits before its first pop (after failures). */
  private readonly backoff: number[];
  private readonly connections = new Set<RedisConnection>();
  private readonly pending = new PendingReceives();
  /** Channels that had waiting receives, by Redis key (pruned lazily). */
  private readonly keyChannels = new Map<string, Set<string>>();
  /** Running receive loops by `${hostIndex} ${key}`. */
  private readonly pollers = new Map<string, Promise<void>>();
  /** Messages for our '!' channels that arrived with nobody waiting, as channels_redis buffers them. */
  private readonly buffers = new Map<string, Buffered[]>();
  private buffersSwept = Date.now();
  /** Groups our own '!' channels were added to here, so releaseChannel() can leave them. */
  private readonly localGroups = new Map<string, Set<string>>();
  /** '!' channels released less than `expiry` ago: messages still arriving for them are dropped. */
  private readonly released = new Map<string, number>();
  private readonly closing = new AbortController();
  private closed_: Promise<void> | undefined;
  /** BZPOPMINs in flight, by poller id: their host and Redis client id (for CLIENT UNBLOCK). */
  private readonly blocked = new Map<string, { index: number; clientId?: number }>();
  /** Messages on their way back into their channel (see `dispatch`). */
  private readonly putBacks = new Set<Promise<unknown>>();
  /** Members seen in each key's '$inflight' backup at the last look (see `restoreParked`). */
  private readonly parkedSeen = new Map<string, Set<string>>();
  private sendIndex = 0;
  /** Seconds one BZPOPMIN blocks before the receive loop looks around (channels_redis's brpop_timeout). */
  protected blockSeconds = 5;
  /** Seconds between this layer's heartbeats (once it made a '!' channel). */
  protected heartbeatSeconds = HEARTBEAT_SECONDS;
  /** A process whose heartbeat is older than this is gone: sends to its '!' channels are dropped. */
  protected heartbeatStaleSeconds = 5 * HEARTBEAT_SECONDS;
  private heartbeat: NodeJS.Timeout | undefined;

  constructor(options: RedisChannelLayerOptions = {}) {
    // channels_redis's client prefix and channel suffixes are uuid4().hex: 16 random bytes.
    super(options, new LocalChannels(16, 16));
    this.capacities = new CapacityRules(this.settings);
    this.prefix = options.prefix ?? 'asgi';
    if (typeof this.prefix !== 'string') throw new TypeError('prefix must be a string');
    this.hosts = validateHosts(options.hosts);
    this.connector = options.connector ?? new IoredisConnector();
    this.commandConnections = this.hosts.map(() => undefined);
    this.idleBlocking = this.hosts.map(() => []);
    this.backoff = this.hosts.map(() => 0);
  }

  async send(channel: string, message: api.MessageInput): Promise<void> {
    this.checkSend(channel, message);
    checkReserved(message);
    const local = isProcessLocal(channel);
    const nonLocal = nonLocalPart(channel);
    // channels_redis: '!' channels live on the host their non-local part hashes to (where their
    // receiver reads); normal channels go round-robin (their receivers read every host).
    const index = local ? consistentHash(nonLocal, this.hosts.length) : this.nextSendIndex();
    const payload = encodeMessage(this.serializer, message, local ? channel : undefined);
    checkMessageSize(payload.length - RANDOM_PREFIX_BYTES, this.settings);
    const now = nextScore();
    const added = await this.command(index).call(
      'EVAL',
      SEND,
      1,
      this.prefix + nonLocal,
      payload,
      now,
      now - this.settings.expirySeconds,
      this.capacities.capacityOf(channel),
      this.expiryMs(),
      local ? this.aliveKeyOf(channel) : '',
      Date.now() / 1000 - this.heartbeatStaleSeconds,
    );
    if (added === 2) {
      // Its process is gone (no heartbeat): nobody would ever read it. Dropped and counted.
      this.counts.messagesOrphaned++;
      return;
    }
    if (added === 0) {
      this.counts.sendsRefusedFull++;
      throw new ChannelFull(`channel ${channel} is full`);
    }
  }

  receive<T extends api.Message = api.Message>(
    channel: string,
    options: api.ReceiveOptions = {},
  ): Promise<T> {
    try {
      this.checkOpen();
      validateChannelName(channel);
    } catch (error) {
      return Promise.reject(error);
    }
    if (options.signal?.aborted) return this.pending.add(channel, options.signal) as Promise<T>;
    const local = isProcessLocal(channel);
    const nonLocal = nonLocalPart(channel);
    if (local) {
      try {
        this.local.checkReceivable(channel);
      } catch (error) {
        return Promise.reject(error);
      }
      const buffered = this.takeBuffered(channel);
      if (buffered) return Promise.resolve(buffered as T);
    }
    const key = this.prefix + nonLocal;
    const promise = this.pending.add(channel, options.signal) as Promise<T>;
    if (options.signal) {
      // Cancelled: when nobody waits on the key any more, stop its blocked pops.
      promise.catch(() => {
        if (!this.closed && !this.wanted(key)) this.unblock(key);
      });
    }
    let channels = this.keyChannels.get(key);
    if (!channels) {
      channels = new Set();
      this.keyChannels.set(key, channels);
    }
    channels.add(channel);
    // Normal channels: channels_redis's senders spread them over all hosts. '!' channels: also
    // every host, since channels_redis 4's send() picks the host by the full name.
    for (let index = 0; index < this.hosts.length; index++) this.ensurePoller(index, key, local);
    return promise;
  }

  /**
   * Buffered messages of our '!' channels first (popped already, so older than what Redis still
   * holds), then one atomic oldest-first pick over the channels' keys (POP_OLDEST); only when
   * every key is empty, one BZPOPMIN over all of them on one connection per host.
   */
  async receiveAny<T extends api.Message = api.Message>(
    channels: readonly string[],
    options: api.ReceiveAnyOptions = {},
  ): Promise<api.ReceivedFrom<T> | null> {
    const set = this.receivableSet(this.pending, channels, options.signal);
    const keys = this.keysOf(set);
    const buffered = this.takeBufferedAny(keys.locals);
    if (buffered) return buffered as api.ReceivedFrom<T>;
    if (options.wait === false)
      return (await this.pickAny(set, keys)) as api.ReceivedFrom<T> | null;
    const promise = this.pending.addAny(set, options.signal) as Promise<api.ReceivedFrom<T>>;
    if (options.signal) {
      promise.catch(() => {
        if (!this.closed && set.waiters.length === 0) this.unblockSet(set);
      });
    }
    for (let index = 0; index < this.hosts.length; index++) {
      const id = keys.pollerIds[index]!;
      if (!this.pollers.has(id)) this.pollers.set(id, this.pollSet(index, set, id));
    }
    return promise;
  }

  override async newChannel(prefix = 'specific'): Promise<string> {
    this.checkOpen();
    this.startHeartbeat();
    return super.newChannel(prefix);
  }

  async groupAdd(group: string, channel: string): Promise<void> {
    this.checkMembership(group, channel);
    if (this.local.owns(channel)) {
      let groups = this.localGroups.get(channel);
      if (!groups) {
        groups = new Set();
        this.localGroups.set(channel, groups);
      }
      groups.add(group);
    }
    await this.command(this.groupHost(group)).call(
      'EVAL',
      GROUP_ADD,
      1,
      this.groupKey(group),
      channel,
      Date.now() / 1000,
      Math.max(1, Math.round(this.settings.groupExpirySeconds * 1000)),
    );
  }

  async groupDiscard(group: string, channel: string): Promise<void> {
    this.checkMembership(group, channel);
    const groups = this.localGroups.get(channel);
    if (groups?.delete(group) && groups.size === 0) this.localGroups.delete(channel);
    await this.command(this.groupHost(group)).call('ZREM', this.groupKey(group), channel);
  }

  async releaseChannel(channel: string): Promise<void> {
    this.checkRelease(channel);
    this.pending.rejectChannel(channel, new ChannelReleased(channel));
    this.counts.messagesOrphaned += this.buffers.get(channel)?.length ?? 0;
    this.buffers.delete(channel);
    // Our '!' channels share one Redis key: its messages for this channel are dropped as they
    // come, for as long as they could still be delivered.
    const now = Date.now();
    for (const [name, until] of this.released) {
      if (until > now) break; // in release order, and every entry lives `expiry` long
      this.released.delete(name);
    }
    this.released.set(channel, now + this.expiryMs());
    const groups = this.localGroups.get(channel);
    this.localGroups.delete(channel);
    if (groups) {
      await Promise.all(
        [...groups].map((group) =>
          this.command(this.groupHost(group)).call('ZREM', this.groupKey(group), channel),
        ),
      );
    }
  }

  /**
   * Reads channels_redis's group sorted set (member: channel, score: time of its last group_add)
   * without changing it: the members group_send would still reach, oldest membership first.
   */
  async groupMembers(group: string): Promise<string[]> {
    this.checkOpen();
    validateGroupName(group);
    const cutoff = Date.now() / 1000 - this.settings.groupExpirySeconds;
    const members = (await this.command(this.groupHost(group)).call(
      'ZRANGEBYSCORE',
      this.groupKey(group),
      `(${cutoff}`,
      '+inf',
    )) as Buffer[];
    return members.map((member) => member.toString('utf8'));
  }

  async groupSend(group: string, message: api.MessageInput): Promise<number> {
    this.checkGroupSend(group, message);
    checkReserved(message);
    // Fails on an unserializable or too large message before touching Redis.
    checkMessageSize(this.serializer.serialize(message).length, this.settings);
    const members = (await this.command(this.groupHost(group)).call(
      'EVAL',
      GROUP_MEMBERS,
      1,
      this.groupKey(group),
      Date.now() / 1000 - this.settings.groupExpirySeconds,
    )) as Buffer[];
    if (members.length === 0) return 0;
    // One message per Redis key, naming every member channel that shares the key.
    const byKey = new Map<string, { channels: string[]; index: number; capacity: number }>();
    for (const raw of members) {
      const channel = raw.toString('utf8');
      const nonLocal = nonLocalPart(channel);
      const key = this.prefix + nonLocal;
      let entry = byKey.get(key);
      if (!entry) {
        entry = {
          channels: [],
          index: consistentHash(nonLocal, this.hosts.length),
          capacity: this.capacities.capacityOf(channel),
        };
        byKey.set(key, entry);
      }
      entry.channels.push(channel);
    }
    const byHost = new Map<number, string[]>();
    for (const [key, { index }] of byKey) {
      const keys = byHost.get(index);
      if (keys) keys.push(key);
      else byHost.set(index, [key]);
    }
    const now = nextScore();
    const calls = [...byHost].map(([index, keys]) => {
      const entries = keys.map((key) => byKey.get(key)!);
      return this.command(index).call(
        'EVAL',
        GROUP_SEND,
        keys.length,
        ...keys,
        ...entries.map((entry) => encodeMessage(this.serializer, message, entry.channels)),
        ...entries.map((entry) => entry.capacity),
        now,
        now - this.settings.expirySeconds,
        this.expiryMs(),
        ...entries.map((entry) =>
          isProcessLocal(entry.channels[0]!) ? this.aliveKeyOf(entry.channels[0]!) : '',
        ),
        Date.now() / 1000 - this.heartbeatStaleSeconds,
      );
    });
    const results = await Promise.allSettled(calls);
    const failed = results.find(
      (result): result is PromiseRejectedResult => result.status === 'rejected',
    );
    if (failed) throw failed.reason;
    // A key that was full skips every member channel stored under it.
    let reached = 0;
    const hostKeys = [...byHost.values()];
    results.forEach((result, call) => {
      const added = (result as PromiseFulfilledResult<unknown>).value as number[];
      hostKeys[call]!.forEach((key, i) => {
        const channels = byKey.get(key)!.channels.length;
        if (added[i] === 1) reached += channels;
        else if (added[i] === 2) this.counts.messagesOrphaned += channels;
        else this.counts.deliveriesSkippedFull += channels;
      });
    });
    return reached;
  }

  /**
   * Deliveries not made that this instance saw: members skipped as full by its groupSends, its
   * sends refused as full, expired messages its receivers met, messages for its released
   * channels. (Redis drops other expired messages itself without telling anyone.)
   */
  stats(): api.DeliveryStats {
    return { ...this.counts };
  }

  async flush(): Promise<void> {
    this.checkOpen();
    const pattern = this.prefix.replace(/[*?[\]\\]/g, '\\$&') + '*';
    await Promise.all(
      this.hosts.map((_, index) => this.command(index).call('EVAL', FLUSH, 0, pattern)),
    );
    this.buffers.clear();
  }

  async close(): Promise<void> {
    this.closed_ ??= this.shutdown();
    return this.closed_;
  }

  private async shutdown(): Promise<void> {
    this.closed = true;
    this.closing.abort();
    this.pending.rejectAll(new LayerClosed());
    if (this.heartbeat) {
      clearInterval(this.heartbeat);
      // Gone for good: sends to our '!' channels are dropped from now on instead of queued.
      await withTimeout(Promise.allSettled(this.beat(0)), 1000);
    }
    // Wake our blocked BZPOPMINs before disconnecting: a dropped connection still blocked could be
    // handed a message by Redis, which would then be lost. A message one of them took in the
    // meantime goes back into its channel.
    const unblocks = [...this.blocked.values()]
      .filter((entry) => entry.clientId !== undefined)
      .map((entry) => this.command(entry.index).call('CLIENT', 'UNBLOCK', entry.clientId!));
    await withTimeout(Promise.allSettled(unblocks), 1000);
    await withTimeout(Promise.allSettled([...this.pollers.values()]), 1000);
    await withTimeout(Promise.allSettled([...this.putBacks]), 1000);
    for (const connection of this.connections) connection.close();
    this.connections.clear();
    await Promise.allSettled([...this.pollers.values()]);
    this.buffers.clear();
  }

  // --- heartbeat: lets senders tell that this process's '!' channels have no reader any more ---

  /** `${prefix}:alive:<client>`: the heartbeat of the process whose newChannel() made `channel`. */
  private aliveKeyOf(channel: string): string {
    const client = clientOf(channel);
    return client ? `${this.prefix}:alive:${client}` : '';
  }

  /**
   * From the first newChannel() on, this process writes the time to its heartbeat key on every
   * host (a '!' channel's key may live on any of them) every few seconds. channels_redis
   * processes write none, so their channels are treated as before.
   */
  private startHeartbeat(): void {
    if (this.heartbeat) return;
    void Promise.allSettled(this.beat(Date.now() / 1000));
    this.heartbeat = setInterval(
      () => void Promise.allSettled(this.beat(Date.now() / 1000)),
      this.heartbeatSeconds * 1000,
    );
    this.heartbeat.unref(); // never keeps the process alive
  }

  private beat(seconds: number): Array<Promise<unknown>> {
    const key = `${this.prefix}:alive:${this.local.client}`;
    return this.hosts.map((_, index) =>
      this.command(index).call('SET', key, String(seconds), 'EX', HEARTBEAT_KEY_TTL_SECONDS),
    );
  }

  // --- receiving ---

  private ensurePoller(index: number, key: string, local: boolean): void {
    const id = `${index} ${key}`;
    if (!this.pollers.has(id)) this.pollers.set(id, this.poll(index, key, local, id));
  }

  /**
   * Wakes this layer's pops blocked on `key` (CLIENT UNBLOCK: they return nil, or a message they
   * took meanwhile, which `dispatch` puts back or buffers), so no loop holds messages nobody here
   * waits for.
   */
  private unblock(key: string): void {
    for (let index = 0; index < this.hosts.length; index++) {
      const entry = this.blocked.get(`${index} ${key}`);
      if (entry?.clientId === undefined) continue;
      this.command(index)
        .call('CLIENT', 'UNBLOCK', entry.clientId)
        .catch(() => {});
    }
  }

  /** True while a receive waits on a channel stored under `key`. */
  private wanted(key: string): boolean {
    const channels = this.keyChannels.get(key);
    if (!channels) return false;
    for (const channel of channels) {
      if (this.pending.count(channel) > 0) return true;
      channels.delete(channel);
    }
    this.keyChannels.delete(key);
    return false;
  }

  /**
   * One receive loop per host and key, while receives wait on it: BZPOPMIN on a connection of its
   * own, then hand the message over. On a connection error it fails the waiting receives and
   * backs off before trying again, so it neither spins nor dies.
   */
  private async poll(index: number, key: string, local: boolean, id: string): Promise<void> {
    await null; // registered in `pollers` before the loop can end
    let connection: RedisConnection | undefined;
    let backoff = this.backoff[index]!;
    // Failures on a '!' key's other hosts (read only for channels_redis's own sends) are not fatal.
    const fatal =
      !local || index === consistentHash(key.slice(this.prefix.length), this.hosts.length);
    try {
      while (!this.closed && this.wanted(key)) {
        if (backoff) {
          try {
            await sleep(backoff, undefined, { signal: this.closing.signal });
          } catch {
            break;
          }
          if (this.closed || !this.wanted(key)) break;
        }
        connection ??= this.acquireBlocking(index);
        let reply: unknown;
        let started = 0;
        try {
          this.trackBlocked(id, index, connection);
          started = Date.now();
          reply = await connection.call('BZPOPMIN', key, this.blockSeconds);
          backoff = this.backoff[index] = 0;
        } catch (error) {
          if (this.closed) break;
          if (fatal) this.failWaiters(key, error);
          // Kept per host, so the next loop (for the next receive) waits too: no busy retrying.
          backoff = this.backoff[index] = backoff ? Math.min(backoff * 2, 2000) : 100;
          continue;
        } finally {
          this.blocked.delete(id);
        }
        if (reply === null || !Array.isArray(reply)) {
          if (this.closed) break;
          // Idle for a whole timeout (not woken by CLIENT UNBLOCK): a good moment to look for
          // abandoned channels_redis backups.
          if (Date.now() - started >= this.blockSeconds * 900)
            await this.restoreParked(index, key).catch(() => {});
          continue;
        }
        const [, member, score] = reply as [Buffer, Buffer, Buffer];
        this.dispatch(index, key, local, member, Number(score.toString()));
        // Served: with several hosts the pops on the others would only hold messages up.
        if (this.hosts.length > 1 && !this.wanted(key)) this.unblock(key);
      }
    } finally {
      this.pollers.delete(id);
      if (connection) this.releaseBlocking(index, connection);
    }
  }

  private dispatch(
    index: number,
    key: string,
    local: boolean,
    member: Buffer,
    score: number,
  ): void {
    // channels_redis drops expired messages only on the next send; dropping them here too keeps
    // `expiry` meaning "never delivered later than this".
    const expiresAt = (score + this.settings.expirySeconds) * 1000;
    if (expiresAt <= Date.now()) {
      this.counts.messagesExpired++;
      return;
    }
    if (!local) {
      const channel = key.slice(this.prefix.length);
      if (!this.pending.waits(channel)) {
        // Its receive was cancelled: back in the queue, in its place, for the next receiver.
        const putBack = this.command(index)
          .call('EVAL', PUT_BACK, 1, key, this.expiryMs(), score, member)
          .catch(() => {})
          .finally(() => this.putBacks.delete(putBack));
        this.putBacks.add(putBack);
        return;
      }
      let message: api.Message;
      try {
        message = decodeMessage(this.serializer, member).message;
      } catch (error) {
        this.pending.fail(channel, error);
        return;
      }
      this.pending.deliver(channel, message);
      return;
    }
    let targets: string[] | undefined;
    let message: api.Message;
    try {
      ({ message, channels: targets } = decodeMessage(this.serializer, member));
    } catch {
      return; // undecodable, and without the full channel name nobody to report it to
    }
    if (!targets) return;
    for (let i = 0; i < targets.length; i++) {
      const target = targets[i]!;
      if (this.released.has(target)) {
        this.counts.messagesOrphaned++;
        continue;
      }
      if (i > 0) message = decodeMessage(this.serializer, member).message; // a copy per channel
      if (!this.pending.deliver(target, message)) this.buffer(target, message, expiresAt);
    }
  }

  /**
   * channels_redis parks each message it pops in '<key>$inflight' until its receive finished and
   * moves a backup back only when a receiver of its own next polls the key. So that Node-only
   * receivers recover messages of a channels_redis process that died in between, members still
   * parked a whole idle timeout after we first saw them go back into the channel (sooner would
   * duplicate messages whose receiver is merely slow).
   */
  private async restoreParked(index: number, key: string): Promise<void> {
    const backup = key + '$inflight';
    const members = (await this.command(index).call('ZRANGE', backup, 0, -1)) as Buffer[];
    const seen = this.parkedSeen.get(key);
    const now = new Set(members.map((member) => member.toString('base64')));
    if (now.size) this.parkedSeen.set(key, now);
    else this.parkedSeen.delete(key);
    const stale = members.filter((member) => seen?.has(member.toString('base64')));
    if (stale.length)
      await this.command(index).call(
        'EVAL',
        RESTORE_PARKED,
        2,
        key,
        backup,
        this.expiryMs(),
        ...stale,
      );
  }

  private keysOf(set: ChannelSet): SetKeys {
    if (set.state) return set.state as SetKeys;
    const keys: string[] = [];
    const local: boolean[] = [];
    const locals: string[] = [];
    for (const channel of set.channels) {
      const nonLocal = nonLocalPart(channel);
      const key = this.prefix + nonLocal;
      if (isProcessLocal(channel)) locals.push(channel);
      if (keys.includes(key)) continue;
      keys.push(key);
      local.push(nonLocal.endsWith('!'));
    }
    const pickers = this.hosts.map(() => new OldestPicker(keys));
    const pollerIds = this.hosts.map((_, index) => `${index} any ${set.key}`);
    const state: SetKeys = { keys, local, locals, pickers, pollerIds };
    set.state = state;
    return state;
  }

  /** receiveAny(wait: false): one pick per host in turn, until one gives a message of the set. */
  private async pickAny(
    set: ChannelSet,
    { keys, local, pickers }: SetKeys,
  ): Promise<api.ReceivedFrom | null> {
    for (let index = 0; index < this.hosts.length; index++) {
      for (;;) {
        let picked: Picked | null;
        try {
          picked = await pickers[index]!.pick(this.command(index));
        } catch (error) {
          pickers[index]!.clear();
          throw error;
        }
        if (!picked) break;
        const { at, member, score } = picked;
        const key = keys[at]!;
        const expiresAt = (score + this.settings.expirySeconds) * 1000;
        if (expiresAt <= Date.now()) continue;
        if (!local[at]) {
          // A message this call took: if it cannot be decoded, the caller hears why.
          return {
            channel: key.slice(this.prefix.length),
            message: decodeMessage(this.serializer, member).message,
          };
        }
        // A '!' key holds all our '!' channels: hand over or buffer what is not for this set.
        let decoded;
        try {
          decoded = decodeMessage(this.serializer, member);
        } catch {
          continue;
        }
        const targets = decoded.channels ?? [];
        let mine: api.ReceivedFrom | undefined;
        for (let i = 0; i < targets.length; i++) {
          const target = targets[i]!;
          if (this.released.has(target)) continue;
          const message =
            i === 0 ? decoded.message : decodeMessage(this.serializer, member).message;
          if (!mine && set.has(target)) mine = { channel: target, message };
          else if (!this.pending.deliver(target, message)) this.buffer(target, message, expiresAt);
        }
        if (mine) return mine;
      }
    }
    return null;
  }

  /** The oldest buffered message of the given '!' channels. */
  private takeBufferedAny(channels: readonly string[]): api.ReceivedFrom | undefined {
    let best: string | undefined;
    let bestExpiry = Infinity;
    for (const channel of channels) {
      const list = this.buffers.get(channel);
      if (!list) continue;
      const now = Date.now();
      while (list.length && list[0]!.expiresAt <= now) list.shift();
      if (list.length === 0) {
        this.buffers.delete(channel);
        continue;
      }
      if (list[0]!.expiresAt < bestExpiry) {
        best = channel;
        bestExpiry = list[0]!.expiresAt;
      }
    }
    if (best === undefined) return undefined;
    const message = this.takeBuffered(best);
    return message ? { channel: best, message } : undefined;
  }

  /** Wakes this layer's pops for `set` (its last receiveAny was cancelled). */
  private unblockSet(set: ChannelSet): void {
    for (let index = 0; index < this.hosts.length; index++) {
      const entry = this.blocked.get(this.keysOf(set).pollerIds[index]!);
      if (entry?.clientId === undefined) continue;
      this.command(index)
        .call('CLIENT', 'UNBLOCK', entry.clientId)
        .catch(() => {});
    }
  }

  /**
   * The receive loop of a receiveAny() channel set on one host, while receiveAny()s wait on it:
   * an oldest-first pick over all the set's keys, and when they are all empty one BZPOPMIN over
   * all of them, on one connection. What it takes goes to the oldest receive that wants that
   * channel (or back into the channel when nobody does any more), as in `poll`.
   */
  /**
   * Records the blocking pop `id` is about to send on `connection`, with the connection's Redis
   * client id (asked for pipelined with the pop, so no extra round trip) that CLIENT UNBLOCK
   * needs in close(). The caller deletes the entry when the pop returns.
   */
  private trackBlocked(id: string, index: number, connection: RedisConnection): void {
    const entry: { index: number; clientId?: number } = { index };
    this.blocked.set(id, entry);
    connection.call('CLIENT', 'ID').then(
      (clientId) => (entry.clientId = Number(clientId)),
      () => {},
    );
  }

  private async pollSet(index: number, set: ChannelSet, id: string): Promise<void> {
    await null; // registered in `pollers` before the loop can end
    let connection: RedisConnection | undefined;
    let backoff = this.backoff[index]!;
    const { keys, local, pickers } = this.keysOf(set);
    const picker = pickers[index]!;
    try {
      while (!this.closed && set.waiters.length > 0) {
        if (backoff) {
          try {
            await sleep(backoff, undefined, { signal: this.closing.signal });
          } catch {
            break;
          }
          if (this.closed || set.waiters.length === 0) break;
        }
        connection ??= this.acquireBlocking(index);
        let key: string | undefined;
        let member: Buffer | undefined;
        let score = 0;
        try {
          // Known heads first. Once they are used up, no full pick before blocking: a BZPOPMIN
          // returns at once if any key holds a message, and the full pick after it (with that
          // message put back) restores the order; so a receiver that keeps up pays two commands
          // per message, not three.
          const picked = await picker.pickKnown(connection);
          if (picked) {
            key = keys[picked.at];
            member = picked.member;
            score = picked.score;
          } else if (!this.closed && set.waiters.length > 0) {
            try {
              this.trackBlocked(id, index, connection);
              const popped = (await connection.call('BZPOPMIN', ...keys, this.blockSeconds)) as
                [Buffer, Buffer, Buffer] | null;
              if (popped) {
                key = popped[0].toString('utf8');
                member = popped[1];
                score = Number(popped[2].toString());
              }
            } finally {
              this.blocked.delete(id);
            }
            const at = key === undefined ? -1 : keys.indexOf(key);
            if (at !== -1 && keys.length > 1) {
              // The first key in argument order that holds a message (or got one first); another
              // may hold an older one. Back in, and the oldest out, in one step.
              // If this fails the message may be back in Redis: not delivered too (at most once).
              const picked = await picker.pickAll(connection, {
                at,
                score,
                member: member!,
                ttlMs: this.expiryMs(),
              });
              key = picked ? keys[picked.at] : undefined;
              member = picked?.member;
              score = picked?.score ?? 0;
            }
          }
          backoff = this.backoff[index] = 0;
        } catch (error) {
          picker.clear();
          if (this.closed) break;
          while (this.pending.failSet(set, error));
          backoff = this.backoff[index] = backoff ? Math.min(backoff * 2, 2000) : 100;
          continue;
        }
        if (key === undefined || member === undefined) continue;
        const at = keys.indexOf(key);
        this.dispatch(index, key, at === -1 ? key.endsWith('!') : local[at]!, member, score);
      }
    } finally {
      this.pollers.delete(id);
      if (connection) this.releaseBlocking(index, connection);
    }
  }

  private buffer(channel: string, message: api.Message, expiresAt: number): void {
    let list = this.buffers.get(channel);
    if (!list) {
      list = [];
      this.buffers.set(channel, list);
    }
    list.push({ message, expiresAt });
    // Bounded as channels_redis's receive buffers: the oldest give way.
    const capacity = this.capacities.capacityOf(channel);
    if (list.length > capacity) {
      this.counts.deliveriesSkippedFull += list.length - capacity;
      list.splice(0, list.length - capacity);
    }
    const now = Date.now();
    if (now - this.buffersSwept > 1000 * Math.min(this.settings.expirySeconds, 60)) {
      this.buffersSwept = now;
      for (const [name, entries] of this.buffers) {
        while (entries.length && entries[0]!.expiresAt <= now) {
          entries.shift();
          this.counts.messagesExpired++;
        }
        if (entries.length === 0) this.buffers.delete(name);
      }
      for (const [name, until] of this.released) if (until <= now) this.released.delete(name);
    }
  }

  private takeBuffered(channel: string): api.Message | undefined {
    const list = this.buffers.get(channel);
    if (!list) return undefined;
    const now = Date.now();
    let item: Buffered | undefined;
    while ((item = list.shift()) && item.expiresAt <= now) this.counts.messagesExpired++;
    if (list.length === 0) this.buffers.delete(channel);
    return item?.message;
  }

  private failWaiters(key: string, error: unknown): void {
    const channels = this.keyChannels.get(key);
    if (!channels) return;
    for (const channel of [...channels]) {
      while (this.pending.fail(channel, error));
    }
  }

  // --- connections ---

  private command(index: number): RedisConnection {
    let connection = this.commandConnections[index];
    if (!connection) {
      connection = this.connector.connect(this.hosts[index]!, 'commands');
      this.commandConnections[index] = connection;
      this.connections.add(connection);
    }
    return connection;
  }

  private acquireBlocking(index: number): RedisConnection {
    const connection =
      this.idleBlocking[index]!.pop() ?? this.connector.connect(this.hosts[index]!, 'blocking');
    this.connections.add(connection);
    return connection;
  }

  private releaseBlocking(index: number, connection: RedisConnection): void {
    if (this.closed) return;
    const idle = this.idleBlocking[index]!;
    if (idle.length < MAX_IDLE_BLOCKING) {
      idle.push(connection);
    } else {
      this.connections.delete(connection);
      connection.close();
    }
  }

  // --- helpers ---

  private nextSendIndex(): number {
    const index = this.sendIndex;
    this.sendIndex = (index + 1) % this.hosts.length;
    return index;
  }

  private groupKey(group: string): string {
    return `${this.prefix}:group:${group}`;
  }

  private groupHost(group: string): number {
    return consistentHash(group, this.hosts.length);
  }

  private expiryMs(): number {
    return Math.max(1, Math.round(this.settings.expirySeconds * 1000));
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function checkReserved(message: api.Message): void {
  if (Object.prototype.hasOwnProperty.call(message, ASGI_CHANNEL_KEY)) {
    throw new TypeError(`messages must not contain the reserved key ${ASGI_CHANNEL_KEY}`);
  }
}
