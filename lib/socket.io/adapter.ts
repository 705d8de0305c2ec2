// The Socket.IO adapter: one instance per namespace per server, talking to the other servers of
// the namespace through a channel layer.
//
// - Each adapter has a process-local channel (`newChannel('sio')`): its address. It is a member
//   of the namespace's servers group (who is there: serverCount, requests) and of one group per
//   room that has sockets here, so a room broadcast is sent only to the servers with members.
// - A dead process's '!' channels leave every group (shm: within seconds, from the kernel's view
//   of the process), so a SIGKILLed server stops being counted and requests stop waiting for it.
// - Sends never drop silently: see Outbox.
import { randomBytes } from 'node:crypto';
import {
  Adapter,
  type BroadcastOptions,
  type Room,
  type Session,
  type SocketId,
} from 'socket.io-adapter';
import { LayerClosed } from '../errors.js';
import type { ChannelLayer, Message } from '../types.js';
import { GroupNames } from './group-names.js';
import type { LayerSource } from './layer-source.js';
import type { ResolvedAdapterOptions } from './options.js';
import { Outbox } from './outbox.js';
import { decode, encode, Kind, type Envelope, type WireOptions } from './protocol.js';
import { Requests } from './requests.js';
import { SessionStore, type PersistedSession, type RestoredSession } from './session-store.js';

/** Concurrent receives on our channel: each drain of the layer hands over up to this many batches. */
const RECEIVES = 4;
const SOCKET_IO_EVENT = 2;
/** How long close() waits for what was emitted before it to reach the layer. */
const CLOSE_FLUSH_MS = 1000;

interface AckRequest {
  clientCount(count: number): void;
  ack(response: unknown): void;
  /** Servers that have not said how many clients got the packet. */
  counting: Set<string>;
  timer: NodeJS.Timeout;
}

interface RemoteSocketDetails {
  id: SocketId;
  handshake: unknown;
  rooms: Room[];
  data: unknown;
}

interface AdapterStats {
  /** Envelopes received from other servers. */
  received: number;
  /** Envelopes handed to the outbox for other servers. */
  sent: number;
  /** Envelopes not yet handed to the layer (waiting behind a send in flight or a full channel). */
  waiting: number;
  /** Sends retried because the destination's channel was full. */
  retries: number;
  /** Layer messages sent: `sent / batches` envelopes travel per layer message. */
  batches: number;
}

function encodeOptions(opts: BroadcastOptions): WireOptions {
  return {
    rooms: [...opts.rooms],
    except: [...(opts.except ?? [])],
    flags: opts.flags as Record<string, unknown>,
  };
}

function decodeOptions(opts: WireOptions): BroadcastOptions {
  return { rooms: new Set(opts.rooms), except: new Set(opts.except), flags: opts.flags };
}

export class LayerAdapter extends Adapter {
  /** This server's address for this namespace ('' until the adapter is ready). */
  uid = '';
  private layer!: ChannelLayer;
  private readonly names: GroupNames;
  private readonly ready: Promise<void>;
  private readonly outbox: Outbox;
  private readonly requests = new Requests();
  private readonly ackRequests = new Map<string, AckRequest>();
  private readonly closing = new AbortController();
  /** Rooms whose group has our channel (rooms with local sockets, or held for dropped sessions). */
  private readonly joinedRooms = new Set<Room>();
  private readonly sessions: SessionStore | undefined;
  private offsetPrefix = '';
  private offsetCounter = 0;
  private livenessTimer: NodeJS.Timeout | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly counters = { received: 0, sent: 0 };

