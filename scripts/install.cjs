#!/usr/bin/env node
// npm's install step: node-gyp-build uses a prebuilt addon that loads (linux-x64, linux-arm64,
// glibc) and otherwise compiles one. When that fails, say what the system lacks.
'use strict';
const { spawnSync } = require('child_process');
const path = require('path');

const result = spawnSync(process.execPath, [require.resolve('node-gyp-build/bin.js')], {
  cwd: path.join(__dirname, '..'),
  stdio: 'inherit',
});
if (result.status === 0) process.exit(0);

const report = process.report && process.report.getReport ? process.report.getReport() : null;
const musl = report ? !report.header.glibcVersionRuntime : false;
const platform = `${process.platform}-${process.arch}${musl ? ' (musl)' : ''}`;
console.error(`
shm-channels: no prebuilt addon fits ${platform}, and compiling one failed.
Prebuilt addons ship for linux-x64 and linux-arm64 with glibc 2.34 or newer. To build from
source, install Python 3, make, a C++17 compiler and the Linux headers, then run npm install again:
  Alpine (musl):  apk add --no-cache python3 make g++ linux-headers
  Debian, Ubuntu: apt-get install python3 make g++
  RHEL, Fedora:   dnf install python3 make gcc-c++
`);
process.exit(result.status || 1);
