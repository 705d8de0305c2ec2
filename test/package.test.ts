// The published tarball must install and load with no compiler: it carries a prebuilt addon.
// Packs from a copy of the sources (so this test never rebuilds the addon other tests have
// loaded), installs the tarball with --ignore-scripts under a PATH holding only node, then loads
// the package through require and import and makes native calls.
import { execFileSync, spawnSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const npmCli = join(
  dirname(process.execPath),
  '..',
  'lib',
  'node_modules',
  'npm',
  'bin',
  'npm-cli.js',
);

let work: string;
let tarball: string;
/**
 * Packed with this machine's prebuild only: outside CI the pack may skip the other architecture's
 * when its cross compiler is missing (SHMCH_PREBUILD_HOST_ONLY, scripts/prebuild-cross.mjs), and
 * the checks of that prebuild are skipped, loudly; in CI a missing one fails the pack.
 */
let hostOnly = false;
let installDir: string;
let bareEnv: NodeJS.ProcessEnv;

function npm(args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): string {
  return execFileSync(process.execPath, [npmCli, ...args], {
    cwd,
    env,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'shmch-pack-'));
  const source = join(work, 'source');
  mkdirSync(source);
  for (const entry of [
    'package.json',
    'package-lock.json',
    'binding.gyp',
    'tsconfig.json',
    'README.md',
    'lib',
    'native',
    'scripts',
  ]) {
    if (existsSync(join(root, entry)))
      cpSync(join(root, entry), join(source, entry), { recursive: true });
  }
  symlinkSync(join(root, 'node_modules'), join(source, 'node_modules'), 'dir');
  // prepack compiles TypeScript and the prebuild; pack writes the tarball.
  const output = npm(
    ['pack', '--json', '--pack-destination', work],
    source,
    process.env.CI ? process.env : { ...process.env, SHMCH_PREBUILD_HOST_ONLY: '1' },
  );
  const [info] = JSON.parse(output.slice(output.indexOf('['))) as Array<{
    filename: string;
    files: Array<{ path: string }>;
  }>;
  tarball = join(work, info!.filename);
  const packed = info!.files.map((f) => f.path);
  (globalThis as Record<string, unknown>).__packedFiles = packed;
  // (Never in CI: there both must be in the tarball, and the test below says so.)
  hostOnly =
    !process.env.CI &&
    !['x64', 'arm64'].every((arch) => packed.includes(`prebuilds/linux-${arch}/shm-channels.node`));
  if (hostOnly) {
    console.warn(
      `\n*** No cross compiler for the other architecture (apt-get install g++-aarch64-linux-gnu ` +
        `on x64): packed with this machine's prebuild only, SKIPPING the checks of the other ***\n`,
    );
  }

  // A PATH with node and nothing else: no cc, c++, make or python.
  const bin = join(work, 'bin');
  mkdirSync(bin);
  symlinkSync(process.execPath, join(bin, 'node'));
  bareEnv = {
    HOME: process.env.HOME,
    PATH: bin,
    npm_config_cache: process.env.npm_config_cache ?? join(process.env.HOME ?? work, '.npm'),
  };
  installDir = join(work, 'app');
  mkdirSync(installDir);
  writeFileSync(
    join(installDir, 'package.json'),
    '{ "name": "app", "version": "1.0.0", "private": true }\n',
  );
  npm(
    ['install', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', tarball],
    installDir,
    bareEnv,
  );
}, 600_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('packed tarball', () => {
  it('contains the prebuilt addon, compiled JS with types, and the native sources', () => {
    const files = (globalThis as Record<string, unknown>).__packedFiles as string[];
    expect(files).toContain(`prebuilds/linux-${process.arch}/shm-channels.node`);
    expect(files).toContain('scripts/install.cjs');
    expect(files).toContain('dist/cjs/index.js');
    expect(files).toContain('dist/cjs/index.d.ts');
    expect(files).toContain('dist/esm/index.mjs');
    expect(files).toContain('dist/cjs/socket.io/index.js');
    expect(files).toContain('dist/cjs/socket.io/index.d.ts');
    expect(files).toContain('dist/esm/socket.io.mjs');
    expect(files).toContain('dist/esm/socket.io.d.mts');
    expect(files).toContain('binding.gyp');
    expect(files.some((f) => f.startsWith('native/core/'))).toBe(true);
    expect(files.some((f) => f.startsWith('build/'))).toBe(false);
  });

  it('contains the prebuilt addon of the other architecture (linux-x64 and linux-arm64 both)', (ctx) => {
    if (hostOnly) return ctx.skip();
    const files = (globalThis as Record<string, unknown>).__packedFiles as string[];
    expect(files).toContain('prebuilds/linux-x64/shm-channels.node');
    expect(files).toContain('prebuilds/linux-arm64/shm-channels.node');
  });

  it('is installed into an environment without a compiler', () => {
    for (const tool of ['cc', 'gcc', 'g++', 'make', 'python3', 'python']) {
      const found = spawnSync('/bin/sh', ['-c', `command -v ${tool}`], { env: bareEnv });
      expect(found.status, `${tool} must not be on the bare PATH`).not.toBe(0);
    }
    const pkg = join(installDir, 'node_modules', 'shm-channels');
    expect(existsSync(join(pkg, 'build'))).toBe(false);
    expect(readdirSync(join(pkg, 'prebuilds', 'linux-x64'))).toContain('shm-channels.node');
  });

  it('loads the prebuild through require and makes native calls', () => {
    const name = `pack-${process.pid}`;
    const script = `
      const gyp = require('node-gyp-build');
      const path = require('path');
      const loaded = gyp.resolve(path.dirname(require.resolve('shm-channels/package.json')));
      const { ShmChannelLayer, ChannelFull } = require('shm-channels');
      const layer = new ShmChannelLayer({ name: '${name}', size: 8 << 20 });
      (async () => {
        await layer.send('probe', { type: 'probe', n: 7 });
        const msg = await layer.receive('probe');
        await layer.close();
        ShmChannelLayer.destroy('${name}');
        console.log(JSON.stringify({ loaded, msg, full: typeof ChannelFull }));
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const out = execFileSync(process.execPath, ['-e', script], {
      cwd: installDir,
      env: bareEnv,
      encoding: 'utf8',
    });
    const result = JSON.parse(out.trim()) as { loaded: string; msg: unknown; full: string };
    expect(result.loaded).toContain(join('prebuilds', 'linux-x64'));
    expect(result.msg).toEqual({ type: 'probe', n: 7 });
    expect(result.full).toBe('function');
  });

  // Issue 14: a message declared as an interface was rejected ("Index signature for type 'string'
  // is missing"), and the declarations needed @types/node without saying so. A consumer with
  // `"types": []` (nothing included implicitly) and full checking of the package's .d.ts.
  it('type-checks a TypeScript consumer: interface messages, receive<T>, Node types from the package itself', () => {
    writeFileSync(
      join(installDir, 'consumer.ts'),
      `import { ShmChannelLayer, InMemoryChannelLayer, type ChannelLayer, type Message } from 'shm-channels';
interface Chat {
  type: 'chat.message';
  text: string;
  at: Date;
  attachments?: Uint8Array[];
}
async function use(layer: ChannelLayer, signal: AbortSignal): Promise<number> {
  const message: Chat = { type: 'chat.message', text: 'hi', at: new Date() };
  await layer.send('room.inbox', message);
  const reached: number = await layer.groupSend('room', message);
  const chat = await layer.receive<Chat>('room.inbox', { signal });
  const text: string = chat.text;
  const plain: Message = await layer.receive('room.inbox');
  const channel = await layer.newChannel();
  await layer.releaseChannel(channel);
  return reached + text.length + Object.keys(plain).length;
}
void use(new InMemoryChannelLayer(), new AbortController().signal);
void use(new ShmChannelLayer({ name: 'typecheck' }), AbortSignal.timeout(10));
// @ts-expect-error a message is an object, not a string
void new InMemoryChannelLayer().send('x', 'not an object');
`,
    );
    writeFileSync(
      join(installDir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'Node16',
          moduleResolution: 'Node16',
          lib: ['ES2022'],
          types: [],
          strict: true,
          noEmit: true,
          skipLibCheck: false,
        },
        files: ['consumer.ts'],
      }),
    );
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const result = spawnSync(process.execPath, [tsc, '-p', installDir], {
      cwd: installDir,
      encoding: 'utf8',
    });
    expect(result.stdout + result.stderr).toBe('');
    expect(result.status).toBe(0);
  });

  it('loads through ESM import with the same classes as require', () => {
    const script = `
      import { createRequire } from 'node:module';
      import { ChannelFull, ShmChannelLayer } from 'shm-channels';
      const require = createRequire(import.meta.url);
      const cjs = require('shm-channels');
      const layer = new ShmChannelLayer({ name: 'pack-esm-${process.pid}', size: 8 << 20 });
      await layer.close();
      ShmChannelLayer.destroy('pack-esm-${process.pid}');
      console.log(String(cjs.ChannelFull === ChannelFull && cjs.ShmChannelLayer === ShmChannelLayer));`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
      cwd: installDir,
      env: bareEnv,
      encoding: 'utf8',
    });
    expect(out.trim()).toBe('true');
  });

  it('serves shm-channels/socket.io through require and import (with its peer socket.io-adapter)', () => {
    // The peer dependency, as the application would have it installed (linked from ours).
    symlinkSync(
      join(root, 'node_modules', 'socket.io-adapter'),
      join(installDir, 'node_modules', 'socket.io-adapter'),
      'dir',
    );
    const script = `
      import { createRequire } from 'node:module';
      import { createAdapter } from 'shm-channels/socket.io';
      const require = createRequire(import.meta.url);
      const cjs = require('shm-channels/socket.io');
      console.log(String(typeof createAdapter === 'function' && cjs.createAdapter === createAdapter));`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
      cwd: installDir,
      env: bareEnv,
      encoding: 'utf8',
    });
    expect(out.trim()).toBe('true');
  });

  // The linux-arm64 prebuild (Graviton, Ampere) is cross-compiled with Debian's
  // g++-aarch64-linux-gnu; here Debian's own arm64 Node.js runs it under qemu-user.
  it('loads the linux-arm64 prebuild under qemu-user with an arm64 Node and round-trips a message', (ctx) => {
    // Reported as skipped, not passed, where the tools are missing (CI has them: armNode throws there).
    if (hostOnly) return ctx.skip();
    const arm64 = armNode();
    if (!arm64) return ctx.skip();
    const name = `pack-arm64-${process.pid}`;
    const script = `
      const gyp = require('node-gyp-build');
      const path = require('path');
      const loaded = gyp.resolve(path.dirname(require.resolve('shm-channels/package.json')));
      const { ShmChannelLayer } = require('shm-channels');
      const layer = new ShmChannelLayer({ name: '${name}', size: 8 << 20 });
      (async () => {
        await layer.send('probe', { type: 'probe', from: process.arch, blob: Buffer.alloc(100000, 5) });
        const msg = await layer.receive('probe');
        await layer.close();
        ShmChannelLayer.destroy('${name}');
        console.log(JSON.stringify({ loaded, arch: process.arch, node: process.version, from: msg.from, blob: msg.blob.length }));
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const out = execFileSync(
      arm64.qemu,
      ['-L', arm64.root, join(arm64.root, 'usr', 'bin', 'node'), '-e', script],
      {
        cwd: installDir,
        env: bareEnv,
        encoding: 'utf8',
        timeout: 120_000,
      },
    );
    const result = JSON.parse(out.trim().split('\n').pop()!) as {
      loaded: string;
      arch: string;
      node: string;
      from: string;
      blob: number;
    };
    expect(result.arch).toBe('arm64');
    expect(result.loaded).toContain(join('prebuilds', 'linux-arm64'));
    expect(result.from).toBe('arm64');
    expect(result.blob).toBe(100000);
  }, 180_000);

  // Where no prebuild fits (Alpine's musl, another architecture) and nothing can compile one, the
  // install script says exactly what to install.
  it('the install script names what to install when no prebuild fits and compiling fails', () => {
    const pkg = join(installDir, 'node_modules', 'shm-channels');
    const hidden = join(work, 'prebuilds-hidden');
    cpSync(join(pkg, 'prebuilds'), hidden, { recursive: true });
    rmSync(join(pkg, 'prebuilds'), { recursive: true, force: true });
    try {
      const result = spawnSync(process.execPath, [join(pkg, 'scripts', 'install.cjs')], {
        cwd: pkg,
        env: bareEnv,
        encoding: 'utf8',
      });
      expect(result.status).not.toBe(0);
      expect(result.stderr).toContain('no prebuilt addon fits linux-x64');
      expect(result.stderr).toContain('apk add --no-cache python3 make g++ linux-headers');
      expect(result.stderr).toContain('apt-get install python3 make g++');
    } finally {
      cpSync(hidden, join(pkg, 'prebuilds'), { recursive: true });
    }
  });
});

/** qemu-aarch64 and Debian's arm64 Node (scripts/arm64-node.sh unpacks it; .ci/run does). */
function armNode(): { qemu: string; root: string } | null {
  const sysroot =
    process.env.SHMCH_ARM64_NODE_ROOT ?? join(root, 'node_modules', '.cache', 'arm64-node');
  const qemu = spawnSync('/bin/sh', ['-c', 'command -v qemu-aarch64'], {
    encoding: 'utf8',
  }).stdout.trim();
  if (qemu && existsSync(join(sysroot, 'usr', 'bin', 'node'))) return { qemu, root: sysroot };
  const why = `needs qemu-aarch64 (apt-get install qemu-user) and an arm64 Node in ${sysroot} (scripts/arm64-node.sh)`;
  if (process.env.CI) throw new Error(`the arm64 prebuild test cannot run: ${why}`);
  console.warn(`\n*** SKIPPING the arm64 prebuild test: ${why} ***\n`);
  return null;
}
