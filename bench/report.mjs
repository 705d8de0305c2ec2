// Medians, the terminal table and the SVG chart, all computed from the results object (the same
// object that is written to bench/results.json), so `node bench/report.mjs results.json` can
// redraw both from a saved run.
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { BACKENDS, LABELS } from './backends.mjs';
import { median } from './lib.mjs';

/** Flattens a sample to { 'a.b': number }. */
export function flatten(object, prefix = '', out = {}) {
  for (const [key, value] of Object.entries(object ?? {})) {
    const path = prefix ? `${prefix}.${key}` : key;
    if (typeof value === 'number') out[path] = value;
    else if (value && typeof value === 'object' && !Array.isArray(value)) flatten(value, path, out);
  }
  return out;
}

/** For every workload, backend and numeric field: the median over the repetitions. */
export function computeMedians(samples) {
  const medians = {};
  for (const [workload, byBackend] of Object.entries(samples)) {
    for (const [backend, list] of Object.entries(byBackend)) {
      const flat = list.map((s) => flatten(s));
      const keys = new Set(flat.flatMap((f) => Object.keys(f)));
      keys.delete('rep');
      const m = {};
      for (const key of [...keys].sort()) m[key] = median(flat.map((f) => f[key]));
      (medians[workload] ??= {})[backend] = m;
    }
  }
  return medians;
}

