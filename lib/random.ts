import { randomBytes } from 'node:crypto';

/** Random lowercase hex, as channels_redis uses (uuid4().hex) for client prefixes and channels. */
export function randomHex(bytes = 16): string {
  return randomBytes(bytes).toString('hex');
}
