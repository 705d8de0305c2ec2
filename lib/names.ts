import type { Message } from './types.js';

/** Longest channel or group name, in characters. */
export const MAX_NAME_LENGTH = 200;

const CHANNEL_NAME = /^[a-zA-Z\d\-_.]+(![\d\w\-_.]*)?$/;
const GROUP_NAME = /^[a-zA-Z\d\-_.]+$/;
const ALPHABET = "ASCII letters, digits, '-', '_' or '.'";

function validateName(kind: string, name: unknown, pattern: RegExp, rule: string): void {
  if (typeof name !== 'string') {
    throw new TypeError(`${kind} name must be a string, got ${typeof name}`);
  }
  if (name.length === 0 || name.length > MAX_NAME_LENGTH || !pattern.test(name)) {
    throw new TypeError(
      `invalid ${kind} name ${JSON.stringify(name.slice(0, 250))}: use 1 to ${MAX_NAME_LENGTH} ${rule}`,
    );
  }
}

export function validateChannelName(name: unknown): asserts name is string {
  validateName('channel', name, CHANNEL_NAME, `${ALPHABET}, with at most one '!'`);
}

export function validateGroupName(name: unknown): asserts name is string {
  validateName('group', name, GROUP_NAME, ALPHABET);
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
