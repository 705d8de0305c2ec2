/**
 * A message: a plain object, conventionally with a `type` field (as in Django Channels). `any`
 * values (not `unknown`) so that a message type declared as an `interface` satisfies it: declare
 * yours and receive with `receive<YourMessage>()` for typed fields.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- `unknown` would reject interfaces (above)
export type Message = Record<string, any>;

/**
 * What `send` and `groupSend` take: any object type, so a message declared as an `interface`
 * (which has no index signature, so is not a `Record<string, unknown>`) type-checks. Checked at
 * run time: a plain object of serializable values, else a TypeError.
 */
export type MessageInput = object;

export interface ReceiveOptions {
  /** Cancels the receive: it rejects with an AbortError and no message is lost. */
  signal?: AbortSignal;
}

export interface ReceiveAnyOptions extends ReceiveOptions {
  /** false: resolve at once with null when none of the channels holds a message. Default true. */
  wait?: boolean;
}

/** What receiveAny() resolves to: the message and the channel it came from. */
export interface ReceivedFrom<T extends Message = Message> {
  channel: string;
  message: T;
}

/** Options every backend accepts, with the meanings channels_redis gives them. */
export interface ChannelLayerOptions {
  /** Messages a channel holds before `send` throws `ChannelFull`. Default 100. */
  capacity?: number;
  /**
   * Per-channel capacities: glob pattern (fnmatch: `*`, `?`, `[...]`) to capacity, first match
   * wins. A Map or an object; in an object, key order is the match order.
   */
  channelCapacity?: Map<string, number> | Record<string, number>;
  /** Seconds a message waits in a channel before it is dropped undelivered. Default 60. */
  expiry?: number;
  /** Seconds a group membership lives unless renewed by another `groupAdd`. Default 86400. */
  groupExpiry?: number;
  /**
   * Largest serialized message in bytes; a larger one rejects with MessageTooLarge. Default
   * 16 MiB on every backend (ShmChannelLayer: a quarter of a segment smaller than 64 MiB, and
   * fixed when the segment is created).
   */
  maxMessageSize?: number;
  /** Turns messages into bytes and back. Default: msgpack (msgpackr). */
  serializer?: Serializer;
}

export interface Serializer {
  serialize(message: Message): Uint8Array;
  deserialize(bytes: Uint8Array): Message;
}

/**
 * Deliveries a layer did not make, by reason. ShmChannelLayer counts for the whole segment (every
 * process); InMemoryChannelLayer and RedisChannelLayer count what this instance saw.
 */
export interface DeliveryStats {
  /** groupSend deliveries skipped because the member channel (or the shm segment) was full. */
  deliveriesSkippedFull: number;
  /** Sends refused with ChannelFull (the sender got the error). */
  sendsRefusedFull: number;
  /** Messages dropped undelivered after `expiry` (Redis: those this instance's receivers met). */
  messagesExpired: number;
  /** Messages for '!' channels that were released, or whose process is gone (shm). */
  messagesOrphaned: number;
}

/** The channel-layer interface, as in the ASGI channel-layer spec and Django Channels. */
export interface ChannelLayer {
  readonly extensions: readonly string[];
  send(channel: string, message: MessageInput): Promise<void>;
  /** `T`: the message type the caller expects (not checked at run time), an interface or a type. */
  receive<T extends Message = Message>(channel: string, options?: ReceiveOptions): Promise<T>;
  /**
   * One message from whichever of `channels` has one (Django Channels' receive_many): among the
   * channels holding messages, the oldest message (by send time) comes first; each channel's own
   * order holds. Waits for a send unless `wait: false`, which resolves with null at once when no
   * channel has a message. Cancelled by `signal` like receive(), losing no message. The list is
   * read at every call, so an array changed in place is followed, at 1.6-10 ns per name per call;
   * a frozen one (`Object.freeze`) cannot change and costs nothing: freeze a long list.
   */
  receiveAny<T extends Message = Message>(
    channels: readonly string[],
    options?: ReceiveAnyOptions,
  ): Promise<ReceivedFrom<T> | null>;
  newChannel(prefix?: string): Promise<string>;
  groupAdd(group: string, channel: string): Promise<void>;
  groupDiscard(group: string, channel: string): Promise<void>;
  /**
   * The channels currently in the group, as any process sees them: live, unexpired memberships
   * only (a membership lives `groupExpiry` seconds from its last `groupAdd`); [] for an unknown
   * group. No order is promised.
   */
  groupMembers(group: string): Promise<string[]>;
  /** Resolves to how many member channels got the message (full ones are skipped). */
  groupSend(group: string, message: MessageInput): Promise<number>;
  /**
   * Ends a '!' channel from this instance's newChannel() (a client disconnected): drops its
   * queued messages and group memberships; receives waiting on it reject with ChannelReleased.
   */
  releaseChannel(channel: string): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
  /** Counts of deliveries not made (see DeliveryStats); backends add their own fields. */
  stats(): DeliveryStats;
}
