/**
 * Host selection as channels_redis does it (`channels_redis.utils._consistent_hash`): the CRC-32
 * of the UTF-8 name, keep its low 12 bits (0..4095), divide that range evenly over the hosts.
 */

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (IEEE, as zlib and Python's binascii.crc32), unsigned. */
export function crc32(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = CRC_TABLE[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** Index (0..ringSize-1) of the host that holds `value`'s key. */
export function consistentHash(value: string, ringSize: number): number {
  if (ringSize === 1) return 0;
  const bucket = crc32(Buffer.from(value, 'utf8')) & 0xfff;
  // Python: int(bucket / (4096 / float(ring_size))); same IEEE doubles here, so the same result.
  return Math.trunc(bucket / (4096 / ringSize));
}
