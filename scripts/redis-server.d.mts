export function findBinary(name: string): string | undefined;
export function findRedisServer(): string | undefined;
export function freePort(): Promise<number>;
export class RedisServer {
  readonly port: number;
  readonly url: string;
  readonly host: { host: string; port: number };
  readonly pid: number | undefined;
  readonly running: boolean;
  static start(port?: number): Promise<RedisServer>;
  stop(): Promise<void>;
  restart(): Promise<void>;
  dispose(): Promise<void>;
  killNow(): void;
}
