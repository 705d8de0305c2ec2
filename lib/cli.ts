#!/usr/bin/env node
// Operations tool: npx shm-channels list | stats <name> | inspect <name> | verify <name> | destroy <name>
import { readdirSync } from 'node:fs';
import { ShmChannelLayer } from './shm-layer.js';

const USAGE = `usage: shm-channels <command> [name] [--json]

  list              layers of this user in /dev/shm
  stats <name>      processes attached, channels, groups, queued messages, arena use,
                    and the deliveries not made (full members, refused, expired, orphaned)
  inspect <name>    stats plus every channel with its depth and every group with its size
  verify <name>     walk every shared structure; exit status 1 if anything is inconsistent
  destroy <name>    remove the layer's segment and doorbells (attached processes notice)`;

function attach(name: string): ShmChannelLayer {
  return new ShmChannelLayer({ name, create: false });
}

function bytes(n: number): string {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`;
}

function main(argv: string[]): number {
  const json = argv.includes('--json');
  const [command, name] = argv.filter((a) => a !== '--json');
  const out = (value: unknown, text: () => string): void => {
    console.log(json ? JSON.stringify(value, null, 2) : text());
  };
  if (command === 'list') {
    const prefix = `shmch.${process.getuid?.() ?? 0}.`;
    const layers = readdirSync('/dev/shm')
      .filter((f) => f.startsWith(prefix))
      .map((f) => f.slice(prefix.length));
    out(layers, () => (layers.length ? layers.join('\n') : '(no layers)'));
    return 0;
  }
  if (!name || !['stats', 'inspect', 'verify', 'destroy'].includes(command ?? '')) {
    console.error(USAGE);
    return 2;
  }
  if (command === 'destroy') {
    const removed = ShmChannelLayer.destroy(name);
    out({ removed }, () => (removed ? `removed layer '${name}'` : `no layer named '${name}'`));
    return removed ? 0 : 1;
  }
  const layer = attach(name);
  try {
    if (command === 'verify') {
      const problems = layer.verify();
      out({ problems }, () => (problems.length ? problems.join('\n') : `layer '${name}' is consistent`));
      return problems.length ? 1 : 0;
    }
    const stats = layer.stats(command === 'inspect' ? 100000 : 0);
    // This tool's own attachment is not one of the layer's processes.
    const report = { ...stats, processes: stats.processes - 1 };
    out(command === 'inspect' ? report : { ...report, channelList: undefined, groupList: undefined }, () => {
      const lines = [
        `layer '${name}': ${report.processes} processes attached`,
        `  channels ${report.channels}, groups ${report.groups}, memberships ${report.members}, queued ${report.queued}`,
        `  arena ${bytes(report.arenaUsedBytes)} used of ${bytes(report.arenaBytes)} (segment ${bytes(report.segmentBytes)})`,
        `  sent ${report.messagesSent}, received ${report.messagesReceived}, expired ${report.messagesExpired}, lock recoveries ${report.lockRecoveries}`,
        // Where undelivered messages went: an operator's first question after a lossy burst.
        `  not delivered: group members full ${report.deliveriesSkippedFull}, sends refused (channel full) ${report.sendsRefusedFull}, ` +
          `expired ${report.messagesExpired}, orphaned ('!' channel of a gone process) ${report.messagesOrphaned}, damaged ${report.messagesDamaged}`,
      ];
      if (command === 'inspect') {
        lines.push('channels (depth, groups):');
        for (const c of report.channelList) lines.push(`  ${c.name}  ${c.depth}  ${c.groups}`);
        lines.push('groups (members):');
        for (const g of report.groupList) lines.push(`  ${g.name}  ${g.members}`);
      }
      return lines.join('\n');
    });
    return 0;
  } finally {
    void layer.close();
  }
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (error) {
  console.error(`shm-channels: ${(error as Error).message}`);
  process.exitCode = 1;
}
