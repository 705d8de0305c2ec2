import type { Waiter } from './pending-receives.js';

/**
 * The channels of a receiveAny() list, made once per distinct list (keyed by its contents) and
 * reused by every call with the same list, so a loop over 100 channels does not pay for 100
 * channels per message. Backends keep what they need per set in `state`.
 */
export class ChannelSet {
  /** Receives waiting on any of the channels, oldest first. */
  waiters: Waiter[] = [];
  /** For the backend (native set id, which channels may hold messages...). */
  state: unknown;
  lastUsed = Date.now();
  /** Swept: a list that resolved to this set resolves afresh. */
  dropped = false;
  private readonly members: Set<string>;

  constructor(
    readonly key: string,
    /** Distinct, validated names, in the order the caller gave them. */
    readonly channels: readonly string[],
  ) {
    this.members = new Set(channels);
  }

  has(channel: string): boolean {
    return this.members.has(channel);
  }
}
