// node:cluster primary for the multi-process tests, started by the test with child_process.fork.
// Forks CLUSTER_WORKERS cluster workers running agent.mjs and relays IPC both ways:
//   test -> primary: { worker: i, msg }     primary -> test: { worker: i, msg } | { worker: i, exit }
// and, once every worker is up, { ready: true, pids: [...] }.
import cluster from 'node:cluster';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const count = Number(process.env.CLUSTER_WORKERS ?? 2);
const here = dirname(fileURLToPath(import.meta.url));
cluster.setupPrimary({ exec: join(here, 'agent.mjs'), silent: false });

function post(message) {
  if (process.connected) process.send(message);
}

const workers = [];
const pids = new Array(count);
let ready = 0;
for (let i = 0; i < count; i++) {
  const worker = cluster.fork({ AGENT_INDEX: String(i) });
  workers.push(worker);
  worker.on('message', (msg) => {
    if (msg && msg.ready) {
      pids[i] = msg.pid;
      if (++ready === count) post({ ready: true, pids, primary: process.pid });
      return;
    }
    post({ worker: i, msg });
  });
  worker.on('exit', (code, signal) => post({ worker: i, exit: { code, signal } }));
}

process.on('message', ({ worker, msg }) => {
  const w = workers[worker];
  if (w && w.isConnected()) w.send(msg);
});

// The test went away (or disconnected us on purpose): take the workers down with us.
process.on('disconnect', () => {
  for (const w of workers) {
    try {
      w.process.kill('SIGKILL');
    } catch {}
  }
  process.exit(0);
});
