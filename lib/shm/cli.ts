#!/usr/bin/env node
// Operations tool: npx shm-channels list | prune | stats <name> | inspect <name> | verify <name> | destroy <name>
import { readdirSync, statSync } from 'node:fs';
import { ShmError } from '../errors.js';
import { ShmChannelLayer } from './shm-layer.js';

const USAGE = `usage: shm-channels <command> [name] [--json]

  list              layers of this user in /dev/shm: size, /dev/shm use, processes, queued
  prune             remove every layer no process uses and no unexpired message waits in
                    (and doorbells left without a layer); give back the others' empty memory
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

const SHM_DIR = '/dev/shm';

interface LayerListing {
  name: string;
  /** The most the segment may grow to (its `size` option). */
  sizeBytes: number;
  /** Of /dev/shm the segment occupies now. */
  shmBytes: number;
  /** Live processes attached; the tool itself is not counted. */
  processes: number;
  /** Messages queued (unexpired and expired not yet dropped); null if the layer cannot be read. */
  queued: number | null;
  problem?: string;
}

/** Layer names of this user with a segment, and names that only have doorbells left. */
function scan(): { layers: string[]; orphanDoorbells: string[] } {
  const prefix = `shmch.${process.getuid?.() ?? 0}.`;
  const files = readdirSync(SHM_DIR);
  const layers = files.filter((f) => f.startsWith(prefix)).map((f) => f.slice(prefix.length));
  const have = new Set(layers);
  const orphans = new Set<string>();
  // Doorbells are FIFOs named shmch-bell.<uid>.<layer>.<slot>.
  const bellPrefix = `shmch-bell.${process.getuid?.() ?? 0}.`;
  for (const f of files) {
    const match = f.startsWith(bellPrefix) && /^(.*)\.\d+$/.exec(f.slice(bellPrefix.length));
    if (match && !have.has(match[1]!)) orphans.add(match[1]!);
  }
  return { layers: layers.sort(), orphanDoorbells: [...orphans].sort() };
}

function describeLayer(name: string): LayerListing {
  const prefix = `shmch.${process.getuid?.() ?? 0}.`;
  const st = statSync(`${SHM_DIR}/${prefix}${name}`);
  const listing: LayerListing = {
    name,
    sizeBytes: st.size,
    shmBytes: st.blocks * 512,
    processes: Math.max(0, ShmChannelLayer.attachedProcesses(name)),
    queued: null,
  };
  // Read without attaching: listing never takes a slot or the lock of a layer in use.
  const queued = ShmChannelLayer.peekQueued(name);
  if (queued >= 0) listing.queued = queued;
  else listing.problem = 'not readable by this version of shm-channels';
  return listing;
}

function list(): LayerListing[] {
  return scan().layers.map(describeLayer);
}

interface PruneResult {
  name: string;
  removed: boolean;
  why: string;
}

function prune(): PruneResult[] {
  const { layers, orphanDoorbells } = scan();
  const results: PruneResult[] = [];
  for (const name of layers) {
    try {
      const removed = ShmChannelLayer.prune(name);
      if (removed) {
        results.push({ name, removed, why: 'no process attached and no unexpired message' });
      } else {
        const { processes, queued } = describeLayer(name);
        results.push({
          name,
          removed,
          why: `in use: ${processes} processes attached, ${queued ?? '?'} messages queued`,
        });
      }
    } catch (error) {
      const code = error instanceof ShmError ? error.code : '';
      const unused = ShmChannelLayer.attachedProcesses(name) === 0;
      if (code === 'EVERSION' && unused) {
        // Made by another version of shm-channels that no process runs any more.
        ShmChannelLayer.destroy(name);
        results.push({ name, removed: true, why: 'another layout version, no process attached' });
      } else if (code === 'ENOTFOUND' && unused) {
        // The file is there but was never initialised: its creator died half-way.
        ShmChannelLayer.destroy(name);
        results.push({
          name,
          removed: true,
          why: 'never initialised (its creator died), no process attached',
        });
      } else if (code !== 'ENOTFOUND') {
        results.push({ name, removed: false, why: (error as Error).message });
      }
    }
  }
  for (const name of orphanDoorbells) {
    ShmChannelLayer.destroy(name);
    results.push({ name, removed: true, why: 'doorbells without a layer' });
  }
  return results;
}

function main(argv: string[]): number {
  const json = argv.includes('--json');
  const [command, name] = argv.filter((a) => a !== '--json');
  const out = (value: unknown, text: () => string): void => {
    console.log(json ? JSON.stringify(value, null, 2) : text());
  };
  if (command === 'list') {
    const layers = list();
    out(layers, () => {
      if (!layers.length) return '(no layers)';
      const rows = [['layer', 'size', '/dev/shm', 'processes', 'queued']];
      for (const l of layers) {
        rows.push([
          l.name,
          bytes(l.sizeBytes),
          bytes(l.shmBytes),
          String(l.processes),
          l.queued === null ? `? (${l.problem})` : String(l.queued),
        ]);
      }
      const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
      return rows
        .map((r) =>
          r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  '),
        )
        .join('\n');
    });
    return 0;
  }
  if (command === 'prune') {
    const results = prune();
    out(results, () =>
      results.length
        ? results.map((r) => `${r.removed ? 'removed' : 'kept'} ${r.name}: ${r.why}`).join('\n')
        : '(no layers)',
    );
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
      out({ problems }, () =>
        problems.length ? problems.join('\n') : `layer '${name}' is consistent`,
      );
      return problems.length ? 1 : 0;
    }
    const stats = layer.stats(command === 'inspect' ? 100000 : 0);
    // This tool's own attachment is not one of the layer's processes.
    const report = { ...stats, processes: stats.processes - 1 };
    out(
      command === 'inspect' ? report : { ...report, channelList: undefined, groupList: undefined },
      () => {
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
      },
    );
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
