// The conformance suite's shared pieces: what a backend provides (LayerFactory, ConformanceHooks),
// what every section gets (Suite), and the helpers the sections share.
import { randomUUID } from 'node:crypto';
import { expect } from 'vitest';
import { outputOf, spawnModule } from '../support/fixtures.js';
import { ChannelFull } from '../support/package.js';
import type { ChannelLayer, ChannelLayerOptions } from '../support/package.js';

export type LayerFactory = (
  options?: ChannelLayerOptions & Record<string, unknown>,
) => ChannelLayer | Promise<ChannelLayer>;

export interface ConformanceHooks {
  /** Another instance on the same shared state as `layer`, with the same options. Default: `layer`. */
  peer?: (layer: ChannelLayer) => ChannelLayer | Promise<ChannelLayer>;
  /** After each test, once every layer the test opened is closed. */
  afterEach?: () => void | Promise<void>;
  /**
   * What `layer` holds on to: shared records and this instance's own bookkeeping (entries of
   * each kind, by name). Connection churn must bring every count back to where it started.
   */
  footprint?: (layer: ChannelLayer) => Record<string, number> | Promise<Record<string, number>>;
  /**
   * ES module source that imports the package and declares `const layer`, a fresh layer of this
   * backend, for a child Node process (process-lifetime tests). Default: those tests are skipped.
   */
  childLayer?: () => string;
  /** receiveAny() is not implemented by this backend yet: its cases are skipped (temporary). */
  receiveAnyPending?: boolean;
}

/** Runs ES module source in a child Node process; kills it after `ms` (then `killed` is true). */
export async function runNode(
  source: string,
  ms = 8000,
): Promise<{ code: number | null; output: string; killed: boolean }> {
  const { code, output, killed } = await outputOf(spawnModule(source, {}, { imports: [] }), ms);
  return { code, output: output.trim(), killed };
}

/** How long a receive that should succeed may take before the test fails (instead of hanging). */
export const SETTLE_MS = 5000;

export const sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, ms));

export async function sleepUntil(time: number): Promise<void> {
  const left = time - Date.now();
  if (left > 0) await sleep(left);
}

/** Fails the test if `promise` does not settle within `ms`. */
export async function within<T>(
  promise: Promise<T>,
  ms = SETTLE_MS,
  what = 'operation',
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The error `call` rejects with. Layer methods return promises: a synchronous throw, a
 * non-promise result or a fulfilled promise fail the test.
 */
export async function rejection(
  call: () => unknown,
  what = 'call',
  ms = SETTLE_MS,
): Promise<unknown> {
  let result: unknown;
  try {
    result = call();
  } catch (error) {
    throw new Error(
      `${what} threw synchronously instead of returning a rejected promise: ${String(error)}`,
      {
        cause: error,
      },
    );
  }
  if (!(result instanceof Promise)) throw new Error(`${what} did not return a promise`);
  const outcome = await within(
    result.then(
      (value) => ({ ok: true as const, value }),
      (error: unknown) => ({ ok: false as const, error }),
    ),
    ms,
    what,
  );
  if (outcome.ok)
    throw new Error(`${what} resolved (with ${JSON.stringify(outcome.value)}) but should reject`);
  return outcome.error;
}

export function errorName(error: unknown): string | undefined {
  return error instanceof Error ? error.name : undefined;
}

/** Asserts `channel` holds no message: a fresh marker sent now is the next thing received. */
export async function expectEmpty(
  sender: ChannelLayer,
  channel: string,
  receiver: ChannelLayer = sender,
): Promise<void> {
  const marker = { type: 'conformance.marker', id: randomUUID() };
  await sender.send(channel, marker);
  const next = await within(receiver.receive(channel), SETTLE_MS, `receive(${channel})`);
  expect(next, `channel ${channel} should have been empty`).toEqual(marker);
}

/** Sends to `channel` until ChannelFull; returns how many sends succeeded (at most `limit`). */
export async function fill(layer: ChannelLayer, channel: string, limit: number): Promise<number> {
  for (let i = 0; i < limit; i++) {
    try {
      await layer.send(channel, { type: 'fill', i });
    } catch (error) {
      if (error instanceof ChannelFull) return i;
      throw error;
    }
  }
  return limit;
}

export function bytesOf(value: unknown): Buffer {
  if (!ArrayBuffer.isView(value)) throw new Error(`expected binary data, got ${typeof value}`);
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

/** What each section of the suite gets from describeConformance(). */
export interface Suite {
  /** A fresh layer with its own state; closed after the test. */
  open(options?: ChannelLayerOptions & Record<string, unknown>): Promise<ChannelLayer>;
  /** Another instance sharing `layer`'s state (or `layer` itself for a single-instance backend). */
  peerOf(layer: ChannelLayer): Promise<ChannelLayer>;
  hooks: ConformanceHooks;
}
