// The four backends behind one interface, created inside a worker process, plus the primary-side
// relay of the cluster-IPC baseline.
//
//   shm       ShmChannelLayer (one segment per measurement, named by the host)
//   redis     RedisChannelLayer on the bench's own redis-server (one key prefix per measurement)
//   inmemory  InMemoryChannelLayer: every role of a measurement runs in ONE process
//   cluster   IpcChannelLayer below: node:cluster workers talk with process.send(); the primary
//             routes every message by channel name (worker -> primary -> worker), the way
//             @socket.io/cluster-adapter relays between workers.
import { randomBytes } from 'node:crypto';
import { InMemoryChannelLayer, RedisChannelLayer, ShmChannelLayer } from '../dist/esm/index.mjs';

export const BACKENDS = ['shm', 'redis', 'inmemory', 'cluster'];

export const LABELS = {
  shm: 'ShmChannelLayer',
  redis: 'RedisChannelLayer',
  inmemory: 'InMemoryChannelLayer',
  cluster: 'cluster IPC',
};

/**
 * A layer of `backend` for this process. `options`: { capacity, shm: {name, size, ...},
 * redis: {url, prefix} }.
 */
export function createLayer(backend, options) {
  const capacity = options.capacity ?? 10000;
  switch (backend) {
    case 'shm':
      return new ShmChannelLayer({ capacity, ...options.shm });
    case 'redis':
      return new RedisChannelLayer({
        capacity,
        hosts: [options.redis.url],
        prefix: options.redis.prefix,
      });
    case 'inmemory':
      return new InMemoryChannelLayer({ capacity });
    case 'cluster':
      return new IpcChannelLayer({ capacity });
    default:
      throw new Error(`unknown backend ${backend}`);
  }
}

/** Waits until everything this layer sent has been acted upon (only the IPC relay needs it). */
export async function settle(layer) {
  if (layer instanceof IpcChannelLayer) await layer.settle();
}

// ---------------------------------------------------------------------------------------------
// Cluster IPC baseline.
//
// worker -> primary:  {ipc:'s', c, m}  send        {ipc:'g', g, m}  groupSend
//                     {ipc:'q', id, op, ...}        control (sub, gadd, gdis, flush, ping), acked
// primary -> worker:  {ipc:'d', c, m}  deliver     {ipc:'D', cs, m} deliver to several local channels
//                     {ipc:'a', id}    ack         {ipc:'f'}        flush local buffers
//
// Messages use the IPC channel's own serialization, set by the host: Node's default 'json' (as
// cluster adapters use it; faster than 'advanced' for small messages on this machine), or
// 'advanced' (the V8 structured clone) where Buffer values must survive (W4). Backpressure: when process.send() returns false (Node's
// write queue to the primary holds 128 KiB or more) the sender's next send waits until that queue
// has been written out. There is no end-to-end capacity for send(): the primary forwards at once
// and never drops one (its write queue to a slow receiver grows instead). Group messages are
// skipped like full members: while a destination's write queue is congested the primary forwards
// at most `capacity` more of them to it and counts the rest as dropped; a worker keeps at most
// `capacity` undelivered group messages per channel.

function waiterList(map, channel) {
  let list = map.get(channel);
  if (!list) {
    list = [];
    map.set(channel, list);
  }
  return list;
}

export class IpcChannelLayer {
  extensions = ['groups', 'flush'];

  constructor({ capacity = 100 } = {}) {
    if (!process.send) throw new Error('the cluster IPC backend runs in a cluster worker');
    this.capacity = capacity;
    this.clientId = randomBytes(6).toString('hex');
    this.queues = new Map(); // channel -> messages delivered here with nobody waiting
    this.waiters = new Map(); // channel -> [{resolve, reject, signal, onAbort}]
    this.subscribed = new Set();
    this.acks = new Map();
    this.nextId = 1;
    this.closed = false;
    this.onMessage = (m) => {
      if (m === null || typeof m !== 'object' || m.ipc === undefined) return;
      switch (m.ipc) {
        case 'd':
          this.deliver(m.c, m.m, false);
          break;
        case 'D':
          for (const c of m.cs) this.deliver(c, m.m, true);
          break;
        case 'a': {
          const resolve = this.acks.get(m.id);
          this.acks.delete(m.id);
          resolve?.(m.r);
          break;
        }
        case 'f':
          this.queues.clear();
          break;
      }
    };
    process.on('message', this.onMessage);
  }

  deliver(channel, message, skipWhenFull) {
    const list = this.waiters.get(channel);
    if (list && list.length) {
      const waiter = list.shift();
      if (list.length === 0) this.waiters.delete(channel);
      waiter.signal?.removeEventListener('abort', waiter.onAbort);
      waiter.resolve(message);
      return;
    }
    const queue = waiterList(this.queues, channel);
    if (!skipWhenFull || queue.length < this.capacity) queue.push(message);
  }

