#!/usr/bin/env bash
# Unpacks Debian's arm64 Node.js (nodejs:arm64 and what it depends on) into a directory, for
# qemu-user: test/package.test.ts loads the linux-arm64 prebuild with it. Needs the arm64
# architecture in dpkg (`dpkg --add-architecture arm64 && apt-get update`, as .ci/run does).
# Prints the directory; does nothing when it is there already.
#   scripts/arm64-node.sh [DIR]    default: node_modules/.cache/arm64-node
set -euo pipefail
root="${1:-$(cd "$(dirname "$0")/.." && pwd)/node_modules/.cache/arm64-node}"
if [ -x "$root/usr/bin/node" ]; then
  echo "$root"
  exit 0
fi
# nodejs:arm64, its libnode and what that links and loads (for Debian 12: libnode108, libicu72,
# libssl3 ..., and the arch:all node-acorn, node-cjs-module-lexer, node-undici whose JS it loads
# from /usr/share/nodejs). A dependency in <...> is virtual for arm64: the arch:all package.
depends_of() {
  apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
    --no-enhances "$1" 2>/dev/null | sed -n 's/^ *|\{0,1\}Depends: //p' |
    sed -e 's/^<\(.*\):arm64>$/\1/' -e 's/^<\(.*\)>$/\1/'
}
packages=(nodejs:arm64 libc6:arm64 libgcc-s1:arm64 libstdc++6:arm64)
libnode=$(depends_of nodejs:arm64 | grep -m1 '^libnode' || true)
if [ -n "$libnode" ]; then
  packages+=("$libnode")
  mapfile -t -O "${#packages[@]}" packages < <(depends_of "$libnode")
fi
if [ -z "$libnode" ]; then
  echo "arm64-node: apt knows no nodejs:arm64 (run: dpkg --add-architecture arm64 && apt-get update)" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
(cd "$work" && apt-get download -qq "${packages[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
mkdir -p "$root.partial"
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$root.partial"; done
[ -x "$root.partial/usr/bin/node" ] || { echo "arm64-node: nodejs:arm64 did not unpack" >&2; exit 1; }
rm -rf "$root"
mv "$root.partial" "$root"
echo "$root"
