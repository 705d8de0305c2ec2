import type { Message } from './types.js';

/** Longest channel or group name, in characters. */
export const MAX_NAME_LENGTH = 200;

const CHANNEL_NAME = /^[a-zA-Z\d\-_.]+(![\d\w\-_.]*)?$/;
const GROUP_NAME = /^[a-zA-Z\d\-_.]+$/;
const ALPHABET = "ASCII letters, digits, '-', '_' or '.'";
const CHANNEL_RULE = `${ALPHABET}, with at most one '!'`;

/**
 * Names that passed their pattern lately: every send and receive checks its name, and a program
 * uses the same few names over and over (a lookup costs a fifth of the pattern's test). Emptied
 * when full, so it holds at most VALID_NAMES_KEPT names (200 KB at most) however many a server
 * makes.
 */
const VALID_NAMES_KEPT = 1024;
const validChannels = new Set<string>();
const validGroups = new Set<string>();

function validateName(
  kind: string,
  name: unknown,
  pattern: RegExp,
  rule: string,
  valid: Set<string>,
): void {
  if (typeof name !== 'string') {
    throw new TypeError(`${kind} name must be a string, got ${typeof name}`);
  }
  if (valid.has(name)) return;
  if (name.length === 0 || name.length > MAX_NAME_LENGTH || !pattern.test(name)) {
    throw new TypeError(
      `invalid ${kind} name ${JSON.stringify(name.slice(0, 250))}: use 1 to ${MAX_NAME_LENGTH} ${rule}`,
    );
  }
  if (valid.size >= VALID_NAMES_KEPT) valid.clear();
  valid.add(name);
}

export function validateChannelName(name: unknown): asserts name is string {
  validateName('channel', name, CHANNEL_NAME, CHANNEL_RULE, validChannels);
}

export function validateGroupName(name: unknown): asserts name is string {
  validateName('group', name, GROUP_NAME, ALPHABET, validGroups);
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
