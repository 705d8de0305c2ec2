// What servers say to each other through the layer. A layer message
// `{ type: 'socket.io', b: [<msgpack bytes>, ...] }` carries a batch of envelopes. Packing them
// here (msgpackr, plain maps) carries what socket.io carries (Buffers, Dates, nested data, class
// instances as plain objects) past the layer's plain-object check, and never fails with "could
// not be cloned".
import { Packr } from 'msgpackr';

export const enum Kind {
  Broadcast = 1,
  SocketsJoin = 2,
  SocketsLeave = 3,
  DisconnectSockets = 4,
  FetchSockets = 5,
  FetchSocketsResponse = 6,
  ServerSideEmit = 7,
  ServerSideEmitResponse = 8,
  BroadcastClientCount = 9,
  BroadcastAck = 10,
  RestoreSession = 11,
  RestoreSessionResponse = 12,
}

/** Broadcast options as they travel: Sets become arrays. */
export interface WireOptions {
  rooms: string[];
  except: string[];
  flags?: Record<string, unknown>;
}

export interface Envelope {
  /** Kind of message. */
  k: Kind;
  /** The sender's server channel: where responses go. */
  u: string;
  /** Namespace name. */
  n: string;
  /** Request id, for requests and their responses. */
  r?: string;
  /** Everything else, by kind. */
  d?: unknown;
}

const packr = new Packr({
  useRecords: false,
  mapsAsObjects: true,
  moreTypes: true,
  int64AsType: 'auto' as 'number',
});

/** Layer message type of every adapter message. */
export const MESSAGE_TYPE = 'socket.io';

export function encode(envelope: Envelope): Uint8Array {
  return packr.pack(envelope);
}

/** The envelopes of one layer message (a batch), or [] for a message that is not ours. */
export function decode(message: Record<string, unknown>): Envelope[] {
  if (message.type !== MESSAGE_TYPE || !Array.isArray(message.b)) return [];
  const out: Envelope[] = [];
  for (const entry of message.b) {
    if (!(entry instanceof Uint8Array)) continue;
    const envelope = packr.unpack(entry) as Envelope;
    if (envelope && typeof envelope === 'object' && typeof envelope.u === 'string')
      out.push(envelope);
  }
  return out;
}
