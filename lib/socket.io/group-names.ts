// The layer group names a namespace's servers and rooms map to.
import { createHash } from 'node:crypto';

/**
 * A name part safe for the layer (letters, digits, '-', '_') for any namespace or room name:
 * 128 bits of its SHA-256. Two names sharing a key would only send a few messages to a server
 * that then finds no matching socket.
 */
export function nameKey(name: string): string {
  return createHash('sha256').update(name).digest('base64url').slice(0, 22);
}

const ROOM_NAME_CACHE = 10_000;

/** The layer group names of one namespace. */
export class GroupNames {
  readonly servers: string;
  private readonly roomPrefix: string;

  constructor(prefix: string, namespace: string) {
    const base = `${prefix}.${nameKey(namespace)}`;
    this.servers = `${base}.servers`;
    this.roomPrefix = `${base}.room.`;
  }

  /** Group names of recent rooms: a broadcast needs its rooms' names, hashing each is not free. */
  private readonly roomNames = new Map<string, string>();

  room(room: string): string {
    let name = this.roomNames.get(room);
    if (name === undefined) {
      name = this.roomPrefix + nameKey(room);
      if (this.roomNames.size >= ROOM_NAME_CACHE) this.roomNames.clear();
      this.roomNames.set(room, name);
    }
    return name;
  }
}
