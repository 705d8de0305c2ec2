// A process on a RedisChannelLayer that makes a '!' channel, joins it to group 'room', prints
// its name and exits without close(), as if it had been killed (test/redis.test.ts).
//   node redis-member-then-exit.mjs <prefix> <redis URL>...
import { RedisChannelLayer } from 'shm-channels';

const [prefix, ...hosts] = process.argv.slice(2);
if (!prefix || hosts.length === 0) {
  console.error('redis-member-then-exit.mjs: needs <prefix> <redis URL>...');
  process.exit(2);
}
const layer = new RedisChannelLayer({ hosts, prefix });
const channel = await layer.newChannel();
await layer.groupAdd('room', channel);
console.log(channel);
// Lives a moment, as a real process would: its first heartbeat (written to every host without
// waiting) must reach them all before it dies, or its channel looks like a channels_redis one.
await new Promise((resolve) => setTimeout(resolve, 200));
process.exit(0);
