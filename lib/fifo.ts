/** Taken slots a Fifo lets pile up at its front before it compacts (see shift()). */
const COMPACT_AFTER = 1024;

/**
 * A first-in, first-out list: push at the back, shift from the front, each O(1) amortised.
 * Array.prototype.shift() moves every element once the array's backing store is a large object
 * (past about 16k elements in V8): an in-memory queue of 50,000 messages drained that way at
 * 21 µs per receive, against 2 µs for one of 10,000. Taken slots are cleared at once (the items
 * can be collected) and cut off once they are more than half of the array.
 */
export class Fifo<T> {
  private items: (T | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  /** The front item, left in place; undefined when empty. */
  peek(): T | undefined {
    return this.head < this.items.length ? this.items[this.head] : undefined;
  }

  push(item: T): void {
    this.items.push(item);
  }

  /** Takes the front item; undefined when empty. */
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head === this.items.length) {
      this.items.length = 0;
      this.head = 0;
    } else if (this.head >= COMPACT_AFTER && this.head * 2 >= this.items.length) {
      // What is left is at most what was taken since the last cut: O(1) per shift, amortised.
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
}
