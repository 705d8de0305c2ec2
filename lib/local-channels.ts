// Process-local ('!') channels, named '<prefix>.<client>!<random>' by newChannel(). The part up
// to the '!' routes the message (channels_redis's "non-local name"); the client id says which
// layer instance made the channel: only that instance may receive from it or release it.
import { validateChannelName } from './names.js';
import { randomHex } from './random.js';

const DOT = 0x2e; // '.'

/** True for the name of a process-local channel. */
export function isProcessLocal(name: string): boolean {
  return name.includes('!');
}

/** The name up to and including its '!'; a normal channel's whole name. */
export function nonLocalPart(name: string): string {
  const bang = name.indexOf('!');
  return bang === -1 ? name : name.slice(0, bang + 1);
}

/** The client id of a '<prefix>.<client>!<random>' name, or undefined for any other name. */
export function clientOf(name: string): string | undefined {
  const bang = name.indexOf('!');
  if (bang === -1) return undefined;
  const dot = name.lastIndexOf('.', bang);
  return dot === -1 || dot + 1 === bang ? undefined : name.slice(dot + 1, bang);
}

/** One layer instance's '!' channels: making new names and telling its own from others'. */
export class LocalChannels {
  /** The client id in this instance's '!' channel names (random hex). */
  readonly client: string;

  constructor(
    clientBytes: number,
    private readonly suffixBytes: number,
  ) {
    this.client = randomHex(clientBytes);
  }

  /** A new name, '<prefix>.<client>!<random>' (what newChannel() returns). */
  make(prefix: string): string {
    const name = `${prefix}.${this.client}!${randomHex(this.suffixBytes)}`;
    validateChannelName(name);
    return name;
  }

  /**
   * True if `name` is a '!' channel this instance made. Read from the name itself, so an instance
   * keeps no list of the channels it handed out (a server making one per connection would grow
   * it forever).
   */
  owns(name: string): boolean {
    // clientOf(name) === this.client, without cutting the client id out of the name (every
    // receive and drain asks, for every channel it looks at).
    const bang = name.indexOf('!');
    if (bang === -1) return false;
    const at = bang - this.client.length;
    return at > 0 && name.charCodeAt(at - 1) === DOT && name.startsWith(this.client, at);
  }

  /** receive(): a '!' channel must be one of ours (a valid name is assumed). */
  checkReceivable(channel: string): void {
    if (isProcessLocal(channel) && !this.owns(channel)) {
      throw new Error(
        `channel ${channel} is process-local and was not created by this layer's newChannel()`,
      );
    }
  }

  /** receiveAny(): each channel a valid name, and a '!' channel one of ours. */
  validateReceivable(channel: unknown): asserts channel is string {
    validateChannelName(channel);
    if (isProcessLocal(channel) && !this.owns(channel)) {
      throw new TypeError(
        `receiveAny(): channel ${channel} is process-local and was not created by this layer's ` +
          `newChannel(); only the instance that made a '!' channel can receive from it`,
      );
    }
  }

  /** releaseChannel() ends only a '!' channel this instance made. */
  checkReleasable(channel: string): void {
    if (!this.owns(channel)) {
      throw new TypeError(
        `releaseChannel(${JSON.stringify(channel)}): only a '!' channel made by this layer's newChannel() can be released`,
      );
    }
  }
}