  control(op, fields) {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.acks.set(id, resolve);
      process.send({ ipc: 'q', id, op, ...fields });
    });
  }

  async post(message) {
    if (this.closed) throw new Error('the channel layer is closed');
    while (this.congested) await this.congested;
    if (!process.send(message)) {
      // process.send() returns false once Node's write queue to the primary holds 128 KiB or
      // more: wait (other work may run) until a marker sent now has been written out.
      this.congested = new Promise((resolve) =>
        process.send({ ipc: 'n' }, () => {
          this.congested = undefined;
          resolve();
        }),
      );
    }
  }

  send(channel, message) {
    return this.post({ ipc: 's', c: channel, m: message });
  }

  groupSend(group, message) {
    return this.post({ ipc: 'g', g: group, m: message });
  }

  receive(channel, options = {}) {
    if (this.closed) return Promise.reject(new Error('the channel layer is closed'));
    const queue = this.queues.get(channel);
    if (queue && queue.length) {
      const message = queue.shift();
      if (queue.length === 0) this.queues.delete(channel);
      return Promise.resolve(message);
    }
    if (!this.subscribed.has(channel)) {
      // A named channel: tell the primary this process receives it (in order with our sends).
      this.subscribed.add(channel);
      this.control('sub', { c: channel });
    }
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject, signal, onAbort: undefined };
      if (signal) {
        waiter.onAbort = () => {
          const list = this.waiters.get(channel);
          const at = list ? list.indexOf(waiter) : -1;
          if (at !== -1) list.splice(at, 1);
          reject(signal.reason);
        };
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      waiterList(this.waiters, channel).push(waiter);
    });
  }

  async newChannel(prefix = 'specific') {
    const name = `${prefix}.${this.clientId}!${randomBytes(6).toString('hex')}`;
    this.subscribed.add(name);
    await this.control('sub', { c: name, own: true });
    return name;
  }

  async groupAdd(group, channel) {
    await this.control('gadd', { g: group, c: channel });
  }

  async groupDiscard(group, channel) {
    await this.control('gdis', { g: group, c: channel });
  }

  async flush() {
    this.queues.clear();
    await this.control('flush', {});
  }

  /** Resolves once the primary has routed everything this process sent before. */
  async settle() {
    await this.control('ping', {});
  }

  async close() {
    if (this.closed) return;
    this.closed = true;
    process.off('message', this.onMessage);
    const error = Object.assign(new Error('the channel layer is closed'), { name: 'LayerClosed' });
    for (const list of this.waiters.values()) for (const w of list) w.reject(error);
    this.waiters.clear();
    this.queues.clear();
  }
}

/**
 * The primary's side: routes by channel name. Named channels go round-robin to the processes
 * that receive them (buffered here while nobody does); '!' channels to the
 * process that made them; a group message once to each process holding members, with the list
 * of its member channels.
 */
export class IpcRelay {
  constructor({ capacity = 100 } = {}) {
    this.capacity = capacity;
    this.receivers = new Map(); // channel -> { workers: [], next: 0 }
    this.parked = new Map(); // channel -> messages nobody receives yet
    this.groups = new Map(); // group -> Map(channel -> true)
    this.workers = new Set();
    this.congestion = new Map(); // worker -> { queued } while its write queue is over 128 KiB
    this.dropped = 0;
    this.routed = 0;
  }

  attach(worker) {
    this.workers.add(worker);
    worker.on('exit', () => this.workers.delete(worker));
  }

  deliver(worker, message, droppable) {
    let state = this.congestion.get(worker);
    if (droppable && state && state.queued >= this.capacity) {
      this.dropped++;
      return;
    }
    const ok = worker.send(message);
    this.routed++;
    if (state) state.queued++;
    else if (!ok) {
      state = { queued: 1 };
      this.congestion.set(worker, state);
      worker.send({ ipc: 'n' }, () => {
        if (this.congestion.get(worker) === state) this.congestion.delete(worker);
      });
    }
  }

  /** True if `m` was relay traffic (handled), false for anything else. */
  handle(worker, m) {
    switch (m.ipc) {
      case 's': {
        const entry = this.receivers.get(m.c);
        if (entry && entry.workers.length) {
          const target = entry.workers[entry.next++ % entry.workers.length];
          this.deliver(target, { ipc: 'd', c: m.c, m: m.m }, false);
        } else {
          waiterList(this.parked, m.c).push(m.m);
        }
        return true;
      }
      case 'g': {
        const members = this.groups.get(m.g);
        if (!members) return true;
        const byWorker = new Map();
        for (const channel of members.keys()) {
          const entry = this.receivers.get(channel);
          if (!entry || entry.workers.length === 0) continue;
          const target = entry.workers[entry.next++ % entry.workers.length];
          const list = byWorker.get(target);
          if (list) list.push(channel);
          else byWorker.set(target, [channel]);
        }
        for (const [target, cs] of byWorker) this.deliver(target, { ipc: 'D', cs, m: m.m }, true);
        return true;
      }
      case 'q':
        this.control(worker, m);
        return true;
      case 'n':
        return true;
      default:
        return false;
    }
  }

  control(worker, m) {
    switch (m.op) {
      case 'sub': {
        let entry = this.receivers.get(m.c);
        if (!entry) {
          entry = { workers: [], next: 0 };
          this.receivers.set(m.c, entry);
        }
        if (!entry.workers.includes(worker)) entry.workers.push(worker);
        const parked = this.parked.get(m.c);
        if (parked) {
          this.parked.delete(m.c);
          for (const message of parked)
            this.deliver(worker, { ipc: 'd', c: m.c, m: message }, false);
        }
        break;
      }
      case 'gadd': {
        let members = this.groups.get(m.g);
        if (!members) {
          members = new Map();
          this.groups.set(m.g, members);
        }
        members.set(m.c, true);
        break;
      }
      case 'gdis': {
        const members = this.groups.get(m.g);
        members?.delete(m.c);
        if (members && members.size === 0) this.groups.delete(m.g);
        break;
      }
      case 'flush':
        this.parked.clear();
        this.groups.clear();
        for (const w of this.workers) if (w !== worker && w.isConnected()) w.send({ ipc: 'f' });
        break;
      case 'ping':
        break;
    }
    worker.send({ ipc: 'a', id: m.id });
  }
}
