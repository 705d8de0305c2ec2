// The channel-layer conformance suite: every backend must pass it unchanged.
//
// A backend's test file calls describeConformance() with a factory:
//   - makeLayer(options) returns a fresh layer with its own, empty shared state (tests never see
//     each other's channels or groups);
//   - hooks.peer(layer) returns another instance on the same shared state as `layer` (what another
//     process attached to the same layer would be), opened with the same options. Without it, the
//     peer is `layer` itself (a single-process backend such as InMemoryChannelLayer);
//   - hooks.afterEach runs after each test, once the suite has closed every layer it opened
//     (e.g. to remove the test's segment, keys or files).
// Nothing here may depend on one backend: backend-specific checks belong in that backend's file.
//
// The sections are the files beside this one, numbered in the order they run.
import { afterEach, describe } from 'vitest';
import type { ChannelLayer, ChannelLayerOptions } from '../support/package.js';
import {
  SETTLE_MS,
  within,
  type ConformanceHooks,
  type LayerFactory,
  type Suite,
} from './harness.js';
import { describeSendAndReceive } from './01-send-receive.js';
import { describeNewChannel } from './02-new-channel.js';
import { describeGroups } from './03-groups.js';
import { describeGroupSendReach } from './04-group-send-reach.js';
import { describeProcessLifetime } from './05-process-lifetime.js';
import { describeCapacity } from './06-capacity.js';
import { describeExpiry } from './07-expiry.js';
import { describeFlush } from './08-flush.js';
import { describeNameValidation } from './09-name-validation.js';
import { describeMessageValidation } from './10-message-validation.js';
import { describeCancellation } from './11-cancellation.js';
import { describeConcurrentReceivers } from './12-concurrent-receivers.js';
import { describeReceiveAny } from './13-receive-any.js';
import { describeClose } from './14-close.js';
import { describeLayerInterface } from './15-interface.js';

export type { ConformanceHooks, LayerFactory } from './harness.js';

export function describeConformance(
  backendName: string,
  makeLayer: LayerFactory,
  hooks: ConformanceHooks = {},
): void {
  describe(`channel layer conformance: ${backendName}`, () => {
    let opened: ChannelLayer[] = [];

    /** A fresh layer with its own state; closed after the test. */
    async function open(
      options?: ChannelLayerOptions & Record<string, unknown>,
    ): Promise<ChannelLayer> {
      const layer = await makeLayer(options);
      opened.push(layer);
      return layer;
    }

    /** Another instance sharing `layer`'s state (or `layer` itself for a single-instance backend). */
    async function peerOf(layer: ChannelLayer): Promise<ChannelLayer> {
      if (!hooks.peer) return layer;
      const peer = await hooks.peer(layer);
      opened.push(peer);
      return peer;
    }

    afterEach(async () => {
      const layers = opened.reverse();
      opened = [];
      const failures: unknown[] = [];
      for (const layer of layers) {
        try {
          await within(layer.close(), SETTLE_MS, 'close()');
        } catch (error) {
          failures.push(error);
        }
      }
      await hooks.afterEach?.();
      if (failures.length) throw failures[0];
    });

    const suite: Suite = { open, peerOf, hooks };
    describeSendAndReceive(suite);
    describeNewChannel(suite);
    describeGroups(suite);
    describeGroupSendReach(suite);
    describeProcessLifetime(suite);
    describeCapacity(suite);
    describeExpiry(suite);
    describeFlush(suite);
    describeNameValidation(suite);
    describeMessageValidation(suite);
    describeCancellation(suite);
    describeConcurrentReceivers(suite);
    describeReceiveAny(suite);
    describeClose(suite);
    describeLayerInterface(suite);
  });
}