// The rows of the table. `better`: which direction is good. `target`: the goal for shm, checked
// on a ratio (shm value / other backend's value) or on shm's own value.
export const ROWS = [
  { section: 'W1 throughput, 1 producer -> 1 consumer process' },
  {
    label: 'messages',
    w: 'w1',
    key: 'msgsPerSec',
    unit: 'msg/s',
    better: 'higher',
    targets: [
      { vs: 'redis', op: '>=', value: 20 },
      { vs: 'cluster', op: '>=', value: 5 },
    ],
  },
  {
    label: 'CPU per message, all processes',
    w: 'w1',
    key: 'cpuUsPerMessage',
    unit: 'µs',
    better: 'lower',
  },
  { section: 'W2 latency, ping-pong round trip' },
  {
    label: 'RTT p50',
    w: 'w2',
    key: 'p50us',
    unit: 'µs',
    better: 'lower',
    targets: [
      { vs: 'cluster', op: '<=', value: 0.2 },
      { vs: 'self', op: '<=', value: 25, text: '<= 25 µs' },
    ],
  },
  { label: 'RTT p99', w: 'w2', key: 'p99us', unit: 'µs', better: 'lower' },
  {
    label: 'CPU per round trip, all processes',
    w: 'w2',
    key: 'cpuUsPerTrip',
    unit: 'µs',
    better: 'lower',
  },
  { section: 'W3 fan-out, 4 processes x 25 channels, groupSend loop' },
  {
    label: 'deliveries',
    w: 'w3-fanout',
    key: 'deliveriesPerSec',
    unit: '/s',
    better: 'higher',
    targets: [
      { vs: 'redis', op: '>=', value: 20 },
      { vs: 'cluster', op: '>=', value: 2 },
    ],
  },
  {
    label: 'CPU per delivery, all processes',
    w: 'w3-fanout',
    key: 'cpuUsPerDelivery',
    unit: 'µs',
    better: 'lower',
  },
  {
    label: 'groupSends by the sender',
    w: 'w3-fanout',
    key: 'groupSendsPerSec',
    unit: '/s',
    better: 'higher',
    noRatio: true,
  },
  { section: 'W3 cost of one groupSend (members idle), µs' },
  ...[1, 10, 100, 1000, 10000].map((n) => ({
    label: `${n} member${n > 1 ? 's' : ''}${n > 1 ? ` in ${Math.min(4, n)} proc` : ''}`,
    w: 'w3-groupcost',
    key: `usPerGroupSend.${n}`,
    unit: 'µs',
    better: 'lower',
  })),
  {
    label: '1000 members in 1 process',
    w: 'w3-groupcost',
    key: 'members1000.1proc',
    unit: 'µs',
    better: 'lower',
  },
  {
    label: '1000 members in 4 processes',
    w: 'w3-groupcost',
    key: 'members1000.4proc',
    unit: 'µs',
    better: 'lower',
  },
  {
    label: '1000 live members in 1 process',
    w: 'w3-groupcost',
    key: 'members1000live.1proc',
    unit: 'µs',
    better: 'lower',
  },
  {
    label: '1000 live members in 4 processes',
    w: 'w3-groupcost',
    key: 'members1000live.4proc',
    unit: 'µs',
    better: 'lower',
  },
  {
    label: 'cost 10000 / cost 100 members',
    derived: (m) => ratioOf(m, 'usPerGroupSend.10000', 'usPerGroupSend.100'),
    w: 'w3-groupcost',
    unit: 'x',
    better: 'lower',
    targets: [{ vs: 'self', op: '<=', value: 3, text: '<= 3x' }],
  },
  {
    label: 'cost 4 proc / 1 proc, 1000 members',
    derived: (m) => ratioOf(m, 'members1000.4proc', 'members1000.1proc'),
    w: 'w3-groupcost',
    unit: 'x',
    better: 'lower',
  },
  {
    label: 'cost 4 proc / 1 proc, 1000 live members',
    derived: (m) => ratioOf(m, 'members1000live.4proc', 'members1000live.1proc'),
    w: 'w3-groupcost',
    unit: 'x',
    better: 'lower',
  },
  { section: 'W4 large messages, end to end' },
  { label: '1 MB payloads', w: 'w4', key: 'MBps.1MB', unit: 'MB/s', better: 'higher' },
  {
    label: '5 MB payloads',
    w: 'w4',
    key: 'MBps.5MB',
    unit: 'MB/s',
    better: 'higher',
    targets: [
      { vs: 'cluster', op: '>=', value: 3 },
      { vs: 'self', op: '>=', value: 2000, text: '>= 2 GB/s' },
    ],
  },
  {
    label: 'CPU per MB, 1 MB payloads',
    w: 'w4',
    key: 'cpuUsPerMB.1MB',
    unit: 'µs',
    better: 'lower',
  },
  {
    label: 'CPU per MB, 5 MB payloads',
    w: 'w4',
    key: 'cpuUsPerMB.5MB',
    unit: 'µs',
    better: 'lower',
  },
  { section: 'W6 ping-pong while another pair streams 5 MB messages' },
  { label: 'RTT p99 alone', w: 'w6', key: 'idleP99us', unit: 'µs', better: 'lower' },
  { label: 'RTT p99 under streaming', w: 'w6', key: 'loadedP99us', unit: 'µs', better: 'lower' },
  {
    label: 'p99 under streaming / alone',
    w: 'w6',
    key: 'p99LoadedOverIdle',
    unit: 'x',
    better: 'lower',
    noRatio: true,
    targets: [{ vs: 'self', op: '<=', value: 2, text: '<= 2x' }],
  },
  { label: 'RTT p50 under streaming', w: 'w6', key: 'loadedP50us', unit: 'µs', better: 'lower' },
  {
    label: 'pair waiting for a CPU per trip, alone',
    w: 'w6',
    key: 'idleRunQueueUsPerTrip',
    unit: 'µs',
    better: 'lower',
  },
  {
    label: 'pair waiting for a CPU per trip, streaming',
    w: 'w6',
    key: 'loadedRunQueueUsPerTrip',
    unit: 'µs',
    better: 'lower',
  },
  { section: 'W7 receiveAny: one loop over 100 channels vs one receive loop on one channel' },
  {
    label: '100 channels, receiveAny',
    w: 'w7-receive-any',
    key: 'anyMsgsPerSec',
    unit: 'msg/s',
    better: 'higher',
  },
  {
    label: '100 channels, receiveAny, frozen list',
    w: 'w7-receive-any',
    key: 'anyFrozenMsgsPerSec',
    unit: 'msg/s',
    better: 'higher',
  },
  {
    label: '1 channel, receive (same run)',
    w: 'w7-receive-any',
    key: 'oneChannelMsgsPerSec',
    unit: 'msg/s',
    better: 'higher',
  },
  {
    label: '100 channels / 1 channel',
    w: 'w7-receive-any',
    key: 'anyVsOne',
    unit: 'x',
    better: 'higher',
    noRatio: true,
  },
  {
    label: 'consumer CPU per message, receiveAny',
    w: 'w7-receive-any',
    key: 'consumerCpuUsPerMsg.any',
    unit: 'µs',
    better: 'lower',
  },
  {
    label: 'consumer CPU per message, receiveAny, frozen list',
    w: 'w7-receive-any',
    key: 'consumerCpuUsPerMsg.anyFrozen',
    unit: 'µs',
    better: 'lower',
  },
  {
    label: 'consumer CPU per message, receive',
    w: 'w7-receive-any',
    key: 'consumerCpuUsPerMsg.one',
    unit: 'µs',
    better: 'lower',
  },
  { section: 'W5 scale: N producer processes -> 1 consumer, msg/s' },
  ...[1, 2, 4, 8].map((n) => ({
    label: `${n} producer${n > 1 ? 's' : ''}`,
    w: 'w5-producers',
    key: `msgsPerSec.${n}p`,
    unit: 'msg/s',
    better: 'higher',
  })),
  { section: 'W5 100k channels resident (one message each)' },
  { label: 'time to create', w: 'w5-channels', key: 'createSeconds', unit: 's', better: 'lower' },
  {
    label: 'bytes used (see README)',
    w: 'w5-channels',
    key: 'bytesUsed',
    unit: 'MB',
    scale: 1e-6,
    better: 'lower',
  },
  {
    label: 'receive after (1000 probes)',
    w: 'w5-channels',
    key: 'usPerReceive',
    unit: 'µs',
    better: 'lower',
  },
  {
    label: 'receives correct',
    w: 'w5-channels',
    key: 'receivedOk',
    unit: '',
    better: 'higher',
    noRatio: true,
  },
  { section: 'Memory (W1 processes)' },
  { label: 'consumer peak RSS', w: 'w1', key: 'consumerMaxRssMB', unit: 'MB', better: 'lower' },
  { label: 'producer peak RSS', w: 'w1', key: 'producerMaxRssMB', unit: 'MB', better: 'lower' },
  {
    label: 'relay (primary) peak RSS',
    w: 'w1',
    key: 'relayMaxRssMB',
    unit: 'MB',
    better: 'lower',
    noRatio: true,
  },
  {
    label: 'redis-server RSS after W1',
    w: 'w1',
    key: 'redisRssMB',
    unit: 'MB',
    better: 'lower',
    noRatio: true,
  },
  {
    label: 'shm segment size',
    w: 'w1',
    key: 'segmentBytes',
    unit: 'MB',
    scale: 1e-6,
    better: 'lower',
    noRatio: true,
  },
  {
    label: 'shm arena in use, peak during W1',
    w: 'w1',
    key: 'peakArenaUsedBytes',
    unit: 'MB',
    scale: 1e-6,
    better: 'lower',
    noRatio: true,
  },
  {
    label: 'shm /dev/shm in use, peak during W1',
    w: 'w1',
    key: 'peakShmBytes',
    unit: 'MB',
    scale: 1e-6,
    better: 'lower',
    noRatio: true,
  },
  {
    label: 'shm messages queued, peak during W1',
    w: 'w1',
    key: 'peakQueued',
    unit: '',
    better: 'lower',
    noRatio: true,
  },
  {
    label: 'shm segment size, W5 100k',
    w: 'w5-channels',
    key: 'segmentBytes',
    unit: 'MB',
    scale: 1e-6,
    better: 'lower',
    noRatio: true,
  },
  {
    label: 'shm /dev/shm in use, W5 100k',
    w: 'w5-channels',
    key: 'shmBytes',
    unit: 'MB',
    scale: 1e-6,
    better: 'lower',
    noRatio: true,
  },
];

