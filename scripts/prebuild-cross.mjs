#!/usr/bin/env node
// Cross-compiles the prebuild for the other Linux architecture of the two the package ships
// (linux-x64 and linux-arm64) with Debian's cross toolchain, before `prebuildify` builds the
// host's own. On x64 this needs `apt-get install g++-aarch64-linux-gnu`; on arm64,
// `g++-x86-64-linux-gnu`. Output: prebuilds/linux-<arch>/shm-channels.node.
import { spawnSync } from 'node:child_process';
import { arch } from 'node:os';

const targets = {
  x64: { arch: 'arm64', triple: 'aarch64-linux-gnu', debian: 'g++-aarch64-linux-gnu' },
  arm64: { arch: 'x64', triple: 'x86_64-linux-gnu', debian: 'g++-x86-64-linux-gnu' },
};
const target = targets[arch()];
if (!target) {
  console.error(`prebuild-cross: no cross build set up from ${arch()}`);
  process.exit(1);
}
const tool = (name) => `${target.triple}-${name}`;
if (spawnSync(tool('g++'), ['--version'], { stdio: 'ignore' }).status !== 0) {
  // The package test on a developer's machine without the cross toolchain (never in CI, and
  // never for a release): the tarball gets the host's prebuild only.
  if (process.env.SHMCH_PREBUILD_HOST_ONLY === '1') {
    console.error(
      `prebuild-cross: ${tool('g++')} is missing and SHMCH_PREBUILD_HOST_ONLY=1: ` +
        `no linux-${target.arch} prebuild in this package`,
    );
    process.exit(0);
  }
  console.error(
    `prebuild-cross: ${tool('g++')} is missing; the package ships linux-x64 and linux-arm64 prebuilds.\n` +
      `  Debian/Ubuntu: apt-get install ${target.debian}`,
  );
  process.exit(1);
}
const result = spawnSync('npx', ['prebuildify', '--napi', '--strip', '--arch', target.arch], {
  stdio: 'inherit',
  env: {
    ...process.env,
    CC: tool('gcc'),
    CXX: tool('g++'),
    LINK: tool('g++'),
    AR: tool('ar'),
    PREBUILD_STRIP_BIN: tool('strip'),
  },
});
process.exit(result.status ?? 1);
