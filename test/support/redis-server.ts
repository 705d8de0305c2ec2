/**
 * Starts throwaway redis-server processes for the tests: loopback only, a free port, no
 * persistence (`--save '' --appendonly no`), a temporary working directory.
 *
 * Without a `redis-server` binary the Redis tests are skipped with a loud message, unless CI is
 * set: then they fail, so a CI image without Redis cannot pass silently.
 */
import { existsSync } from 'node:fs';
import { findRedisServer } from '../../scripts/redis-server.mjs';

export { findBinary, freePort, RedisServer } from '../../scripts/redis-server.mjs';

const REDIS_SERVER = findRedisServer();

/**
 * True when redis-server is installed. Missing: throws under CI, else warns loudly and returns
 * false (use with `describe.skipIf(!haveRedisServer())`).
 */
export function haveRedisServer(): boolean {
  if (REDIS_SERVER && existsSync(REDIS_SERVER)) return true;
  if (process.env.CI) {
    throw new Error(
      'redis-server is not installed and CI is set: install it (Debian: apt-get install redis-server)',
    );
  }
  console.warn(
    '\n' +
      '************************************************************************\n' +
      '*  redis-server NOT FOUND: the Redis channel-layer tests are SKIPPED.  *\n' +
      '*  Install it (Debian: apt-get install redis-server) to run them.      *\n' +
      '************************************************************************\n',
  );
  return false;
}
