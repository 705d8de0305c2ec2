import type { ChannelSet } from './channel-set.js';
import { abortError, LayerClosed } from './errors.js';
import type { LocalChannels } from './local-channels.js';
import { validateChannelName, validateGroupName, validateMessage } from './names.js';
import type { PendingReceives } from './pending-receives.js';
import { defaultSerializer } from './serializer.js';
import { commonSettings, type CommonSettings } from './settings.js';
import type { ChannelLayerOptions, DeliveryStats, MessageInput, Serializer } from './types.js';

/**
 * What every backend does the same way: the shared options checked and defaulted, the
 * serializer, this instance's '!' channels (newChannel()), and the argument checks that open
 * each operation.
 */
export abstract class ChannelLayerBase {
  readonly extensions = ['groups', 'flush'] as const;
  protected readonly settings: CommonSettings;
  protected readonly serializer: Serializer;
  protected readonly local: LocalChannels;
  protected closed = false;
  /**
   * Deliveries not made, as this instance saw them (what stats() reports on the backends that
   * count in-process; ShmChannelLayer reports the whole segment's counts instead).
   */
  protected readonly counts: DeliveryStats = {
    deliveriesSkippedFull: 0,
    sendsRefusedFull: 0,
    messagesExpired: 0,
    messagesOrphaned: 0,
  };

  constructor(options: ChannelLayerOptions, local: LocalChannels) {
    this.settings = commonSettings(options);
    this.serializer = options.serializer ?? defaultSerializer;
    this.local = local;
  }

  async newChannel(prefix = 'specific'): Promise<string> {
    this.checkOpen();
    return this.local.make(prefix);
  }

  protected checkOpen(): void {
    if (this.closed) throw new LayerClosed();
  }

  /** receive(): open, a valid channel name, and a '!' channel only if this instance made it. */
  protected checkReceive(channel: string): void {
    this.checkOpen();
    validateChannelName(channel);
    this.local.checkReceivable(channel);
  }

  /**
   * receiveAny(): open, and every channel one this instance may receive from; the list's channel
   * set in `pending`. With `signal`, an aborted one rejects now.
   */
  protected receivableSet(
    pending: PendingReceives,
    channels: readonly string[],
    signal?: AbortSignal,
  ): ChannelSet {
    this.checkOpen();
    const set = pending.setFor(channels, (channel) => this.local.validateReceivable(channel));
    if (signal?.aborted) throw abortError(signal);
    return set;
  }

  /** send(): open, a valid channel name, a plain-object message. */
  protected checkSend(channel: string, message: MessageInput): void {
    this.checkOpen();
    validateChannelName(channel);
    validateMessage(message);
  }

  /** groupSend(): open, a valid group name, a plain-object message. */
  protected checkGroupSend(group: string, message: MessageInput): void {
    this.checkOpen();
    validateGroupName(group);
    validateMessage(message);
  }

  /** groupAdd() and groupDiscard(): open, a valid group name and channel name. */
  protected checkMembership(group: string, channel: string): void {
    this.checkOpen();
    validateGroupName(group);
    validateChannelName(channel);
  }

  /** releaseChannel(): open, and a '!' channel this instance made. */
  protected checkRelease(channel: string): void {
    this.checkOpen();
    validateChannelName(channel);
    this.local.checkReleasable(channel);
  }
}