function ratioOf(m, a, b) {
  return m && typeof m[a] === 'number' && typeof m[b] === 'number' && m[b] !== 0
    ? m[a] / m[b]
    : undefined;
}

/** The median of a row for one backend (undefined if not measured). */
export function valueOf(results, row, backend) {
  const m = results.medians?.[row.w]?.[backend];
  if (!m) return undefined;
  const v = row.derived ? row.derived(m) : m[row.key];
  if (typeof v !== 'number' || !Number.isFinite(v)) return undefined;
  return v * (row.scale ?? 1);
}

export function fmt(v) {
  if (v === undefined || v === null) return '-';
  const a = Math.abs(v);
  if (a >= 100) return Math.round(v).toLocaleString('en-US');
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  if (a === 0) return '0';
  return v.toPrecision(2);
}

function fmtRatio(r) {
  if (r === undefined) return '-';
  return `${r >= 10 ? r.toFixed(0) : r >= 1 ? r.toFixed(1) : r.toFixed(2)}x`;
}

function checkTarget(results, row, target) {
  const shm = valueOf(results, row, 'shm');
  const other = target.vs === 'self' ? 1 : valueOf(results, row, target.vs);
  if (shm === undefined || other === undefined || other === 0)
    return { text: `${describe(target)} ?`, ok: undefined };
  const x = shm / other;
  const ok =
    target.op === '>='
      ? x >= target.value
      : target.op === '<='
        ? x <= target.value
        : x < target.value;
  return { text: `${describe(target)} ${ok ? 'met' : 'MISSED'}`, ok };
}

