// Options of createAdapter(), checked once with errors that say what to pass instead.

export interface AdapterOptions {
  /**
   * How long fetchSockets(), serverSideEmit() with an ack and a session restore wait for the other
   * servers, in ms (servers that leave the layer meanwhile are not waited for). Default 5000.
   */
  requestsTimeout?: number;
  /**
   * Prefix of the adapter's group names, so several Socket.IO applications can share one layer.
   * Letters, digits, '-' and '_'. Default 'sio'.
   */
  prefix?: string;
  /** How often waiting requests look for servers that left, in ms. Default 1000. */
  livenessIntervalMs?: number;
  /**
   * How often the adapter renews its group memberships, in ms: keep it well below the layer's
   * groupExpiry (on Redis, a short groupExpiry is how a killed server stops being counted).
   * Default 60000.
   */
  renewIntervalMs?: number;
}

export type ResolvedAdapterOptions = Required<AdapterOptions>;

function positive(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new TypeError(`${name} must be a positive number of milliseconds, got ${String(value)}`);
  }
  return value;
}

export function resolveAdapterOptions(options: AdapterOptions = {}): ResolvedAdapterOptions {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(
      'createAdapter(layerOrOptions, adapterOptions): adapterOptions must be an object',
    );
  }
  const prefix = options.prefix ?? 'sio';
  if (typeof prefix !== 'string' || !/^[A-Za-z0-9_-]{1,32}$/.test(prefix)) {
    throw new TypeError(
      `prefix must be 1 to 32 letters, digits, '-' or '_', got ${JSON.stringify(prefix)}`,
    );
  }
  return {
    requestsTimeout: positive(options.requestsTimeout, 'requestsTimeout', 5000),
    prefix,
    livenessIntervalMs: positive(options.livenessIntervalMs, 'livenessIntervalMs', 1000),
    renewIntervalMs: positive(options.renewIntervalMs, 'renewIntervalMs', 60_000),
  };
}
