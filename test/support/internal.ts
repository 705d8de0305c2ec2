// The package's internals that white-box tests need, from the BUILT dist/cjs modules: the same
// module instances the public entry points load (dist/esm re-exports dist/cjs), so a class or
// error met here is the one users get. The only place tests name a module inside the package:
// when lib/ files move, this file follows them.
import { join } from 'node:path';
import { ROOT } from './package.js';

export { native } from '../../dist/cjs/shm/addon.js';
export { packageError } from '../../dist/cjs/shm/boundary.js';
export { CpuContention } from '../../dist/cjs/shm/cpu-contention.js';
export { Fifo } from '../../dist/cjs/fifo.js';
export { PollWindow } from '../../dist/cjs/shm/poll-window.js';
export { SHM_ERROR_CODES } from '../../dist/cjs/errors.js';
export { validateChannelName, validateGroupName } from '../../dist/cjs/names.js';
export {
  DEFAULT_CAPACITY,
  DEFAULT_EXPIRY_SECONDS,
  DEFAULT_GROUP_EXPIRY_SECONDS,
  DEFAULT_MAX_MESSAGE_SIZE,
} from '../../dist/cjs/settings.js';
export { Outbox } from '../../dist/cjs/socket.io/outbox.js';
export { IoredisConnector, loadIoredis } from '../../dist/cjs/redis/ioredis-connector.js';
export { decodeMessage, encodeMessage, RANDOM_PREFIX_BYTES } from '../../dist/cjs/redis/codec.js';
export { consistentHash, crc32 } from '../../dist/cjs/redis/sharding.js';

/** Absolute path of the built binding loader (exports `native()`), for child processes. */
export const NATIVE_MODULE = join(ROOT, 'dist', 'cjs', 'shm', 'addon.js');
