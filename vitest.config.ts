import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    testTimeout: 20_000,
    hookTimeout: 20_000,
    pool: 'forks',
    server: {
      deps: {
        // The built package (dist/) is loaded by Node itself, as users load it: Vite's transform
        // does not understand the CommonJS re-exports (Object.defineProperty getters) in dist/cjs.
        external: [/\/dist\//],
      },
    },
  },
});