  constructor(
    nsp: any,
    private readonly source: LayerSource,
    private readonly options: ResolvedAdapterOptions,
  ) {
    super(nsp);
    this.names = new GroupNames(options.prefix, nsp.name);
    const recovery = nsp.server?.opts?.connectionStateRecovery;
    if (recovery) this.sessions = new SessionStore(recovery.maxDisconnectionDuration ?? 120_000);
    this.outbox = new Outbox(
      (channel, message) => this.layer.send(channel, message),
      (error, destination) => this.report(error, `sending to ${destination}`),
      async (destination) => (await this.liveServers()).has(destination),
    );
    this.on('create-room', (room: Room) => {
      // A socket's own room (its id) lives on one server: no group (see `targets`).
      if (!this.sids.has(room)) this.joinRoom(room);
    });
    this.on('delete-room', (room: Room) => {
      if (!this.sessions?.heldRooms().has(room)) this.leaveRoom(room);
    });
    this.ready = this.start();
    this.ready.catch((error: unknown) => this.report(error, 'starting'));
  }

  override init(): Promise<void> {
    return this.ready;
  }

  override async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // What was emitted just before closing still goes out; a full channel of a server that is
    // gone must not hold the shutdown up for long.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.sent().catch(() => {}),
      new Promise((resolve) => (timer = setTimeout(resolve, CLOSE_FLUSH_MS))),
    ]);
    clearTimeout(timer);
    this.closing.abort();
    clearInterval(this.livenessTimer);
    clearInterval(this.renewTimer);
    this.requests.rejectAll(new Error('the adapter was closed'));
    for (const request of this.ackRequests.values()) clearTimeout(request.timer);
    this.ackRequests.clear();
    this.sessions?.clear();
    try {
      await this.ready;
      const leaving = [...this.joinedRooms].map((room) =>
        this.layer.groupDiscard(this.names.room(room), this.uid),
      );
      leaving.push(this.layer.groupDiscard(this.names.servers, this.uid));
      await Promise.allSettled(leaving);
      // Ends our channel: what other servers still send to it is dropped, not queued.
      await this.layer.releaseChannel(this.uid).catch(() => {});
    } catch {
      // never started: nothing to leave
    } finally {
      this.joinedRooms.clear();
      this.outbox.close();
      await this.source.release();
    }
  }

  /** Counters of this adapter's traffic with other servers. */
  stats(): AdapterStats {
    return {
      ...this.counters,
      waiting: this.outbox.waiting(),
      retries: this.outbox.retries,
      batches: this.outbox.batches,
    };
  }

  /**
   * Resolves once everything this adapter published so far is in the layer (in the other
   * servers' channels): before a graceful exit, or to know a broadcast has left.
   */
  async sent(): Promise<void> {
    await this.publishing;
    await this.outbox.idle();
  }

  override async serverCount(): Promise<number> {
    return (await this.liveServers()).size;
  }

  // --- rooms ---

  override addAll(id: SocketId, rooms: Set<Room>): Promise<void> | void {
    super.addAll(id, rooms);
    return this.membershipSettled;
  }

  override del(id: SocketId, room: Room): Promise<void> | void {
    super.del(id, room);
    return this.membershipSettled;
  }

  /** Resolves once the group changes made so far reached the layer (socket.join() awaits it). */
  private membershipSettled: Promise<void> = Promise.resolve();

  private joinRoom(room: Room): void {
    if (this.joinedRooms.has(room) || this.closed) return;
    this.joinedRooms.add(room);
    this.changeMembership(
      () => this.layer.groupAdd(this.names.room(room), this.uid),
      `joining room ${room}`,
    );
  }

  private leaveRoom(room: Room): void {
    if (!this.joinedRooms.delete(room) || this.closed) return;
    this.changeMembership(
      () => this.layer.groupDiscard(this.names.room(room), this.uid),
      `leaving room ${room}`,
    );
  }

  private changeMembership(change: () => Promise<void>, what: string): void {
    // Chained: a join and a quick leave reach the layer in that order.
    this.membershipSettled = this.membershipSettled
      .then(() => this.ready)
      .then(change)
      .catch((error: unknown) => this.report(error, what));
  }

  /** Rooms only sessions kept: leave their groups once no session and no socket needs them. */
  private releaseSessionRooms(): void {
    const held = this.sessions?.heldRooms() ?? new Set<Room>();
    for (const room of [...this.joinedRooms]) {
      if (!this.rooms.has(room) && !held.has(room)) this.leaveRoom(room);
    }
  }

  // --- broadcasting ---

  override broadcast(packet: any, opts: BroadcastOptions): void {
    const offset = this.recoverableOffset(packet, opts);
    if (offset !== undefined) {
      packet.data.push(offset);
      this.sessions!.record(offset, packet.data, opts.rooms, opts.except ?? []);
    }
    if (!opts.flags?.local) {
      // Encoded now: socket.io's local delivery below changes the packet.
      const entry = this.envelope(Kind.Broadcast, { p: packet, o: encodeOptions(opts), f: offset });
      this.publishTo(this.targets(opts.rooms), entry);
    }
    super.broadcast(packet, opts);
  }

  override broadcastWithAck(
    packet: any,
    opts: BroadcastOptions,
    clientCountCallback: (clientCount: number) => void,
    ack: (...args: any[]) => void,
  ): void {
    if (!opts.flags?.local) {
      const requestId = randomBytes(8).toString('hex');
      const request: AckRequest = {
        clientCount: clientCountCallback,
        ack,
        counting: new Set(),
        timer: setTimeout(
          () => this.ackRequests.delete(requestId),
          opts.flags?.timeout ?? this.options.requestsTimeout,
        ),
      };
      this.ackRequests.set(requestId, request);
      const uidAtEncoding = this.uid;
      let entry = this.envelope(Kind.Broadcast, { p: packet, o: encodeOptions(opts) }, requestId);
      // socket.io completes the ack once as many servers reported a count as serverCount() says:
      // servers without sockets in the rooms are counted as zero here, the others answer.
      void Promise.all([this.liveServers(), this.targets(opts.rooms)])
        .then(([live, targets]) => {
          if (!uidAtEncoding) entry = this.reencode(entry);
          for (const server of live) {
            if (server === this.uid) continue;
            if (targets.has(server)) {
              request.counting.add(server);
              this.outbox.send(server, entry);
              this.counters.sent++;
            } else {
              clientCountCallback(0);
            }
          }
          this.watchLiveness();
        })
        .catch((error: unknown) => this.report(error, 'broadcasting with acks'));
    }
    super.broadcastWithAck(packet, opts, clientCountCallback, ack);
  }

  override addSockets(opts: BroadcastOptions, rooms: Room[]): void {
    if (!opts.flags?.local) {
      this.publishTo(
        this.targets(opts.rooms),
        this.envelope(Kind.SocketsJoin, { o: encodeOptions(opts), rooms }),
      );
    }
    super.addSockets(opts, rooms);
  }

  override delSockets(opts: BroadcastOptions, rooms: Room[]): void {
    if (!opts.flags?.local) {
      this.publishTo(
        this.targets(opts.rooms),
        this.envelope(Kind.SocketsLeave, { o: encodeOptions(opts), rooms }),
      );
    }
    super.delSockets(opts, rooms);
  }

  override disconnectSockets(opts: BroadcastOptions, close: boolean): void {
    if (!opts.flags?.local) {
      this.publishTo(
        this.targets(opts.rooms),
        this.envelope(Kind.DisconnectSockets, { o: encodeOptions(opts), close }),
      );
    }
    super.disconnectSockets(opts, close);
  }

  override async fetchSockets(opts: BroadcastOptions): Promise<any[]> {
    const local = await super.fetchSockets(opts);
    if (opts.flags?.local) return local;
    const [live, targets] = await Promise.all([this.liveServers(), this.targets(opts.rooms)]);
    const servers = [...targets].filter((server) => live.has(server));
    if (servers.length === 0) return local;
    return new Promise((resolve, reject) => {
      const requestId = this.requests.start<RemoteSocketDetails[]>(
        servers,
        opts.flags?.timeout ?? this.options.requestsTimeout,
        (error, responses) => {
          if (error) reject(error);
          else resolve([...local, ...responses.flat()]);
        },
      );
      this.sendEach(
        servers,
        this.envelope(Kind.FetchSockets, { o: encodeOptions(opts) }, requestId),
      );
      this.watchLiveness();
    });
  }

  override async serverSideEmit(packet: any[]): Promise<void> {
    const withAck = typeof packet[packet.length - 1] === 'function';
    const ack = withAck
      ? (packet.pop() as (error: Error | null, responses: unknown[]) => void)
      : undefined;
    const servers = [...(await this.liveServers())].filter((server) => server !== this.uid);
    if (!ack) {
      this.sendEach(servers, this.envelope(Kind.ServerSideEmit, { p: packet }));
      return;
    }
    if (servers.length === 0) {
      ack(null, []);
      return;
    }
    const requestId = this.requests.start(
      servers,
      this.options.requestsTimeout,
      (error, responses) => ack(error, responses),
    );
    this.sendEach(servers, this.envelope(Kind.ServerSideEmit, { p: packet }, requestId));
    this.watchLiveness();
  }

  // --- connection-state recovery ---

  override persistSession(session: PersistedSession): void {
    if (!this.sessions || this.closed) return;
    this.sessions.persist(session);
    // Keep receiving the session's rooms while it may come back (its socket leaves them next).
    for (const room of session.rooms) if (room !== session.sid) this.joinRoom(room);
  }

  // socket.io's typings say Promise<Session>; null (not recovered) is what it expects too.
  override async restoreSession(pid: string, offset: string): Promise<Session> {
    if (!this.sessions || this.closed) return null as unknown as Session;
    await this.ready;
    const here = this.sessions.take(pid, offset);
    if (here) {
      this.releaseSessionRooms();
      return here;
    }
    const servers = [...(await this.liveServers())].filter((server) => server !== this.uid);
    if (servers.length === 0) return null as unknown as Session;
    return new Promise((resolve) => {
      const requestId = this.requests.start<RestoredSession | null>(
        servers,
        this.options.requestsTimeout,
        (_error, responses) => resolve((responses.find((response) => response) ?? null) as Session),
        (response) => response !== null,
      );
      this.sendEach(servers, this.envelope(Kind.RestoreSession, { pid, offset }, requestId));
      this.watchLiveness();
    });
  }

  private recoverableOffset(packet: any, opts: BroadcastOptions): string | undefined {
    // As socket.io's own adapters: events without an ack that are not volatile can be replayed.
    if (
      !this.sessions ||
      packet.type !== SOCKET_IO_EVENT ||
      packet.id !== undefined ||
      opts.flags?.volatile
    ) {
      return undefined;
    }
    return `${this.offsetPrefix}${(this.offsetCounter++).toString(36)}`;
  }

  // --- talking to the other servers ---

  private async start(): Promise<void> {
    this.layer = await this.source.acquire();
    this.uid = await this.layer.newChannel('sio');
    // Unique across servers and restarts: the channel's random part.
    this.offsetPrefix = `${this.uid.slice(this.uid.indexOf('!') + 1)}-`;
    await this.layer.groupAdd(this.names.servers, this.uid);
    for (let i = 0; i < RECEIVES; i++) void this.receiveLoop();
    // Memberships expire after the layer's groupExpiry unless renewed.
    this.renewTimer = setInterval(() => this.renewMemberships(), this.options.renewIntervalMs);
    this.renewTimer.unref();
  }

  private renewMemberships(): void {
    if (this.closed) return;
    const renewals = [this.layer.groupAdd(this.names.servers, this.uid)];
    for (const room of this.joinedRooms)
      renewals.push(this.layer.groupAdd(this.names.room(room), this.uid));
    if (this.sessions?.prune(Date.now())) this.releaseSessionRooms();
    void Promise.all(renewals).catch((error: unknown) =>
      this.report(error, 'renewing group memberships'),
    );
  }

  private async receiveLoop(): Promise<void> {
    const signal = this.closing.signal;
    while (!this.closed) {
      let message: Message;
      try {
        message = await this.layer.receive(this.uid, { signal });
      } catch (error) {
        if (this.closed || error instanceof LayerClosed) return;
        this.report(error, 'receiving');
        continue;
      }
      let envelopes: Envelope[];
      try {
        envelopes = decode(message);
      } catch (error) {
        this.report(error, 'decoding a message');
        continue;
      }
      for (const envelope of envelopes) {
        this.counters.received++;
        try {
          this.onEnvelope(envelope);
        } catch (error) {
          this.report(error, `handling a message of kind ${envelope.k}`);
        }
      }
    }
  }

  private onEnvelope(envelope: Envelope): void {
    if (envelope.u === this.uid || envelope.n !== this.nsp.name) return;
    const data = envelope.d as any;
    switch (envelope.k) {
      case Kind.Broadcast: {
        const opts = decodeOptions(data.o);
        if (envelope.r !== undefined) {
          const requestId = envelope.r;
          super.broadcastWithAck(
            data.p,
            opts,
            (count) => this.respond(envelope.u, Kind.BroadcastClientCount, requestId, count),
            (response) => this.respond(envelope.u, Kind.BroadcastAck, requestId, response),
          );
        } else {
          if (data.f !== undefined && this.sessions)
            this.sessions.record(data.f, data.p.data, opts.rooms, opts.except ?? []);
          super.broadcast(data.p, opts);
        }
        return;
      }
      case Kind.SocketsJoin:
        super.addSockets(decodeOptions(data.o), data.rooms);
        return;
      case Kind.SocketsLeave:
        super.delSockets(decodeOptions(data.o), data.rooms);
        return;
      case Kind.DisconnectSockets:
        super.disconnectSockets(decodeOptions(data.o), data.close);
        return;
      case Kind.FetchSockets: {
        const requestId = envelope.r!;
        super.fetchSockets(decodeOptions(data.o)).then(
          (sockets: any[]) =>
            this.respond(
              envelope.u,
              Kind.FetchSocketsResponse,
              requestId,
              sockets.map((socket): RemoteSocketDetails => {
                // The session store may hold circular references, and is server-side only.
                const { sessionStore: _, ...handshake } = socket.handshake ?? {};
                return { id: socket.id, handshake, rooms: [...socket.rooms], data: socket.data };
              }),
            ),
          (error: unknown) => this.report(error, 'fetching sockets'),
        );
        return;
      }
      case Kind.ServerSideEmit: {
        if (envelope.r === undefined) {
          this.nsp._onServerSideEmit(data.p);
          return;
        }
        const requestId = envelope.r;
        let answered = false;
        this.nsp._onServerSideEmit([
          ...data.p,
          (response: unknown) => {
            if (answered) return; // one answer per server
            answered = true;
            this.respond(envelope.u, Kind.ServerSideEmitResponse, requestId, response);
          },
        ]);
        return;
      }
      case Kind.RestoreSession: {
        const session = this.sessions?.take(data.pid, data.offset);
        if (session) this.releaseSessionRooms();
        this.respond(envelope.u, Kind.RestoreSessionResponse, envelope.r!, session ?? null);
        return;
      }
      case Kind.FetchSocketsResponse:
      case Kind.ServerSideEmitResponse:
      case Kind.RestoreSessionResponse:
        this.requests.answer(envelope.r!, envelope.u, data);
        return;
      case Kind.BroadcastClientCount: {
        const request = this.ackRequests.get(envelope.r!);
        if (request?.counting.delete(envelope.u)) request.clientCount(data);
        return;
      }
      case Kind.BroadcastAck:
        this.ackRequests.get(envelope.r!)?.ack(data);
        return;
      default:
        return; // a newer server's message kind: nothing we can do with it
    }
  }

  private envelope(kind: Kind, data: unknown, requestId?: string): Uint8Array {
    // The uid is filled in when the adapter is ready; until then publishTo waits for it.
    return encode({ k: kind, u: this.uid, n: this.nsp.name, r: requestId, d: data });
  }

  private respond(to: string, kind: Kind, requestId: string, data: unknown): void {
    if (this.closed) return;
    this.outbox.send(to, this.envelope(kind, data, requestId));
    this.counters.sent++;
  }

  private sendEach(servers: Iterable<string>, entry: Uint8Array): void {
    for (const server of servers) {
      if (server === this.uid) continue;
      this.outbox.send(server, entry);
      this.counters.sent++;
    }
  }

  /** Publishing happens in call order, even though finding the targets is asynchronous. */
  private publishing: Promise<void> = Promise.resolve();

  private publishTo(targets: Promise<Set<string>>, entry: Uint8Array): void {
    const uid = this.uid;
    this.publishing = this.publishing
      .then(() => targets)
      .then((servers) => {
        // Encoded before the adapter was ready: the uid is missing.
        const bytes = uid ? entry : this.reencode(entry);
        this.sendEach(servers, bytes);
      })
      .catch((error: unknown) => this.report(error, 'publishing'));
  }

  private reencode(entry: Uint8Array): Uint8Array {
    const [envelope] = decode({ type: 'socket.io', b: [entry] });
    return envelope ? encode({ ...envelope, u: this.uid }) : entry;
  }

  /**
   * The other servers that must see a message for `rooms`: every server of the namespace for a
   * namespace-wide message, else the members of the rooms' groups. A room of ours that is a
   * socket id needs nobody else. A room no server joined may be another server's socket id
   * (socket ids get no group, so a connection costs no group record): it goes to every server.
   */
  private async targets(rooms: Set<Room>): Promise<Set<string>> {
    if (!this.uid) await this.ready;
    let targets = new Set<string>();
    for (const room of rooms) {
      if (this.sids.has(room)) continue;
      const members = await this.layer.groupMembers(this.names.room(room));
      if (members.length === 0) {
        targets = await this.liveServers();
        break;
      }
      for (const member of members) targets.add(member);
    }
    if (rooms.size === 0) targets = await this.liveServers();
    targets.delete(this.uid);
    return targets;
  }

  /** The namespace's servers, this one included, as the layer sees them now. */
  private async liveServers(): Promise<Set<string>> {
    if (!this.uid) await this.ready;
    const servers = new Set(await this.layer.groupMembers(this.names.servers));
    if (!this.closed) servers.add(this.uid);
    return servers;
  }

  /** While requests wait for other servers, look for servers that left, so nobody waits for them. */
  private watchLiveness(): void {
    if (this.livenessTimer || this.closed) return;
    this.livenessTimer = setInterval(() => {
      if (this.requests.size === 0 && this.ackRequests.size === 0) {
        clearInterval(this.livenessTimer);
        this.livenessTimer = undefined;
        return;
      }
      this.liveServers().then(
        (live) => {
          this.requests.serversLeft((server) => live.has(server));
          for (const request of this.ackRequests.values()) {
            for (const server of request.counting) {
              if (live.has(server)) continue;
              request.counting.delete(server);
              this.outbox.forget(server);
              request.clientCount(0);
            }
          }
        },
        (error: unknown) => this.report(error, 'checking which servers are live'),
      );
    }, this.options.livenessIntervalMs);
    this.livenessTimer.unref();
  }

  /** Errors have nowhere to go but the adapter's 'error' event (or a process warning). */
  private report(error: unknown, what: string): void {
    if (this.closed) return;
    const failure = error instanceof Error ? error : new Error(String(error));
    if (this.listenerCount('error') > 0)
      this.emit('error', Object.assign(failure, { during: what }));
    else process.emitWarning(`shm-channels/socket.io: ${what}: ${failure.message}`);
  }
}
