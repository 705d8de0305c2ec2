/** The channel holds `capacity` messages already: `send` never waits for room. */
export class ChannelFull extends Error {
  constructor(message = 'channel is full') {
    super(message);
    this.name = 'ChannelFull';
  }
}

/** The shared segment itself is out of message space (a subclass, so `ChannelFull` catches it). */
export class SegmentFull extends ChannelFull {
  constructor(message: string) {
    super(message);
    this.name = 'SegmentFull';
  }
}

/** A message larger than the layer's `maxMessageSize`. */
export class MessageTooLarge extends RangeError {
  constructor(message: string) {
    super(message);
    this.name = 'MessageTooLarge';
  }
}

/**
 * What a ShmError's `code` says went wrong; the README's "Errors" says what to do about each.
 * The shared-memory core's failures that have no error class of their own, and the layer's own.
 */
export type ShmErrorCode =
  /** No free record: channel (maxChannels), group (maxGroups), membership (maxMembers), or slot. */
  | 'ETABLEFULL'
  /** The segment was made by another layout version of shm-channels, or is not a segment. */
  | 'EVERSION'
  /** Shared memory failed a bounds or consistency check, or a message failed its checksum. */
  | 'ECORRUPT'
  /** The segment or a doorbell belongs to another user or has a looser mode (`allowForeign`). */
  | 'EPERMISSION'
  /** /dev/shm cannot hold the segment, or the records it needs next. */
  | 'ENOSPACE'
  /** No such layer (`create: false`, `ShmChannelLayer.prune`). */
  | 'ENOTFOUND'
  /** An OS call failed; the message names it and its errno. */
  | 'ESYSTEM'
  /** A live process held the segment lock past a synchronous wait (constructor, stats, verify). */
  | 'EBUSY'
  /** Sizes given that the existing segment does not have. */
  | 'EOPTIONS'
  /** The segment was removed (destroy, rm /dev/shm) while this process was attached. */
  | 'EUNLINKED'
  /** `LockTimeout`: the segment lock was held past `lockTimeout`. */
  | 'ELOCKTIMEOUT';

/** Every ShmErrorCode (the compiler checks that none is missing and none is extra). */
export const SHM_ERROR_CODES = Object.keys({
  ETABLEFULL: true,
  EVERSION: true,
  ECORRUPT: true,
  EPERMISSION: true,
  ENOSPACE: true,
  ENOTFOUND: true,
  ESYSTEM: true,
  EBUSY: true,
  EOPTIONS: true,
  EUNLINKED: true,
  ELOCKTIMEOUT: true,
} satisfies Record<ShmErrorCode, true>) as readonly ShmErrorCode[];

/** Error of the shared-memory layer that is not one of the above; `code` says which. */
export class ShmError extends Error {
  readonly code: ShmErrorCode;
  constructor(message: string, code: ShmErrorCode) {
    super(message);
    this.name = 'ShmError';
    this.code = code;
  }
}

/** A receive waiting on a '!' channel that `releaseChannel()` ended. */
export class ChannelReleased extends Error {
  constructor(channel: string) {
    super(`channel ${channel} was released by releaseChannel()`);
    this.name = 'ChannelReleased';
  }
}

/**
 * Another process held the shared-memory segment's lock longer than `lockTimeout` (it is alive
 * but stopped: SIGSTOP, a debugger, `docker pause`, a core dump in progress). Nothing was done.
 */
export class LockTimeout extends ShmError {
  /** The pid the holder recorded when it attached (0 if unknown). */
  readonly pid: number;
  constructor(message: string, pid: number) {
    super(message, 'ELOCKTIMEOUT');
    this.name = 'LockTimeout';
    this.pid = pid;
  }
}

/** Operation on a layer after `close()`. */
export class LayerClosed extends Error {
  constructor() {
    super('the channel layer is closed');
    this.name = 'LayerClosed';
  }
}

export function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  if (reason instanceof Error && reason.name === 'AbortError') return reason;
  const error = new Error('receive was aborted', { cause: reason });
  error.name = 'AbortError';
  return error;
}
