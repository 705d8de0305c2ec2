// W2 latency: ping-pong between two processes. The ponger receives on a newChannel() channel and
// answers on the reply channel (also from newChannel()) named in each ping. Round-trip times
// measured by the pinger, after a warm-up.
import { now, smallMessage } from '../lib.mjs';
import { SEQ0 } from './common.mjs';

async function serve({ layer, state }) {
  state.channel = await layer.newChannel('pong');
  (async () => {
    for (;;) {
      let ping;
      try {
        ping = await layer.receive(state.channel);
      } catch {
        return; // closed
      }
      const pong = smallMessage(ping.seq);
      await layer.send(ping.reply, pong);
    }
  })();
  return { channel: state.channel };
}

async function ping({ layer }, { channel, warmupTrips, trips }) {
  const reply = await layer.newChannel('ping');
  const rtts = new Float64Array(trips);
  for (let i = 0; i < warmupTrips + trips; i++) {
    const message = smallMessage(SEQ0 + i);
    message.reply = reply;
    const t0 = now();
    await layer.send(channel, message);
    const pong = await layer.receive(reply);
    const t1 = now();
    if (pong.seq !== SEQ0 + i) throw new Error(`pong ${pong.seq} for ping ${SEQ0 + i}`);
    if (i >= warmupTrips) rtts[i - warmupTrips] = (t1 - t0) / 1000;
  }
  rtts.sort();
  const at = (p) => rtts[Math.min(trips - 1, Math.max(0, Math.ceil((p / 100) * trips) - 1))];
  let sum = 0;
  for (const x of rtts) sum += x;
  return {
    trips,
    p50us: at(50),
    p90us: at(90),
    p99us: at(99),
    p999us: at(99.9),
    minUs: rtts[0],
    maxUs: rtts[trips - 1],
    meanUs: sum / trips,
  };
}

export const roles = { serve, ping };

export async function coordinate(ctx) {
  const [ponger, pinger] = await ctx.spawn(2, { capacity: 100 });
  const { channel } = await ponger.call('serve');
  const cpuBefore = await ctx.cpu([ponger, pinger]);
  const result = await pinger.call('ping', { channel, ...ctx.params });
  const cpuUs = (await ctx.cpu([ponger, pinger])) - cpuBefore;
  await ctx.stop([ponger, pinger]);
  // Both processes (and the relay or redis-server), per round trip.
  return { ...result, cpuUsPerTrip: cpuUs / (ctx.params.warmupTrips + ctx.params.trips) };
}
