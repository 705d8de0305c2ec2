// Tests exercise the built package (what users import), not lib/ directly: run `npm run build:ts` first.
export * from '../../dist/esm/index.mjs';
