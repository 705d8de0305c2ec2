// Connection-state recovery on one server: the broadcasts it delivered or received (by offset)
// and the sessions of its sockets that dropped, both kept for maxDisconnectionDuration. A client
// that reconnects to another server gets its session and the packets it missed from this one
// (through a restore request), so recovery works across workers.

export interface PersistedSession {
  sid: string;
  pid: string;
  rooms: string[];
  data: unknown;
}

export interface RestoredSession extends PersistedSession {
  missedPackets: unknown[][];
}

interface LoggedPacket {
  offset: string;
  at: number;
  rooms: string[];
  except: string[];
  data: unknown[];
}

export class SessionStore {
  private readonly log: LoggedPacket[] = [];
  /** Index of the first live entry of `log` (entries before it are expired, spliced in bulk). */
  private head = 0;
  private readonly offsets = new Map<string, LoggedPacket>();
  private readonly sessions = new Map<string, { session: PersistedSession; at: number }>();

  constructor(private readonly maxAgeMs: number) {}

  /** A broadcast packet as delivered with `offset` (its last data element). */
  record(offset: string, data: unknown[], rooms: Iterable<string>, except: Iterable<string>): void {
    const entry: LoggedPacket = {
      offset,
      at: Date.now(),
      rooms: [...rooms],
      except: [...except],
      data,
    };
    this.log.push(entry);
    this.offsets.set(offset, entry);
    this.pruneLog(entry.at);
  }

  persist(session: PersistedSession): void {
    const now = Date.now();
    this.sessions.set(session.pid, { session, at: now });
    this.prune(now);
  }

  has(pid: string): boolean {
    this.prune(Date.now());
    return this.sessions.has(pid);
  }

  /**
   * Hands the session out once, with the packets after `offset` that its rooms would have got;
   * undefined if it is not here, expired, or `offset` is unknown (then it cannot be made whole).
   */
  take(pid: string, offset: string): RestoredSession | undefined {
    this.prune(Date.now());
    const stored = this.sessions.get(pid);
    if (!stored) return undefined;
    this.sessions.delete(pid);
    const from = this.offsets.get(offset);
    if (!from) return undefined;
    const rooms = stored.session.rooms;
    const missedPackets: unknown[][] = [];
    for (let i = this.log.indexOf(from, this.head) + 1; i > 0 && i < this.log.length; i++) {
      const packet = this.log[i]!;
      const included =
        packet.rooms.length === 0 || rooms.some((room) => packet.rooms.includes(room));
      const excluded = rooms.some((room) => packet.except.includes(room));
      if (included && !excluded) missedPackets.push(packet.data);
    }
    return { ...stored.session, missedPackets };
  }

  /** Rooms that sessions kept here still belong to (this server keeps receiving them). */
  heldRooms(): Set<string> {
    const rooms = new Set<string>();
    for (const { session } of this.sessions.values())
      for (const room of session.rooms) rooms.add(room);
    return rooms;
  }

  /** Drops expired packets and sessions; returns true if a session went. */
  prune(now: number): boolean {
    this.pruneLog(now);
    const cutoff = now - this.maxAgeMs;
    let dropped = false;
    for (const [pid, { at }] of this.sessions) {
      if (at > cutoff) continue;
      this.sessions.delete(pid);
      dropped = true;
    }
    return dropped;
  }

  private pruneLog(now: number): void {
    const cutoff = now - this.maxAgeMs;
    let head = this.head;
    while (head < this.log.length && this.log[head]!.at <= cutoff) {
      this.offsets.delete(this.log[head]!.offset);
      head++;
    }
    // Spliced in bulk, not shifted one by one.
    if (head > 1024 && head * 2 > this.log.length) {
      this.log.splice(0, head);
      head = 0;
    }
    this.head = head;
  }

  clear(): void {
    this.log.length = 0;
    this.head = 0;
    this.offsets.clear();
    this.sessions.clear();
  }
}
