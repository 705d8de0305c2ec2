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

/** Error of the shared-memory layer that is not one of the above; `code` says which. */
export class ShmError extends Error {
  readonly code: string;
  constructor(message: string, code: string) {
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
