// The conformance suite against InMemoryChannelLayer: one process, so a "peer" is the layer itself.
import { describeConformance } from './conformance.js';
import { InMemoryChannelLayer } from './support/package.js';

describeConformance('InMemoryChannelLayer', (options) => new InMemoryChannelLayer(options));
