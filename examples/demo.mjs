// A chat room and a job queue across node:cluster workers, on the shared-memory layer: no server.
//
//   npm run demo            (4 workers, 5 seconds)
//   node examples/demo.mjs --workers 2 --seconds 10
//
// Every worker makes a reply channel with newChannel() and joins group 'room.lobby' with it.
// Workers chat with groupSend (each message reaches every worker once), pull jobs from the shared
// channel 'jobs' (each job goes to exactly one worker), serve both channels from one receiveAny()
// loop, and send results to the primary's reply channel. The primary prints a live count of
// messages per second.
import cluster from 'node:cluster';
import { parseArgs } from 'node:util';
import { ChannelFull, ShmChannelLayer } from '../dist/esm/index.mjs';

const { values: args } = parseArgs({
  options: { workers: { type: 'string', default: '4' }, seconds: { type: 'string', default: '5' } },
});
const WORKERS = Number(args.workers);
const SECONDS = Number(args.seconds);
const LAYER = `demo-${process.env.DEMO_ID ?? process.pid}`;

if (cluster.isPrimary) {
  await primary();
} else {
  await worker();
}

async function primary() {
  ShmChannelLayer.destroy(LAYER);
  const layer = new ShmChannelLayer({ name: LAYER, capacity: 1000 });
  const results = await layer.newChannel('results');
  console.log(
    `shm-channels demo: layer '${LAYER}' in /dev/shm, ${WORKERS} cluster workers, ${SECONDS} s`,
  );

  let ready = 0;
  const counts = new Map();
  for (let i = 0; i < WORKERS; i++) {
    const w = cluster.fork({
      DEMO_ID: String(process.pid),
      RESULTS: results,
      WORKER_NO: String(i + 1),
    });
    w.on('message', (m) => {
      if (m.ready) {
        ready++;
        console.log(`  worker ${m.no} (pid ${m.pid}) joined room.lobby with channel ${m.channel}`);
      }
      if (m.counts) counts.set(m.no, m.counts);
    });
  }
  while (ready < WORKERS) await new Promise((r) => setTimeout(r, 20));

  // Jobs: the primary fills the shared 'jobs' channel; whichever worker is free takes each one.
  let jobsSent = 0;
  let resultsReceived = 0;
  const stopAt = Date.now() + SECONDS * 1000;
  const feeder = (async () => {
    while (Date.now() < stopAt) {
      try {
        await layer.send('jobs', { type: 'job', id: ++jobsSent, n: jobsSent % 1000 });
      } catch (error) {
        if (!(error instanceof ChannelFull)) throw error;
        jobsSent--;
        await new Promise((r) => setImmediate(r)); // full: let workers catch up
      }
    }
  })();
  const collector = (async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), SECONDS * 1000 + 500);
    try {
      for (;;) {
        await layer.receive(results, { signal: controller.signal });
        resultsReceived++;
      }
    } catch (error) {
      if (error.name !== 'AbortError') throw error;
    }
  })();

  let last = { at: Date.now(), stats: layer.stats() };
  const ticker = setInterval(() => {
    const stats = layer.stats();
    const now = Date.now();
    const rate = ((stats.messagesReceived - last.stats.messagesReceived) * 1000) / (now - last.at);
    console.log(
      `  ${Math.round(rate).toLocaleString('en-US').padStart(10)} msg/s delivered` +
        ` | jobs sent ${jobsSent}, results back ${resultsReceived}` +
        ` | ${stats.processes} processes attached, ${stats.channels} channels, arena ${(stats.arenaUsedBytes / 1024).toFixed(0)} KiB used`,
    );
    last = { at: now, stats };
  }, 1000);

  await feeder;
  await collector;
  clearInterval(ticker);
  for (const w of Object.values(cluster.workers)) w.send({ stop: true });
  await new Promise((resolve) =>
    cluster.on('exit', () => Object.keys(cluster.workers).length === 0 && resolve()),
  );

  console.log('summary:');
  let chats = 0;
  for (const [no, c] of [...counts].sort((a, b) => a[0] - b[0])) {
    console.log(
      `  worker ${no}: ${c.jobs} jobs done, ${c.chatSent} chat messages sent, ${c.chatReceived} received`,
    );
    chats += c.chatSent;
  }
  const totalJobs = [...counts.values()].reduce((s, c) => s + c.jobs, 0);
  console.log(
    `  ${totalJobs} jobs done by ${counts.size} workers (each job exactly once: ${totalJobs === resultsReceived})`,
  );
  console.log(`  ${chats} chat messages fanned out to ${WORKERS} workers each`);
  const problems = layer.verify();
  console.log(`  segment check: ${problems.length === 0 ? 'consistent' : problems.join('; ')}`);
  await layer.close();
  ShmChannelLayer.destroy(LAYER);
}

async function worker() {
  const no = Number(process.env.WORKER_NO);
  const layer = new ShmChannelLayer({ name: LAYER, capacity: 1000 });
  const inbox = await layer.newChannel();
  await layer.groupAdd('room.lobby', inbox);
  const counts = { jobs: 0, chatSent: 0, chatReceived: 0 };
  let running = true;
  const controller = new AbortController();
  process.on('message', async (/** @type {any} */ m) => {
    if (!m.stop) return;
    running = false;
    controller.abort();
  });
  process.send({ ready: true, no, pid: process.pid, channel: inbox });

  // One loop serves both channels: receiveAny() gives the oldest message of either, so a flood
  // of jobs does not hold back a chat message. Frozen: a list that cannot change is not
  // compared again at every call.
  const channels = Object.freeze([inbox, 'jobs']);
  try {
    while (running) {
      const received = await layer.receiveAny(channels, { signal: controller.signal });
      if (!received) continue; // (only with `wait: false`)
      if (received.channel === inbox) {
        counts.chatReceived++;
        continue;
      }
      const job = received.message;
      counts.jobs++;
      await sendPatiently(layer, process.env.RESULTS, {
        type: 'result',
        id: job.id,
        by: no,
        square: job.n * job.n,
      });
      if (counts.jobs % 500 === 0) {
        await layer.groupSend('room.lobby', {
          type: 'chat',
          from: no,
          text: `${counts.jobs} jobs done`,
        });
        counts.chatSent++;
      }
    }
  } catch (error) {
    if (error.name !== 'AbortError') throw error;
  }
  await layer.groupDiscard('room.lobby', inbox);
  process.send({ counts, no });
  await layer.close();
  process.disconnect();
}

// send() never blocks: a full channel throws ChannelFull, and the caller decides. Here: retry.
async function sendPatiently(layer, channel, message) {
  for (;;) {
    try {
      return await layer.send(channel, message);
    } catch (error) {
      if (!(error instanceof ChannelFull)) throw error;
      await new Promise((r) => setTimeout(r, 1));
    }
  }
}
