// The workloads, their parameters (full and --quick) and a one-line summary for progress output.
const f = (x, digits = 0) =>
  x === undefined || x === null
    ? '-'
    : Number(x).toLocaleString('en-US', { maximumFractionDigits: digits });

export const WORKLOADS = [
  {
    id: 'W1',
    module: 'w1',
    title: '1 producer process -> 1 consumer process, one channel, 128-byte messages',
    full: { duration: 5, warmup: 1 },
    quick: { duration: 1.5, warmup: 0.3 },
    timeoutS: 60,
    summary: (s) =>
      `${f(s.msgsPerSec)} msg/s (peak RSS consumer ${f(s.consumerMaxRssMB)} MB, producer ${f(s.producerMaxRssMB)} MB)`,
  },
  {
    id: 'W2',
    module: 'w2',
    title: 'ping-pong over newChannel() reply channels, round-trip time',
    full: { warmupTrips: 1000, trips: 10000 },
    quick: { warmupTrips: 200, trips: 2000 },
    timeoutS: 120,
    summary: (s) => `RTT p50 ${f(s.p50us, 1)} µs, p99 ${f(s.p99us, 1)} µs`,
  },
  {
    id: 'W3',
    part: 'W3a',
    module: 'w3-fanout',
    title: 'fan-out: 4 processes x 25 channels in one group, groupSend loop in a 5th process',
    full: { duration: 5, warmup: 1 },
    quick: { duration: 1.5, warmup: 0.3 },
    timeoutS: 90,
    summary: (s) => `${f(s.deliveriesPerSec)} deliveries/s (${f(s.groupSendsPerSec)} groupSend/s)`,
  },
  {
    id: 'W3',
    part: 'W3b',
    module: 'w3-groupcost',
    title: 'cost of one groupSend vs group size (members idle, 4 processes) and 1 vs 4 processes',
    full: {
      sizes: [1, 10, 100, 1000, 10000],
      sends: { 1: 2000, 10: 2000, 100: 1000, 1000: 200, 10000: 40 },
    },
    quick: {
      sizes: [1, 10, 100, 1000, 10000],
      sends: { 1: 500, 10: 500, 100: 200, 1000: 50, 10000: 10 },
    },
    timeoutS: 300,
    summary: (s) =>
      Object.entries(s.usPerGroupSend)
        .map(([k, v]) => `${k}: ${f(v, 1)} µs`)
        .join(', '),
  },
  {
    id: 'W4',
    module: 'w4',
    title: 'large messages (1 MB and 5 MB Buffer payloads) between two processes',
    ipcSerialization: 'advanced', // Buffer values do not survive JSON
    full: { sizes: [1e6, 5e6], counts: { 1000000: 300, 5000000: 60 } },
    quick: { sizes: [1e6, 5e6], counts: { 1000000: 60, 5000000: 15 } },
    timeoutS: 180,
    summary: (s) => `1 MB: ${f(s.MBps?.['1MB'])} MB/s, 5 MB: ${f(s.MBps?.['5MB'])} MB/s`,
  },
  {
    id: 'W6',
    module: 'w6',
    title: 'ping-pong p99 alone, then while another pair streams 5 MB messages',
    // Two pairs of processes: in one process (inmemory) the stream never yields to the pair.
    backends: ['shm', 'redis', 'cluster'],
    ipcSerialization: 'advanced', // Buffer values do not survive JSON
    full: { warmupTrips: 500, trips: 5000, bytes: 5e6 },
    quick: { warmupTrips: 100, trips: 1000, bytes: 5e6 },
    timeoutS: 180,
    summary: (s) =>
      `p99 idle ${f(s.idleP99us, 1)} µs, under load ${f(s.loadedP99us, 1)} µs (${f(s.p99LoadedOverIdle, 2)}x)`,
  },
  {
    id: 'W5',
    part: 'W5a',
    module: 'w5-producers',
    title: '1, 2, 4, 8 producer processes -> 1 consumer process',
    full: { producers: [1, 2, 4, 8], duration: 3, warmup: 0.5 },
    quick: { producers: [1, 2, 4, 8], duration: 1, warmup: 0.3 },
    timeoutS: 120,
    summary: (s) =>
      Object.entries(s.msgsPerSec)
        .map(([k, v]) => `${k}: ${f(v)}/s`)
        .join(', '),
  },
  {
    id: 'W5',
    part: 'W5b',
    module: 'w5-channels',
    title:
      '100k channels resident, one message each; then receive from 1000 of them in another process',
    full: { channels: 100000, probes: 1000 },
    quick: { channels: 100000, probes: 1000 },
    timeoutS: 240,
    summary: (s) =>
      `created in ${f(s.createSeconds, 2)} s, ${f(s.bytesUsed / 1e6, 1)} MB used, receive ${s.receiveOk ? 'ok' : 'FAILED'} (${f(s.usPerReceive, 1)} µs each)`,
  },
  {
    id: 'W7',
    module: 'w7-receive-any',
    title:
      'receiveAny: 1 consumer process, one receiveAny() loop over 100 channels, vs one channel (W1 shape) in the same run',
    backends: ['shm', 'redis', 'inmemory'], // the cluster IPC baseline has no receiveAny
    full: { duration: 5, warmup: 1, channels: 100 },
    quick: { duration: 1.5, warmup: 0.3, channels: 100 },
    timeoutS: 90,
    summary: (s) =>
      `100 channels ${f(s.anyMsgsPerSec)} msg/s vs 1 channel ${f(s.oneChannelMsgsPerSec)} msg/s (x${f(s.anyVsOne, 2)}); ` +
      `consumer CPU ${f(s.consumerCpuUsPerMsg?.any, 2)} vs ${f(s.consumerCpuUsPerMsg?.one, 2)} µs/msg; ` +
      `frozen list ${f(s.anyFrozenMsgsPerSec)} msg/s, ${f(s.consumerCpuUsPerMsg?.anyFrozen, 2)} µs/msg`,
  },
];
