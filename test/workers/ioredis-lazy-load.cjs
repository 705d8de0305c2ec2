// Whether the package loads ioredis only when a RedisChannelLayer is constructed, and says what
// to install when it is missing (test/redis.test.ts). CommonJS: it reads require.cache and hides
// ioredis from Node's resolver. Prints { afterImport, afterInMemory, error, afterConstruct }.
//   node ioredis-lazy-load.cjs
const Module = /** @type {any} */ (require('node:module'));
const lib = require('shm-channels');

const loaded = () => Object.keys(require.cache).some((k) => k.includes('/node_modules/ioredis/'));
/** @type {Record<string, unknown>} */
const out = { afterImport: loaded() };
const memory = new lib.InMemoryChannelLayer();
out.afterInMemory = loaded();
const resolve = Module._resolveFilename;
Module._resolveFilename = function (/** @type {string} */ request, /** @type {any[]} */ ...rest) {
  if (request === 'ioredis') {
    const error = /** @type {Error & { code?: string }} */ (
      new Error("Cannot find module 'ioredis'")
    );
    error.code = 'MODULE_NOT_FOUND';
    throw error;
  }
  return resolve.call(this, request, ...rest);
};
try {
  new lib.RedisChannelLayer();
  out.error = null;
} catch (error) {
  out.error = /** @type {Error} */ (error).message;
}
Module._resolveFilename = resolve;
const layer = new lib.RedisChannelLayer({ hosts: ['redis://127.0.0.1:1'] });
out.afterConstruct = loaded();
layer
  .close()
  .then(() => memory.close())
  .then(() => console.log(JSON.stringify(out)));