function describe(target) {
  if (target.text) return target.text;
  return `${target.op}${target.value}x ${target.vs}`;
}

export function renderTable(results) {
  const backends = BACKENDS.filter((b) => results.options?.backends?.includes(b) ?? true);
  const header = ['', ...backends.map((b) => b), 'shm/redis', 'shm/cluster', 'target (shm)'];
  const lines = [];
  for (const row of ROWS) {
    if (row.section) {
      lines.push({ section: row.section });
      continue;
    }
    if (!results.medians?.[row.w]) continue;
    const values = backends.map((b) => valueOf(results, row, b));
    if (values.every((v) => v === undefined)) continue;
    const shm = valueOf(results, row, 'shm');
    const ratio = (b) => {
      const o = valueOf(results, row, b);
      return row.noRatio || shm === undefined || o === undefined || o === 0 ? undefined : shm / o;
    };
    const targets = (row.targets ?? []).map((t) => checkTarget(results, row, t).text).join('; ');
    lines.push({
      cells: [
        `${row.label}${row.unit ? ` (${row.unit})` : ''}`,
        ...values.map(fmt),
        fmtRatio(ratio('redis')),
        fmtRatio(ratio('cluster')),
        targets,
      ],
    });
  }
  const rows = lines.filter((l) => l.cells).map((l) => l.cells);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const pad = (cells) =>
    cells
      .map((c, i) =>
        i === 0 || i === cells.length - 1
          ? String(c).padEnd(widths[i])
          : String(c).padStart(widths[i]),
      )
      .join('  ')
      .trimEnd();
  const out = [];
  const title =
    `shm-channels bench — ${results.options?.quick ? 'QUICK run (1 short repetition: indicative only)' : `medians of ${results.options?.reps} repetitions`}` +
    ` — node ${results.node}, ${results.machine?.cpus} CPUs, ${results.date}`;
  out.push(title);
  out.push(
    `machine: ${results.machine?.cpuModel ?? '?'}; load average at start ${(results.machine?.loadAverageAtStart ?? []).map((l) => l.toFixed(2)).join(' ')}, at end ${(results.loadAverageAtEnd ?? []).map((l) => l.toFixed(2)).join(' ')}`,
  );
  out.push(pad(header));
  out.push(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const l of lines) {
    if (l.section) {
      // Only print a section if one of its rows follows.
      out.push(`[${l.section}]`);
    } else out.push(pad(l.cells));
  }
  // Drop sections with no rows.
  const cleaned = out.filter(
    (line, i) =>
      !(line.startsWith('[') && (out[i + 1] === undefined || out[i + 1].startsWith('['))),
  );
  cleaned.push('');
  cleaned.push(
    'Ratios are shm value / other backend value: for msg/s and MB/s above 1x means shm is faster,',
  );
  cleaned.push(
    'for µs, s, MB and RSS below 1x means shm is cheaper. Columns: ' +
      backends.map((b) => `${b} = ${LABELS[b]}`).join(', ') +
      '.',
  );
  cleaned.push(...renderLockHold(results));
  cleaned.push(...renderFloor(results));
  const failed = results.errors?.length ?? 0;
  if (failed) cleaned.push(`${failed} measurement(s) FAILED: see "errors" in results.json.`);
  return cleaned.join('\n');
}

