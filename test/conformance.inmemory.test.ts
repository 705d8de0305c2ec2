// The conformance suite against InMemoryChannelLayer: one process, so a "peer" is the layer itself.
import { describeConformance } from './conformance/index.js';
import { InMemoryChannelLayer, PACKAGE_ESM } from './support/package.js';

/** The layer's own maps (private: read here only to prove that churn leaves them as they were). */
function footprint(layer: unknown): Record<string, number> {
  const inner = layer as {
    queues: Map<string, unknown>;
    groups: Map<string, unknown>;
    pending: { size: number; signalCount: number };
  };
  return {
    queues: inner.queues.size,
    groups: inner.groups.size,
    pending: inner.pending.size,
    signals: inner.pending.signalCount,
  };
}

const childLayer = (): string =>
  `import { InMemoryChannelLayer } from ${JSON.stringify(PACKAGE_ESM)};\nconst layer = new InMemoryChannelLayer();`;

describeConformance('InMemoryChannelLayer', (options) => new InMemoryChannelLayer(options), {
  footprint,
  childLayer,
});
