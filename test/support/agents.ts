// Remote control of the multi-process test agents: test/workers/agent.mjs, forked directly or
// run as node:cluster workers behind test/workers/cluster-primary.mjs, and the other scripts in
// test/workers/. The protocol (agent.mjs's header):
//   parent -> agent: { id, op, ...args }        agent -> parent: { id, ok, result | error }
//   agent -> parent (unsolicited): { ready, pid } once, then { event, ... } while an op runs.
// The agents load the BUILT package (SHMCH_DIST), as users do.
import { type ChildProcess, fork } from 'node:child_process';
import { join } from 'node:path';
import type { Children } from './fixtures.js';
import { PACKAGE_ESM, ROOT } from './package.js';

const WORKERS = join(ROOT, 'test', 'workers');
/** How long one call may take before it fails with the agent's output. */
export const CALL_TIMEOUT = 25_000;

/** What an agent posts: a reply to call `id`, or an unsolicited `event`. */
export interface Reply {
  id?: number;
  ok?: boolean;
  result?: unknown;
  error?: string;
  event?: string;
  [key: string]: unknown;
}

/** One agent under remote control: call(op, args) resolves with its reply. */
export class Remote {
  pid = 0;
  private seq = 0;
  private readonly calls = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private dead: string | undefined;
  onEvent: (event: Reply) => void = () => {};

  constructor(
    readonly label: string,
    private readonly sendRaw: (message: unknown) => void,
    private readonly output: () => string,
  ) {}

  call<T = unknown>(
    op: string,
    args: Record<string, unknown> = {},
    timeoutMs = CALL_TIMEOUT,
  ): Promise<T> {
    if (this.dead) return Promise.reject(new Error(`${this.label}: ${op} after ${this.dead}`));
    const id = ++this.seq;
    const promise = new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.calls.delete(id);
        reject(new Error(`${this.label}: ${op} timed out after ${timeoutMs} ms\n${this.output()}`));
      }, timeoutMs);
      this.calls.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.sendRaw({ id, op, ...args });
    });
    // A call left unawaited by a test that already failed must not add an unhandled rejection
    // when cleanup kills its process; awaiting callers still get the rejection.
    promise.catch(() => {});
    return promise;
  }

  handle(message: Reply): void {
    if (message.event) {
      this.onEvent(message);
      return;
    }
    const call = this.calls.get(message.id!);
    if (!call) return;
    this.calls.delete(message.id!);
    if (message.ok) call.resolve(message.result);
    else call.reject(new Error(`${this.label}: ${message.error}\n${this.output()}`));
  }

  died(how: string): void {
    this.dead = how;
    for (const call of this.calls.values()) {
      call.reject(new Error(`${this.label} died (${how}) during a call\n${this.output()}`));
    }
    this.calls.clear();
  }
}

/** `promise`, or a rejection naming `what` after `ms`. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
    }),
  ]);
}

/**
 * Starters for the agents of one test file; every process they start is tracked by `children`
 * (killed after the test), cluster workers until their primary reports them dead.
 */
export function agentHarness(children: Children) {
  function spawnScript(
    script: string,
    env: Record<string, string> = {},
  ): { child: ChildProcess; output: () => string } {
    const childEnv: Record<string, string | undefined> = {
      ...process.env,
      SHMCH_DIST: PACKAGE_ESM,
      ...env,
    };
    if (!env.SHMCH_FAULT_POINT) delete childEnv.SHMCH_FAULT_POINT;
    const child = fork(join(WORKERS, script), [], {
      env: childEnv,
      execArgv: [],
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      serialization: 'json',
    });
    children.track(child);
    let text = '';
    const keep = (chunk: Buffer): void => {
      text = (text + chunk.toString()).slice(-8000);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    return { child, output: () => (text ? `--- output of ${script}:\n${text}` : '') };
  }

  async function forkAgent(
    label: string,
    env: Record<string, string> = {},
  ): Promise<Remote & { child: ChildProcess }> {
    const { child, output } = spawnScript('agent.mjs', env);
    const remote = new Remote(label, (m) => child.send(m as object), output) as Remote & {
      child: ChildProcess;
    };
    remote.child = child;
    const ready = new Promise<void>((resolve, reject) => {
      child.on('message', (m: Reply) => {
        if (m.ready) {
          remote.pid = m.pid as number;
          resolve();
        } else remote.handle(m);
      });
      child.on('exit', (code, signal) => {
        const how = `exit code ${code}, signal ${signal}`;
        remote.died(how);
        reject(new Error(`${label} exited before it was ready (${how})\n${output()}`));
      });
    });
    await withTimeout(ready, 15_000, `${label} start`);
    return remote;
  }

  /** A node:cluster primary (forked) with `count` cluster workers running agent.mjs. */
  async function startCluster(
    count: number,
  ): Promise<{ agents: Remote[]; pids: number[]; primary: ChildProcess }> {
    const { child: primary, output } = spawnScript('cluster-primary.mjs', {
      CLUSTER_WORKERS: String(count),
    });
    const agents = Array.from(
      { length: count },
      (_, i) =>
        new Remote(`cluster worker ${i}`, (msg) => primary.send({ worker: i, msg }), output),
    );
    const ready = new Promise<number[]>((resolve, reject) => {
      primary.on(
        'message',
        (m: { ready?: boolean; pids?: number[]; worker?: number; msg?: Reply; exit?: unknown }) => {
          if (m.ready) {
            m.pids!.forEach((pid, i) => {
              agents[i]!.pid = pid;
              children.trackPid(pid);
            });
            resolve(m.pids!);
          } else if (m.exit) {
            const agent = agents[m.worker!]!;
            children.forget(agent.pid);
            agent.died(JSON.stringify(m.exit));
          } else if (m.msg) {
            agents[m.worker!]!.handle(m.msg);
          }
        },
      );
      primary.on('exit', (code, signal) => {
        for (const agent of agents) agent.died(`primary exited: code ${code}, signal ${signal}`);
        reject(new Error(`cluster primary exited (code ${code}, signal ${signal})\n${output()}`));
      });
    });
    const pids = await withTimeout(ready, 20_000, 'cluster start');
    return { agents, pids, primary };
  }

  return { spawnScript, forkAgent, startCluster };
}
