// Conformance, section 5: process lifetime (backends with childLayer): a waiting receive keeps a
// process alive, an idle layer does not.
import { describe, expect, it } from 'vitest';
import { runNode, type Suite } from './harness.js';

export function describeProcessLifetime({ hooks }: Suite): void {
  describe.skipIf(!hooks.childLayer)('process lifetime', () => {
    it('a waiting receive keeps the process alive until its message comes', async () => {
      const child = await runNode(`${hooks.childLayer!()}
// Unref'd: only the waiting receive may keep this process alive until the send.
setTimeout(() => { layer.send('conf.lifetime', { type: 'late' }); }, 300).unref();
console.log((await layer.receive('conf.lifetime')).type);
await layer.close();`);
      expect(child).toEqual({ code: 0, output: 'late', killed: false });
    });

    it('an idle layer does not keep the process alive, even without close()', async () => {
      const started = Date.now();
      const child = await runNode(`${hooks.childLayer!()}
const channel = await layer.newChannel();
await layer.groupAdd('conf-lifetime', channel);
await layer.send('conf.lifetime-idle', { type: 'x' });
await layer.receive('conf.lifetime-idle');
await layer.receive(channel, { signal: AbortSignal.timeout(20) }).catch((e) => e.name);
await layer.groupDiscard('conf-lifetime', channel);
console.log('idle');`);
      expect(child).toEqual({ code: 0, output: 'idle', killed: false });
      expect(Date.now() - started).toBeLessThan(6000);
    });
  });
}
