import { randomFillSync } from 'node:crypto';
import type { Message, Serializer } from '../types.js';

/**
 * Message bytes as channels_redis stores them: 12 random bytes, then the serialized message.
 * The random prefix makes every sorted-set member unique even for identical messages.
 */
export const RANDOM_PREFIX_BYTES = 12;

/** Key in a message carrying the full name(s) of the process-local channel(s) it is for. */
export const ASGI_CHANNEL_KEY = '__asgi_channel__';

const pool = Buffer.alloc(RANDOM_PREFIX_BYTES * 512);
let poolOffset = pool.length;

function randomPrefixInto(target: Buffer): void {
  if (poolOffset + RANDOM_PREFIX_BYTES > pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  pool.copy(target, 0, poolOffset, poolOffset + RANDOM_PREFIX_BYTES);
  poolOffset += RANDOM_PREFIX_BYTES;
}

/**
 * Serializes `message` for a channel key. `channels` is what channels_redis puts under
 * `__asgi_channel__`: the full channel name (a string) for `send` to a 'x!y' channel, the list of
 * group members sharing the key for `group_send`, nothing for a plain `send` to a normal channel.
 */
export function encodeMessage(
  serializer: Serializer,
  message: Message,
  channels?: string | string[],
): Buffer {
  const body = channels === undefined ? message : { ...message, [ASGI_CHANNEL_KEY]: channels };
  const bytes = serializer.serialize(body);
  const out = Buffer.allocUnsafe(RANDOM_PREFIX_BYTES + bytes.length);
  randomPrefixInto(out);
  out.set(bytes, RANDOM_PREFIX_BYTES);
  return out;
}

export interface Decoded {
  message: Message;
  /** The channel names from `__asgi_channel__` (removed from `message`), if it was there. */
  channels?: string[];
}

export function decodeMessage(serializer: Serializer, bytes: Uint8Array): Decoded {
  if (bytes.length < RANDOM_PREFIX_BYTES)
    throw new TypeError('stored message is shorter than its random prefix');
  const message = serializer.deserialize(bytes.subarray(RANDOM_PREFIX_BYTES));
  if (typeof message !== 'object' || message === null || Array.isArray(message)) {
    throw new TypeError('stored message is not a map');
  }
  if (!Object.prototype.hasOwnProperty.call(message, ASGI_CHANNEL_KEY)) return { message };
  const raw = message[ASGI_CHANNEL_KEY];
  delete message[ASGI_CHANNEL_KEY];
  const channels = (Array.isArray(raw) ? raw : [raw]).filter(
    (c): c is string => typeof c === 'string',
  );
  return { message, channels };
}
