// A Socket.IO chat across node:cluster workers, with rooms shared through shm-channels.
//
//   npm run build:ts && node examples/socketio-chat/server.mjs          # http://127.0.0.1:3000
//   node examples/socketio-chat/server.mjs --check                      # bots talk, then exit
//
// Every worker accepts connections on the same port (the cluster hands them out); a message sent
// to a room reaches its members on every worker, and only the workers that have members. The
// clients use the websocket transport only, so no sticky sessions are needed (see the README).
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { availableParallelism } from 'node:os';
import { Server } from 'socket.io';
import { ShmChannelLayer } from 'shm-channels';
import { createAdapter } from 'shm-channels/socket.io';

const PORT = Number(process.env.PORT ?? 3000);
const WORKERS = Number(process.env.WORKERS ?? Math.min(4, availableParallelism()));
const LAYER = process.env.LAYER ?? `socketio-chat-${process.env.USER ?? 'user'}`;
const check = process.argv.includes('--check');

if (cluster.isPrimary) {
  const workers = Array.from({ length: WORKERS }, () => cluster.fork());
  let listening = 0;
  cluster.on('listening', () => {
    if (++listening < WORKERS) return;
    console.log(`chat on http://127.0.0.1:${PORT} with ${WORKERS} workers (layer '${LAYER}')`);
    if (check) runBots().then(shutdown, (error) => shutdown(error));
  });
  const shutdown = (error) => {
    if (error) console.error(error);
    let alive = workers.length;
    for (const worker of workers) {
      worker.once('exit', () => {
        // A check leaves nothing behind in /dev/shm; a real server's layer outlives restarts.
        if (--alive === 0 && check) ShmChannelLayer.destroy(LAYER);
      });
      worker.kill();
    }
    process.exitCode = error ? 1 : 0;
  };
  process.on('SIGINT', () => shutdown());
} else {
  const page = readFileSync(new URL('./index.html', import.meta.url));
  const http = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(page);
  });
  const io = new Server(http, {
    transports: ['websocket'],
    // The adapter opens this ShmChannelLayer and closes it with the server.
    adapter: createAdapter({ name: LAYER }),
  });
  io.on('connection', (socket) => {
    const { user = 'anonymous', room = 'lobby' } = socket.handshake.auth;
    socket.data = { user, room, worker: process.pid };
    socket.join(room);
    socket.to(room).emit('system', `${user} joined ${room} (worker ${process.pid})`);
    socket.on('say', (text, ack) => {
      io.to(room).emit('chat', { user, text: String(text).slice(0, 500), worker: process.pid });
      ack?.();
    });
    socket.on('who', async (ack) => {
      // Every worker's sockets in the room, through the adapter.
      const sockets = await io.in(room).fetchSockets();
      ack(sockets.map((s) => s.data));
    });
    socket.on('disconnect', () => socket.to(room).emit('system', `${user} left`));
  });
  http.listen(PORT, '127.0.0.1');
  process.on('SIGTERM', () => io.close(() => process.exit(0)));
}

/** --check: three bots in one room (on whichever workers the cluster picks) and one elsewhere. */
async function runBots() {
  const { io: connect } = await import('socket.io-client');
  const bot = (user, room) =>
    new Promise((resolve, reject) => {
      const socket = /** @type {any} */ (
        connect(`http://127.0.0.1:${PORT}`, {
          transports: ['websocket'],
          auth: { user, room },
        })
      );
      socket.messages = [];
      socket.on('chat', (message) => socket.messages.push(message));
      socket.once('connect', () => resolve(socket));
      socket.once('connect_error', reject);
    });
  const bots = await Promise.all([
    bot('ann', 'tea'),
    bot('bob', 'tea'),
    bot('cy', 'tea'),
    bot('dee', 'coffee'),
  ]);
  const who = await bots[0].emitWithAck('who');
  console.log('in #tea:', who.map((d) => `${d.user}@worker${d.worker}`).join(', '));
  await bots[1].emitWithAck('say', 'hello tea');
  const deadline = Date.now() + 5000;
  while (!bots.slice(0, 3).every((b) => b.messages.length === 1) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  for (const b of bots)
    console.log(
      `${b.auth.user} got:`,
      b.messages.map((m) => `${m.user}: ${m.text} (via worker ${m.worker})`),
    );
  for (const b of bots) b.disconnect();
  if (!bots.slice(0, 3).every((b) => b.messages.length === 1) || bots[3].messages.length !== 0) {
    throw new Error(
      'chat check failed: every #tea bot should get the message once, the #coffee bot none',
    );
  }
  console.log('chat check passed');
}
