import type { Message } from './types.js';

/** Longest channel or group name, in characters. */
export const MAX_NAME_LENGTH = 200;

const CHANNEL_NAME = /^[a-zA-Z\d\-_.]+(![\d\w\-_.]*)?$/;
const GROUP_NAME = /^[a-zA-Z\d\-_.]+$/;

export function validateChannelName(name: unknown): asserts name is string {
  if (typeof name !== 'string') {
    throw new TypeError(`channel name must be a string, got ${typeof name}`);
  }
  if (name.length === 0 || name.length > MAX_NAME_LENGTH || !CHANNEL_NAME.test(name)) {
    throw new TypeError(
      `invalid channel name ${JSON.stringify(name.slice(0, 250))}: use 1 to ${MAX_NAME_LENGTH} ` +
        `ASCII letters, digits, '-', '_' or '.', with at most one '!'`,
    );
  }
}

export function validateGroupName(name: unknown): asserts name is string {
  if (typeof name !== 'string') {
    throw new TypeError(`group name must be a string, got ${typeof name}`);
  }
  if (name.length === 0 || name.length > MAX_NAME_LENGTH || !GROUP_NAME.test(name)) {
    throw new TypeError(
      `invalid group name ${JSON.stringify(name.slice(0, 250))}: use 1 to ${MAX_NAME_LENGTH} ` +
        `ASCII letters, digits, '-', '_' or '.'`,
    );
  }
}

export function validateMessage(message: unknown): asserts message is Message {
  if (typeof message !== 'object' || message === null || Array.isArray(message)) {
    throw new TypeError('message must be a plain object');
  }
  const proto = Object.getPrototypeOf(message);
  if (proto !== Object.prototype && proto !== null) {
    throw new TypeError('message must be a plain object, not an instance of a class');
  }
}

/** True for names of process-local channels ('prefix!suffix'). */
export function isProcessLocal(name: string): boolean {
  return name.includes('!');
}

/**
 * True if `name` is a '!' channel that newChannel() of the instance with this client id made
 * ('<prefix>.<client>!<random>'). Read from the name itself, so an instance keeps no list of the
 * channels it handed out (a server making one per connection would grow it forever).
 */
export function isOwnLocalChannel(name: string, client: string): boolean {
  const bang = name.indexOf('!');
  if (bang === -1) return false;
  const dot = name.lastIndexOf('.', bang);
  return dot !== -1 && bang - dot - 1 === client.length && name.startsWith(client, dot + 1);
}

/** releaseChannel() ends only a '!' channel this instance made. */
export function checkReleasable(channel: string, client: string): void {
  if (!isOwnLocalChannel(channel, client)) {
    throw new TypeError(
      `releaseChannel(${JSON.stringify(channel)}): only a '!' channel made by this layer's newChannel() can be released`,
    );
  }
}

/** A channel a receiveAny() of the instance with this client id may name. */
export function validateReceivable(channel: unknown, client: string): asserts channel is string {
  validateChannelName(channel);
  if (channel.includes('!') && !isOwnLocalChannel(channel, client)) {
    throw new TypeError(
      `receiveAny(): channel ${channel} is process-local and was not created by this layer's ` +
        `newChannel(); only the instance that made a '!' channel can receive from it`,
    );
  }
}
