import type { RedisConnection } from './connection.js';
import { POP_HEAD, POP_OLDEST } from './scripts.js';

/** A message receiveAny() took from Redis: its key (index in the set's keys), member and score. */
export interface Picked {
  at: number;
  member: Buffer;
  score: number;
}

/** A message a BZPOPMIN over the keys took, to go back before the pick (see POP_OLDEST). */
export interface PutBack {
  at: number;
  score: number;
  member: Buffer;
  ttlMs: number;
}

/**
 * receiveAny()'s oldest-first pick over a channel set's keys on one Redis host. A full pick
 * (POP_OLDEST) looks at every key's head and reports them all; until the heads it reported are
 * used up, the next messages come from those keys one at a time (POP_HEAD), oldest known head
 * first, each reply telling the key's next head. So a receiver of a hundred channels pays for one
 * key per message, as receive() does, instead of a hundred.
 *
 * Order: oldest first among the messages queued at the last full pick. Known heads are used only
 * while they are no newer than the moment of that pick (the mark): a message sent since, to a key
 * that was empty then, may be older than the known heads beyond the mark, so those wait for the
 * next full pick, which happens as soon as the known heads up to the mark are used up. A message
 * whose send was in flight during the full pick (its score given before, its ZADD after) can
 * come after messages up to one send's latency younger: the order stays rough, as in Redis.
 */
export class OldestPicker {
  /** Binary min-heap of known heads: key index and score, in parallel arrays. */
  private readonly ats: number[] = [];
  private readonly scores: number[] = [];
  private readonly known: Uint8Array;
  /** The last full pick's time, as a send time (s): later heads are not taken from the cache. */
  private mark = -Infinity;

  constructor(private readonly keys: readonly string[]) {
    this.known = new Uint8Array(keys.length);
  }

  /** How many keys' heads are known (for tests and stats). */
  get knownHeads(): number {
    return this.ats.length;
  }

  /**
   * The oldest message, popped, or null when every key is empty: from the known heads while they
   * last, else by a full pick.
   */
  async pick(connection: RedisConnection): Promise<Picked | null> {
    return (await this.pickKnown(connection)) ?? this.pickAll(connection);
  }

  /** The oldest message among the known heads, popped; null once they are used up. */
  async pickKnown(connection: RedisConnection): Promise<Picked | null> {
    for (let at = this.takeOldest(); at !== undefined; at = this.takeOldest()) {
      const reply = await connection.call('EVAL', POP_HEAD, 1, this.keys[at]!, this.mark);
      if (!Array.isArray(reply)) continue; // emptied by another receiver, or newer than the mark
      const [member, score, next] = reply as [Buffer, Buffer, Buffer | undefined];
      if (next !== undefined) this.add(at, Number(next.toString()));
      return { at, member, score: Number(score.toString()) };
    }
    return null;
  }

  /**
   * A full pick: the oldest message of all the keys, popped (null when every key is empty), and
   * every key's head learnt. With `putBack`, that message goes back first.
   */
  async pickAll(connection: RedisConnection, putBack?: PutBack): Promise<Picked | null> {
    this.clear();
    const args = putBack
      ? [putBack.at + 1, putBack.score, putBack.member, putBack.ttlMs]
      : ([] as Array<number | Buffer>);
    const reply = (await connection.call(
      'EVAL',
      POP_OLDEST,
      this.keys.length,
      ...this.keys,
      ...args,
    )) as Array<number | Buffer> | null;
    if (!reply) return null;
    // After the reply: every message that pick saw was sent before now.
    this.mark = Date.now() / 1000;
    for (let i = 3; i + 1 < reply.length; i += 2) {
      this.add(Number(reply[i]) - 1, Number(reply[i + 1]!.toString()));
    }
    return {
      at: Number(reply[0]) - 1,
      member: reply[1] as Buffer,
      score: Number(reply[2]!.toString()),
    };
  }

  /** Forgets the known heads (after an error, a flush): the next pick looks at every key. */
  clear(): void {
    this.ats.length = 0;
    this.scores.length = 0;
    this.known.fill(0);
  }

  private add(at: number, score: number): void {
    if (!(score <= this.mark) || at < 0 || at >= this.known.length || this.known[at]) return;
    this.known[at] = 1;
    const { ats, scores } = this;
    let i = ats.length;
    ats.push(at);
    scores.push(score);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (scores[parent]! <= score) break;
      ats[i] = ats[parent]!;
      scores[i] = scores[parent]!;
      i = parent;
    }
    ats[i] = at;
    scores[i] = score;
  }

  /** Removes and returns the key with the oldest known head. */
  private takeOldest(): number | undefined {
    const { ats, scores } = this;
    if (ats.length === 0) return undefined;
    const top = ats[0]!;
    this.known[top] = 0;
    const lastAt = ats.pop()!;
    const lastScore = scores.pop()!;
    const n = ats.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        let child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && scores[child + 1]! < scores[child]!) child++;
        if (scores[child]! >= lastScore) break;
        ats[i] = ats[child]!;
        scores[i] = scores[child]!;
        i = child;
      }
      ats[i] = lastAt;
      scores[i] = lastScore;
    }
    return top;
  }
}
