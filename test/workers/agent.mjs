// A remote-controlled layer user for the multi-process tests. Runs as a child_process.fork() child
// or as a node:cluster worker; it talks to its parent over the IPC channel only:
//   parent -> agent: { id, op, ...args }        agent -> parent: { id, ok, result | error }
//   agent -> parent (unsolicited): { ready, pid } once, then { event, ... } while an op runs.
// The package under test is the BUILT one, loaded from the absolute path in SHMCH_DIST.
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const dist = process.env.SHMCH_DIST;
if (!dist || !process.send) {
  console.error('agent.mjs: needs SHMCH_DIST and an IPC channel');
  process.exit(2);
}
const { ShmChannelLayer } = await import(pathToFileURL(dist).href);

let layer = null;

function post(message) {
  if (process.connected) process.send(message);
}

function need() {
  if (!layer) throw new Error('agent: no layer is open');
  return layer;
}

const isFull = (e) => e && (e.name === 'ChannelFull' || e.name === 'SegmentFull');

// send() never blocks on a full channel: back off and retry until the deadline.
async function sendRetry(channel, message, deadlineMs = 20_000) {
  const until = Date.now() + deadlineMs;
  for (;;) {
    try {
      await need().send(channel, message);
      return;
    } catch (e) {
      if (!isFull(e) || Date.now() > until) throw e;
      await sleep(1);
    }
  }
}

function receive(channel, timeoutMs = 20_000) {
  return need().receive(channel, { signal: AbortSignal.timeout(timeoutMs) });
}

const ops = {
  async open({ name, options }) {
    layer = new ShmChannelLayer({ name, ...options });
    return { pid: process.pid, slot: layer.stats().slot };
  },
  async send({ channel, message }) {
    await sendRetry(channel, message);
  },
  async receive({ channel, timeoutMs }) {
    return receive(channel, timeoutMs);
  },
  // Receives until a message of type `until` arrives (included in the result).
  async receiveUntil({ channel, until, timeoutMs }) {
    const out = [];
    for (;;) {
      const m = await receive(channel, timeoutMs);
      out.push(m);
      if (m.type === until) return out;
    }
  },
  // Sends `count` times without retrying; returns how many went through and the errors by name.
  async trySend({ channel, message, count = 1 }) {
    let sent = 0;
    const errors = {};
    for (let i = 0; i < count; i++) {
      try {
        await need().send(channel, message);
        sent++;
      } catch (e) {
        errors[e.name] = (errors[e.name] ?? 0) + 1;
      }
    }
    return { sent, errors };
  },
  // `ops` random groupAdd/groupDiscard calls (seeded) over groups g0.. and channels <prefix>.0..;
  // returns the memberships that must exist afterwards, as "group channel" strings.
  async churn({ prefix, groups, channels, ops, seed }) {
    let x = seed >>> 0;
    const random = () => (x = (Math.imul(x, 1664525) + 1013904223) >>> 0) / 2 ** 32;
    const state = new Map();
    for (let i = 0; i < ops; i++) {
      const group = `g${Math.floor(random() * groups)}`;
      const channel = `${prefix}.${Math.floor(random() * channels)}`;
      if (random() < 0.6) {
        await need().groupAdd(group, channel);
        state.set(`${group} ${channel}`, true);
      } else {
        await need().groupDiscard(group, channel);
        state.set(`${group} ${channel}`, false);
      }
      if (i % 16 === 0) await sleep(0);
    }
    return [...state].filter(([, member]) => member).map(([key]) => key);
  },
  async newChannel({ prefix }) {
    return need().newChannel(prefix);
  },
  async groupAdd({ group, channel }) {
    await need().groupAdd(group, channel);
  },
  async groupDiscard({ group, channel }) {
    await need().groupDiscard(group, channel);
  },
  async groupSend({ group, message }) {
    await need().groupSend(group, message);
  },
  async flush() {
    await need().flush();
  },
  async verify() {
    return need().verify();
  },
  async stats() {
    const { channelList, groupList, ...rest } = need().stats();
    return { ...rest, channelList, groupList };
  },
  async close() {
    await need().close();
    layer = null;
  },
  // Sends {type:'item', sender, seq} for seq = 1..count; every `pace` messages yields 1 ms so
  // other processes interleave with us.
  async produce({ channel, sender, count, pace = 0 }) {
    for (let seq = 1; seq <= count; seq++) {
      await sendRetry(channel, { type: 'item', sender, seq });
      if (pace && seq % pace === 0) await sleep(1);
    }
    return { sent: count };
  },
  // Receives items until `count` arrived or a {type:'stop'} message. With reportEvery, also
  // streams the ids received so far in {event:'got', ids} batches (what a killed consumer got).
  async consume({ channel, count = Infinity, reportEvery = 0, timeoutMs }) {
    const items = [];
    let unreported = [];
    let stops = 0;
    while (items.length < count) {
      const m = await receive(channel, timeoutMs);
      if (m.type === 'stop') {
        stops++;
        break;
      }
      items.push([m.sender, m.seq]);
      if (reportEvery) {
        unreported.push([m.sender, m.seq]);
        if (unreported.length >= reportEvery) {
          post({ event: 'got', ids: unreported });
          unreported = [];
        }
      }
    }
    if (reportEvery && unreported.length) post({ event: 'got', ids: unreported });
    return { items, stops };
  },
  // Answers {type:'req', n, reply} on `channel` with {type:'reply', n, by: pid} sent to `reply`,
  // until a {type:'stop'} arrives.
  async serve({ channel }) {
    let served = 0;
    for (;;) {
      const m = await receive(channel, 25_000);
      if (m.type === 'stop') return { served };
      await sendRetry(m.reply, { type: 'reply', n: m.n, by: process.pid });
      served++;
    }
  },
  // Sends `count` requests carrying a fresh reply channel, one at a time; returns the replies.
  async request({ channel, count }) {
    const reply = await need().newChannel('reply');
    const replies = [];
    for (let n = 1; n <= count; n++) {
      await sendRetry(channel, { type: 'req', n, reply });
      replies.push(await receive(reply));
    }
    return { reply, replies };
  },
};

process.on('message', async (/** @type {any} */ command) => {
  const { id, op, ...args } = command;
  try {
    if (!ops[op]) throw new Error(`agent: unknown op ${op}`);
    const result = await ops[op](args);
    post({ id, ok: true, result });
  } catch (e) {
    post({ id, ok: false, error: String(e?.stack ?? e), name: e?.name, code: e?.code });
  }
});
// Orphaned (the test runner or cluster primary died): leave at once.
process.on('disconnect', () => process.exit(0));
post({ ready: true, pid: process.pid });