// Where the lock hold times of each shm workload come from (sample.lockHold.<run>.<kind>).
const LOCK_HOLD_RUNS = [
  ['w1', '1to1', 'W1 1 -> 1'],
  ['w3-fanout', 'fanout4x25', 'W3 groupSend fan-out'],
  ['w4', '1MB', 'W4 1 MB'],
  ['w4', '5MB', 'W4 5 MB'],
  ['w5-producers', '8p', 'W5 8 producers'],
  ['w6', 'pingpong', 'W6 ping-pong pair'],
  ['w6', 'stream', 'W6 5 MB stream beside it'],
];
export const LOCK_HOLD_KINDS = [
  'send',
  'groupSend',
  'receive',
  'receiveAny',
  'groupAdd',
  'groupDiscard',
  'flush',
  'maintain',
  'recover',
  'other',
];

/**
 * Lock hold p99 per operation (shm): how long one critical section keeps every other process
 * waiting. Each cell: p99 / max in µs over every process of the run (median over repetitions).
 */
export function renderLockHold(results) {
  const rows = [];
  const used = new Set();
  for (const [w, run, label] of LOCK_HOLD_RUNS) {
    const m = results.medians?.[w]?.shm;
    if (!m) continue;
    const cells = {};
    for (const kind of LOCK_HOLD_KINDS) {
      const p99 = m[`lockHold.${run}.${kind}.p99Ns`];
      if (typeof p99 !== 'number') continue;
      used.add(kind);
      cells[kind] = `${fmt(p99 / 1000)} / ${fmt(m[`lockHold.${run}.${kind}.maxNs`] / 1000)}`;
    }
    if (Object.keys(cells).length) rows.push([label, cells]);
  }
  if (rows.length === 0) return [];
  const kinds = LOCK_HOLD_KINDS.filter((k) => used.has(k));
  const table = [
    ['', ...kinds],
    ...rows.map(([label, cells]) => [label, ...kinds.map((k) => cells[k] ?? '-')]),
  ];
  const widths = table[0].map((_, i) => Math.max(...table.map((r) => r[i].length)));
  const line = (r) =>
    r
      .map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])))
      .join('  ')
      .trimEnd();
  return [
    '',
    'Lock hold p99 / max per operation, shm (µs): how long one call keeps the segment lock, all processes of the run;',
    'p99 is the upper edge of its histogram bucket (4 per power of two: at most 25% above); "other": attach, ready list, stats.',
    line(table[0]),
    ...table.slice(1).map(line),
  ];
}

/** The machine's floor (bench/floor.c, same run) and how far shm is from it. */
function renderFloor(results) {
  const floor = results.machine?.floor;
  if (!floor) return [];
  if (floor.error) return ['', `Machine floor: not measured (${floor.error})`];
  const shm = (w, key) => results.medians?.[w]?.shm?.[key];
  const times = (a, b) =>
    typeof a === 'number' && typeof b === 'number' && b > 0 ? `${fmt(a / b)}x` : '-';
  const rows = [
    [
      'ping-pong RTT, spin only',
      `${fmt(floor.spinRttUs)} µs`,
      'W2 p50',
      times(shm('w2', 'p50us'), floor.spinRttUs),
    ],
    [
      'ping-pong RTT, spin 50 µs then futex',
      `${fmt(floor.spinThenFutexRttUs)} µs`,
      'W2 p50',
      times(shm('w2', 'p50us'), floor.spinThenFutexRttUs),
    ],
    [
      'ping-pong RTT, futex (a wake-up per hop)',
      `${fmt(floor.futexRttUs)} µs`,
      'W2 p50',
      times(shm('w2', 'p50us'), floor.futexRttUs),
    ],
    [
      'SPSC ring, 128-byte slots',
      `${fmt(floor.spscRingMsgsPerSec)} msg/s`,
      'W1',
      times(floor.spscRingMsgsPerSec, shm('w1', 'msgsPerSec')),
    ],
    [
      'memcpy 5 MB into a warm shared mapping',
      `${fmt(floor.memcpy5MBWarmGBps * 1000)} MB/s`,
      'W4 5 MB',
      times(floor.memcpy5MBWarmGBps * 1000, shm('w4', 'MBps.5MB')),
    ],
    [
      'memcpy 5 MB into fresh shared pages',
      `${fmt(floor.memcpy5MBFreshGBps * 1000)} MB/s`,
      'W4 5 MB',
      times(floor.memcpy5MBFreshGBps * 1000, shm('w4', 'MBps.5MB')),
    ],
  ];
  const w = [0, 1, 2, 3].map((i) =>
    Math.max(...rows.map((r) => r[i].length), ['', 'floor', 'shm', 'shm is this far'][i].length),
  );
  const line = (r) =>
    `${r[0].padEnd(w[0])}  ${r[1].padStart(w[1])}  ${r[2].padEnd(w[2])}  ${r[3].padStart(w[3])}`;
  return [
    '',
    "Machine floor (bench/floor.c: C, no JavaScript, same machine, same run) and shm's distance to it:",
    line(['', 'floor', 'shm', 'shm is this far']),
    ...rows.map(line),
  ];
}

