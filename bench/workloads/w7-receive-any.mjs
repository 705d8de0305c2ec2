// W7 receiveAny: one consumer process serving 100 channels through one receiveAny() loop, fed by
// one producer process sending 128-byte messages round-robin over the 100 channels, against the
// W1 shape (one channel, one receive() loop) measured in the same run by another pair of
// processes, and the same receiveAny() loop given a frozen list (which the layers need not check
// for changes between calls) by a third pair, each with at most 10,000 messages queued behind its
// consumer. Reports msg/s of each, the ratios, and CPU time per message of consumer and producer
// (process.cpuUsage over the measuring window). Backends without receiveAny are skipped.
import { MS, now, sendRetrying, sleepUntil, smallMessage } from '../lib.mjs';
import { commonRoles, SEQ0, window } from './common.mjs';

/**
 * A consumer loop, one call waiting at a time (`any`: receiveAny() over all the channels with the
 * same list every time; else receive() of the one channel). Counts the messages received inside
 * [winStart, winEnd) and the CPU time spent between the first and the last of them: taken inside
 * the loop, since a loop that always finds a message queued runs no timers.
 */
async function consume({ layer, state }, { channels: given, any, frozen, winStart, winEnd }) {
  const channels = frozen ? Object.freeze([...given]) : given;
  state.count = 0;
  state.after = 0;
  state.seen = new Set();
  state.cpuStart = undefined;
  state.cpuUs = undefined;
  (async () => {
    for (;;) {
      let channel;
      try {
        if (any) channel = (await layer.receiveAny(channels)).channel;
        else {
          await layer.receive(channels[0]);
          channel = channels[0]; // (so both loops do the same bookkeeping per message)
        }
      } catch {
        return; // closed
      }
      const t = now();
      if (t >= winEnd) {
        if (state.after++ === 0 && state.cpuStart) {
          const used = process.cpuUsage(state.cpuStart);
          state.cpuUs = used.user + used.system;
        }
      } else if (t >= winStart) {
        if (state.count++ === 0) state.cpuStart = process.cpuUsage();
        state.seen.add(channel);
      }
    }
  })();
  return { listening: channels.length };
}

async function consumed({ state }) {
  return {
    count: state.count,
    after: state.after,
    channelsSeen: state.seen?.size ?? 0,
    cpuUs: state.cpuUs,
  };
}

/**
 * Sends to the channels in turn from `start` until `until` (retrying when full); the CPU time of
 * the sends inside [winStart, until) and how many there were.
 */
async function produceSpread({ layer }, { channels, start, winStart, until }) {
  await sleepUntil(start);
  const counters = { full: 0 };
  let seq = SEQ0;
  let cpuStart;
  let inWindow = 0;
  for (;;) {
    if ((seq & 63) === 0) {
      const t = now();
      if (t >= until) break;
      if (!cpuStart && t >= winStart) {
        cpuStart = process.cpuUsage();
        inWindow = seq;
      }
    }
    await sendRetrying(layer, channels[seq % channels.length], smallMessage(seq), counters);
    seq++;
  }
  const used = cpuStart ? process.cpuUsage(cpuStart) : undefined;
  return {
    sent: seq - SEQ0,
    sentInWindow: cpuStart ? seq - inWindow : 0,
    cpuUs: used ? used.user + used.system : undefined,
    fullRetries: counters.full,
  };
}

export const roles = { ...commonRoles, consume, consumed, produceSpread };

export async function coordinate(ctx) {
  const { duration, channels: channelCount } = ctx.params;
  // The same 10,000 messages queued at most behind each consumer: 10,000 on the one channel, 100
  // on each of the 100. (With 10,000 per channel a producer that outruns its consumer piles up to
  // a million messages behind the receiveAny() loop, which then reads cold memory.)
  const queuedAtMost = 10000;
  const [oneConsumer, oneProducer] = await ctx.spawn(2, { capacity: queuedAtMost });
  const [anyConsumer, anyProducer, frozenConsumer, frozenProducer] = await ctx.spawn(4, {
    capacity: Math.max(1, Math.floor(queuedAtMost / channelCount)),
  });
  const perMessage = (cpuUs, count) => (cpuUs !== undefined && count ? cpuUs / count : null);

  /** One measurement: a consumer loop and a producer spreading over `channels`. */
  async function measure(consumer, producer, channels, any, frozen = false) {
    const { start, winStart, winEnd } = window(ctx.params);
    await consumer.call('consume', { channels, any, frozen, winStart, winEnd });
    const produced = await producer.call('produceSpread', {
      channels,
      start,
      winStart,
      until: winEnd,
    });
    await sleepUntil(winEnd + 200 * MS);
    const got = await consumer.call('consumed');
    return {
      msgsPerSec: got.count / duration,
      channelsSeen: got.channelsSeen,
      consumerCpuUsPerMsg: perMessage(got.cpuUs, got.count),
      producerCpuUsPerMsg: perMessage(produced.cpuUs, produced.sentInWindow),
      fullRetries: produced.fullRetries,
    };
  }

  // The W1 shape (one channel, one receive() loop), then 100 channels and one receiveAny() loop.
  const one = await measure(oneConsumer, oneProducer, ['bench.w6.one'], false);
  const channels = Array.from({ length: channelCount }, (_, i) => `bench.w6.any-${i}`);
  const any = await measure(anyConsumer, anyProducer, channels, true);
  const frozenChannels = channels.map((name) => `${name}.frozen`);
  const frozen = await measure(frozenConsumer, frozenProducer, frozenChannels, true, true);
  await ctx.stop([
    oneConsumer,
    oneProducer,
    anyConsumer,
    anyProducer,
    frozenConsumer,
    frozenProducer,
  ]);
  return {
    oneChannelMsgsPerSec: one.msgsPerSec,
    anyMsgsPerSec: any.msgsPerSec,
    anyVsOne: one.msgsPerSec ? any.msgsPerSec / one.msgsPerSec : null,
    anyFrozenMsgsPerSec: frozen.msgsPerSec,
    anyFrozenVsOne: one.msgsPerSec ? frozen.msgsPerSec / one.msgsPerSec : null,
    channels: channelCount,
    channelsSeen: any.channelsSeen,
    consumerCpuUsPerMsg: {
      one: one.consumerCpuUsPerMsg,
      any: any.consumerCpuUsPerMsg,
      anyFrozen: frozen.consumerCpuUsPerMsg,
    },
    producerCpuUsPerMsg: {
      one: one.producerCpuUsPerMsg,
      any: any.producerCpuUsPerMsg,
      anyFrozen: frozen.producerCpuUsPerMsg,
    },
    fullRetries: { one: one.fullRetries, any: any.fullRetries, anyFrozen: frozen.fullRetries },
  };
}
