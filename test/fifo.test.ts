// The FIFO under the in-memory layer's queues: order, length and peek against a plain array as
// the model, through runs of pushes and shifts long enough to make it cut its taken front off
// many times, with items left in it each time.
import { describe, expect, it } from 'vitest';
import { Fifo } from './support/internal.js';

/** A deterministic pseudo-random source (xorshift32), so a failure repeats. */
function randomFrom(seed: number): () => number {
  let x = seed;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

describe('Fifo', () => {
  it('is empty at first: length 0, peek and shift undefined', () => {
    const fifo = new Fifo<number>();
    expect(fifo.length).toBe(0);
    expect(fifo.peek()).toBeUndefined();
    expect(fifo.shift()).toBeUndefined();
  });

  for (const seed of [1, 2, 3]) {
    it(`keeps order, length and front as an array does over 200,000 random steps (seed ${seed})`, () => {
      const random = randomFrom(seed);
      const fifo = new Fifo<{ n: number }>();
      const model: { n: number }[] = [];
      let next = 0;
      for (let step = 0; step < 200_000; step++) {
        // Phases that grow the queue to thousands and drain it again, so cuts happen both with
        // many and with few items left behind them.
        const pushBias = Math.floor(step / 20_000) % 2 === 0 ? 0.6 : 0.4;
        if (random() < pushBias) {
          const item = { n: next++ };
          fifo.push(item);
          model.push(item);
        } else {
          const taken = fifo.shift();
          const expected = model.shift();
          if (taken !== expected) expect({ step, taken }).toEqual({ step, taken: expected });
        }
        // (expect() only on a difference: 200,000 of them would be most of the test's time)
        if (fifo.length !== model.length || fifo.peek() !== model[0]) {
          expect({ step, length: fifo.length, front: fifo.peek() }).toEqual({
            step,
            length: model.length,
            front: model[0],
          });
        }
      }
      while (model.length) expect(fifo.shift()).toBe(model.shift());
      expect(fifo.length).toBe(0);
      expect(fifo.shift()).toBeUndefined();
    });
  }

  it('gives back the same items after emptying and refilling', () => {
    const fifo = new Fifo<string>();
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 5000; i++) fifo.push(`${round}.${i}`);
      for (let i = 0; i < 5000; i++) expect(fifo.shift()).toBe(`${round}.${i}`);
      expect(fifo.length).toBe(0);
    }
  });
});