// ---------------------------------------------------------------------------------------------
// SVG: one panel per concern, grouped bars (one bar per backend), log scale.

const COLORS = { shm: '#1f77b4', redis: '#d62728', inmemory: '#8c8c8c', cluster: '#2ca02c' };

function panels() {
  const row = (w, key, extra = {}) => ({ w, key, ...extra });
  return [
    {
      title: 'Throughput, 128-byte messages (msg/s, higher is better)',
      groups: [
        ['W1\n1 -> 1', row('w1', 'msgsPerSec')],
        ['W3 fan-out\ndeliveries/s', row('w3-fanout', 'deliveriesPerSec')],
        ['W5\n1 -> 1', row('w5-producers', 'msgsPerSec.1p')],
        ['W5\n2 -> 1', row('w5-producers', 'msgsPerSec.2p')],
        ['W5\n4 -> 1', row('w5-producers', 'msgsPerSec.4p')],
        ['W5\n8 -> 1', row('w5-producers', 'msgsPerSec.8p')],
      ],
    },
    {
      title: 'W2 round-trip latency (µs, lower is better)',
      groups: [
        ['p50', row('w2', 'p50us')],
        ['p90', row('w2', 'p90us')],
        ['p99', row('w2', 'p99us')],
      ],
    },
    {
      title:
        'W3 cost of one groupSend (µs per groupSend, lower is better; members idle unless "live")',
      wide: true,
      groups: [
        ...[1, 10, 100, 1000, 10000].map((n) => [
          `${n}\nmember${n > 1 ? 's' : ''}`,
          row('w3-groupcost', `usPerGroupSend.${n}`),
        ]),
        ['1000 members\nin 1 process', row('w3-groupcost', 'members1000.1proc')],
        ['1000 members\nin 4 processes', row('w3-groupcost', 'members1000.4proc')],
        ['1000 live members\nin 1 process', row('w3-groupcost', 'members1000live.1proc')],
        ['1000 live members\nin 4 processes', row('w3-groupcost', 'members1000live.4proc')],
      ],
    },
    {
      title: 'W4 large messages (MB/s, higher is better)',
      groups: [
        ['1 MB', row('w4', 'MBps.1MB')],
        ['5 MB', row('w4', 'MBps.5MB')],
      ],
    },
    {
      title: 'W5 100k channels (lower is better)',
      groups: [
        ['create (s)', row('w5-channels', 'createSeconds')],
        ['MB used', row('w5-channels', 'bytesUsed', { scale: 1e-6 })],
        ['µs/receive', row('w5-channels', 'usPerReceive')],
      ],
    },
    { title: 'Goals for ShmChannelLayer (checked on the medians)', targets: true },
    {
      title: 'W1 memory: peak RSS (MB, lower is better)',
      groups: [
        ['consumer', row('w1', 'consumerMaxRssMB')],
        ['producer', row('w1', 'producerMaxRssMB')],
        [
          'relay (cluster) /\nredis-server (RSS)',
          row('w1', 'relayMaxRssMB', { alt: 'redisRssMB' }),
        ],
      ],
    },
  ];
}

