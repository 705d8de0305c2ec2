// Requests to other servers (fetchSockets, serverSideEmit with an ack, session restore) that wait
// for one answer from each server that was live when they were sent. A server that leaves the
// layer (closed, or its process died) is crossed off, so nobody waits for its timeout.
import { randomBytes } from 'node:crypto';

export interface PendingRequest<T> {
  /** Servers that have not answered yet. */
  missing: Set<string>;
  responses: T[];
  /** Called once: with every answer, or with the error and the answers so far. */
  settle(error: Error | null, responses: T[]): void;
  /** Settles early with this answer (e.g. the one server that had a session). */
  isFinal?(response: T): boolean;
  timer: NodeJS.Timeout;
}

export class Requests {
  private readonly pending = new Map<string, PendingRequest<unknown>>();

  get size(): number {
    return this.pending.size;
  }

  /**
   * Starts a request to `servers`; `settle` gets the answers when all came (or their servers
   * left), or an Error after `timeoutMs`. Returns the request id to send with it.
   */
  start<T>(
    servers: Iterable<string>,
    timeoutMs: number,
    settle: (error: Error | null, responses: T[]) => void,
    isFinal?: (response: T) => boolean,
  ): string {
    const id = randomBytes(8).toString('hex');
    const request: PendingRequest<T> = {
      missing: new Set(servers),
      responses: [],
      settle,
      isFinal,
      timer: setTimeout(() => {
        this.pending.delete(id);
        settle(
          new Error(`timeout reached: missing ${request.missing.size} responses`),
          request.responses,
        );
      }, timeoutMs),
    };
    this.pending.set(id, request as PendingRequest<unknown>);
    if (request.missing.size === 0) this.finish(id, request as PendingRequest<unknown>);
    return id;
  }

  /** An answer from `server` to request `id` (unknown or repeated answers are ignored). */
  answer(id: string, server: string, response: unknown): void {
    const request = this.pending.get(id);
    if (!request || !request.missing.delete(server)) return;
    request.responses.push(response);
    if (request.missing.size === 0 || request.isFinal?.(response)) this.finish(id, request);
  }

  /** Servers that are gone: nobody waits for their answers any more. */
  serversLeft(isLive: (server: string) => boolean): void {
    for (const [id, request] of this.pending) {
      for (const server of request.missing) if (!isLive(server)) request.missing.delete(server);
      if (request.missing.size === 0) this.finish(id, request);
    }
  }

  /** Servers some request still waits for. */
  awaited(): Set<string> {
    const servers = new Set<string>();
    for (const request of this.pending.values())
      for (const server of request.missing) servers.add(server);
    return servers;
  }

  /** Settles every request with `error` (the adapter is closing). */
  rejectAll(error: Error): void {
    for (const [id, request] of this.pending) {
      clearTimeout(request.timer);
      this.pending.delete(id);
      request.settle(error, request.responses);
    }
  }

  private finish(id: string, request: PendingRequest<unknown>): void {
    clearTimeout(request.timer);
    this.pending.delete(id);
    request.settle(null, request.responses);
  }
}
