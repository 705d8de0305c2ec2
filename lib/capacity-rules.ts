import type { CommonSettings } from './settings.js';

/** fnmatch-style glob (as Python's fnmatch.fnmatchcase) to an anchored RegExp. */
export function globToRegExp(glob: string): RegExp {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') out += '.*';
    else if (c === '?') out += '.';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 2);
      if (end === -1) {
        out += '\\[';
      } else {
        let body = glob.slice(i + 1, end);
        if (body.startsWith('!')) body = '^' + body.slice(1);
        out += '[' + body.replace(/\\/g, '\\\\') + ']';
        i = end;
      }
    } else out += c.replace(/[.+^${}()|\\/]/g, '\\$&');
  }
  return new RegExp('^' + out + '$', 's');
}

/** Capacity lookup with the first-match-wins rule and a per-name cache. */
export class CapacityRules {
  private readonly rules: Array<[RegExp, number]>;
  private readonly cache = new Map<string, number>();

  constructor(private readonly settings: CommonSettings) {
    this.rules = settings.channelCapacity.map(([glob, cap]) => [globToRegExp(glob), cap]);
  }

  capacityOf(channel: string): number {
    let capacity = this.cache.get(channel);
    if (capacity === undefined) {
      capacity = this.settings.capacity;
      for (const [pattern, cap] of this.rules) {
        if (pattern.test(channel)) {
          capacity = cap;
          break;
        }
      }
      if (this.cache.size > 10000) this.cache.clear();
      this.cache.set(channel, capacity);
    }
    return capacity;
  }
}