function esc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function compact(v) {
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toFixed(a >= 1e7 ? 0 : 1)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(0)}k`;
  if (a >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toPrecision(2);
}

export function renderSvg(results) {
  const backends = BACKENDS.filter((b) => results.options?.backends?.includes(b) ?? true);
  const W = 620;
  const H = 330;
  const list = panels();
  // Lay the panels out two per row; a `wide` panel takes a row of its own.
  const placed = [];
  let col = 0;
  let rowIndex = 0;
  for (const panel of list) {
    if (panel.wide) {
      if (col) {
        rowIndex++;
        col = 0;
      }
      placed.push({ panel, col: 0, row: rowIndex, span: 2 });
      rowIndex++;
    } else {
      placed.push({ panel, col, row: rowIndex, span: 1 });
      if (++col === 2) {
        rowIndex++;
        col = 0;
      }
    }
  }
  const rows = rowIndex + (col ? 1 : 0);
  const top = 92;
  const width = W * 2 + 20;
  const height = top + rows * H + 40;
  const parts = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Arial, Helvetica, sans-serif">`,
  );
  parts.push(`<rect width="100%" height="100%" fill="white"/>`);
  const kind = results.options?.quick
    ? 'QUICK run, 1 short repetition — indicative only'
    : `medians of ${results.options?.reps} repetitions`;
  parts.push(`<text x="20" y="30" font-size="20" font-weight="bold">shm-channels benchmark</text>`);
  parts.push(
    `<text x="20" y="52" font-size="13" fill="#444">${esc(kind)} · node ${esc(results.node)} · ${esc(results.machine?.cpus)} CPUs (${esc(results.machine?.cpuModel ?? '')}) · ${esc(results.date)} · log scales</text>`,
  );
  let lx = 20;
  for (const b of backends) {
    parts.push(`<rect x="${lx}" y="64" width="14" height="14" fill="${COLORS[b]}"/>`);
    parts.push(`<text x="${lx + 20}" y="76" font-size="13">${esc(LABELS[b])}</text>`);
    lx += 40 + LABELS[b].length * 8;
  }
  for (const { panel, col: c, row: r, span } of placed) {
    const x0 = 10 + c * W;
    const y0 = top + r * H;
    parts.push(...drawPanel(results, backends, panel, x0, y0, W * span - 20, H - 20));
  }
  const failed = results.errors?.length ?? 0;
  parts.push(
    `<text x="20" y="${height - 14}" font-size="12" fill="#444">${esc(
      `Method and caveats: bench/README.md. Raw samples and medians: bench/results.json.${failed ? ` ${failed} measurement(s) failed.` : ''}`,
    )}</text>`,
  );
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

function drawPanel(results, backends, panel, x0, y0, w, h) {
  const out = [];
  out.push(`<rect x="${x0}" y="${y0}" width="${w}" height="${h}" fill="#fafafa" stroke="#ddd"/>`);
  out.push(
    `<text x="${x0 + 10}" y="${y0 + 22}" font-size="14" font-weight="bold">${esc(panel.title)}</text>`,
  );
  if (panel.targets) {
    let y = y0 + 52;
    for (const row of ROWS) {
      for (const target of row.targets ?? []) {
        const { text, ok } = checkTarget(results, row, target);
        const shm = valueOf(results, row, 'shm');
        const other = target.vs === 'self' ? undefined : valueOf(results, row, target.vs);
        const ratio =
          shm !== undefined && other
            ? ` (${fmtRatio(shm / other)})`
            : shm !== undefined && target.vs === 'self'
              ? ` (${fmt(shm)} ${row.unit})`
              : '';
        const color = ok === undefined ? '#888' : ok ? '#1a7f37' : '#c62828';
        out.push(
          `<text x="${x0 + 14}" y="${y}" font-size="12" fill="${color}">${esc(`${ok === undefined ? '?' : ok ? '✔' : '✘'} ${row.w.slice(0, 2).toUpperCase()} ${row.label}: ${text}${ratio}`)}</text>`,
        );
        y += 22;
      }
    }
    const rows = ROWS.filter((r) => r.w === 'w3-groupcost' && r.derived);
    for (const row of rows) {
      const shm = valueOf(results, row, 'shm');
      out.push(
        `<text x="${x0 + 14}" y="${y}" font-size="12" fill="#333">${esc(`· W3 shm ${row.label}: ${shm === undefined ? '-' : fmtRatio(shm)}`)}</text>`,
      );
      y += 22;
    }
    out.push(
      `<text x="${x0 + 14}" y="${y + 6}" font-size="11" fill="#666">${esc('groupSend goal: cost should follow processes, not member count (see README).')}</text>`,
    );
    return out;
  }
  const plot = { x: x0 + 62, y: y0 + 44, w: w - 80, h: h - 84 };
  const values = panel.groups.map(([, r]) =>
    backends.map((b) => {
      const m = results.medians?.[r.w]?.[b];
      let v = m?.[r.key];
      if (typeof v !== 'number' && r.alt) v = m?.[r.alt];
      return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v * (r.scale ?? 1) : undefined;
    }),
  );
  const all = values.flat().filter((v) => v !== undefined);
  if (all.length === 0) {
    out.push(
      `<text x="${x0 + w / 2}" y="${y0 + h / 2}" font-size="13" text-anchor="middle" fill="#888">not measured</text>`,
    );
    return out;
  }
  const lo = Math.floor(Math.log10(Math.min(...all)));
  // Headroom above the tallest bar for its rotated value label.
  let hi = Math.ceil(Math.log10(Math.max(...all)) + 0.35);
  if (hi === lo) hi = lo + 1;
  const yOf = (v) => plot.y + plot.h - ((Math.log10(v) - lo) / (hi - lo)) * plot.h;
  for (let e = lo; e <= hi; e++) {
    const y = yOf(10 ** e);
    out.push(
      `<line x1="${plot.x}" y1="${y}" x2="${plot.x + plot.w}" y2="${y}" stroke="#ccc" stroke-width="1"/>`,
    );
    out.push(
      `<text x="${plot.x - 6}" y="${y + 4}" font-size="11" text-anchor="end" fill="#555">${esc(compact(10 ** e))}</text>`,
    );
    if (e < hi) {
      for (const k of [2, 5]) {
        const ym = yOf(k * 10 ** e);
        out.push(
          `<line x1="${plot.x}" y1="${ym}" x2="${plot.x + plot.w}" y2="${ym}" stroke="#eee" stroke-width="1"/>`,
        );
      }
    }
  }
  out.push(
    `<line x1="${plot.x}" y1="${plot.y + plot.h}" x2="${plot.x + plot.w}" y2="${plot.y + plot.h}" stroke="#333"/>`,
  );
  out.push(
    `<line x1="${plot.x}" y1="${plot.y}" x2="${plot.x}" y2="${plot.y + plot.h}" stroke="#333"/>`,
  );
  const groupW = plot.w / panel.groups.length;
  const barW = Math.min(28, (groupW * 0.8) / backends.length);
  panel.groups.forEach(([label], g) => {
    const gx = plot.x + g * groupW + (groupW - barW * backends.length) / 2;
    backends.forEach((b, i) => {
      const v = values[g][i];
      const bx = gx + i * barW;
      if (v === undefined) {
        out.push(
          `<text x="${bx + barW / 2}" y="${plot.y + plot.h - 4}" font-size="9" text-anchor="middle" fill="#999">n/a</text>`,
        );
        return;
      }
      const y = yOf(v);
      out.push(
        `<rect x="${bx.toFixed(1)}" y="${y.toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${(plot.y + plot.h - y).toFixed(1)}" fill="${COLORS[b]}"><title>${esc(`${LABELS[b]}: ${v}`)}</title></rect>`,
      );
      const tx = bx + barW / 2 - 1;
      const ty = y - 4;
      out.push(
        `<text x="${tx.toFixed(1)}" y="${ty.toFixed(1)}" font-size="9" text-anchor="start" transform="rotate(-60 ${tx.toFixed(1)} ${ty.toFixed(1)})" fill="#222">${esc(compact(v))}</text>`,
      );
    });
    const cx = plot.x + g * groupW + groupW / 2;
    label.split('\n').forEach((line, k) => {
      out.push(
        `<text x="${cx}" y="${plot.y + plot.h + 16 + k * 13}" font-size="11" text-anchor="middle">${esc(line)}</text>`,
      );
    });
  });
  return out;
}

// node bench/report.mjs [results.json]: prints the table and rewrites the SVG next to the JSON.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = process.argv[2] ?? fileURLToPath(new URL('./results.json', import.meta.url));
  const results = JSON.parse(readFileSync(file, 'utf8'));
  results.medians = computeMedians(results.samples);
  console.log(renderTable(results));
  const svg = file.replace(/\.json$/, '.svg');
  writeFileSync(svg, renderSvg(results));
  console.log(`wrote ${svg}`);
}
