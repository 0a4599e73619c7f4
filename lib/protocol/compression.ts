import { constants as bufferConstants } from 'node:buffer';
import { brotliCompressSync, brotliDecompressSync, deflateSync, inflateSync } from 'node:zlib';
import { Decompress as ZstdStream } from 'fzstd';
import { XzReadableStream } from 'xz-decompress';

// seek-bzip ships no type declarations.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const bzip2 = require('seek-bzip') as { decode(input: Buffer, output: ByteSink): void };

interface ByteSink {
  writeByte(byte: number): void;
}

/**
 * Message body compression, by the `compression` header kombu writes (wire spec §1.7). Note that
 * kombu's "gzip" is a zlib stream (RFC 1950), not gzip. Reading covers every compressor kombu can
 * register: zlib (Node), brotli (Node), bzip2 (seek-bzip), zstd (fzstd) and lzma/xz (xz-decompress,
 * which is asynchronous). Writing supports zlib and brotli.
 *
 * Every decoder stops as soon as the output passes `maxBytes`, so a small body that inflates to
 * gigabytes (a decompression bomb) costs at most about `maxBytes` of memory, never the whole output.
 */
interface Codec {
  mime: string;
  decompress(body: Buffer, maxBytes: number): Buffer | Promise<Buffer>;
  compress?(body: Buffer): Buffer;
}

/** The decompressed body would be larger than the limit; decoding stopped there. */
export class DecompressedTooLargeError extends RangeError {
  constructor(readonly maxBytes: number) {
    super(`decompressed body exceeds ${maxBytes} bytes`);
  }
}

const CODECS: Codec[] = [
  { mime: 'application/x-gzip', decompress: (b, max) => zlibBounded((cap) => inflateSync(b, { maxOutputLength: cap }), max), compress: (b) => deflateSync(b) },
  { mime: 'application/x-brotli', decompress: (b, max) => zlibBounded((cap) => brotliDecompressSync(b, { maxOutputLength: cap }), max), compress: (b) => brotliCompressSync(b) },
  { mime: 'application/x-bz2', decompress: bzip2Decompress },
  { mime: 'application/zstd', decompress: zstdDecompress },
  { mime: 'application/x-lzma', decompress: xzDecompress },
];

/** kombu's names and aliases for each compressor. */
const ALIASES: Record<string, string> = {
  zlib: 'application/x-gzip',
  gzip: 'application/x-gzip',
  brotli: 'application/x-brotli',
  bzip2: 'application/x-bz2',
  zstd: 'application/zstd',
  lzma: 'application/x-lzma',
  xz: 'application/x-lzma',
};

/** The `compression` header value for a compressor name (`zlib`, `brotli`, ...) or mime type. */
export function compressionMime(name: string): string {
  const mime = ALIASES[name] ?? name;
  if (!CODECS.some((c) => c.mime === mime)) throw new RangeError(`unknown compression ${JSON.stringify(name)}`);
  return mime;
}

export function compressBody(body: Buffer, mime: string): Buffer {
  const codec = CODECS.find((c) => c.mime === mime);
  if (!codec?.compress) throw new RangeError(`compression ${JSON.stringify(mime)} can be read but not written; use zlib or brotli`);
  return codec.compress(body);
}

/**
 * The decompressed body; throws (or rejects) with a reason naming the compression, or with
 * DecompressedTooLargeError once the output passes `maxBytes` (default: the largest Buffer).
 */
export function decompressBody(body: Buffer, compression: unknown, maxBytes?: number): Buffer | Promise<Buffer> {
  const codec = CODECS.find((c) => c.mime === compression);
  if (!codec) throw new RangeError(`unsupported compression ${JSON.stringify(compression)}`);
  const limit = maxBytes === undefined ? bufferConstants.MAX_LENGTH : Math.max(0, Math.min(Math.floor(maxBytes), bufferConstants.MAX_LENGTH));
  try {
    const out = codec.decompress(body, limit);
    if (out instanceof Promise) return out.catch((err: unknown) => Promise.reject(failure(compression, err)));
    return out;
  } catch (err) {
    throw failure(compression, err);
  }
}

function failure(compression: unknown, err: unknown): RangeError {
  if (err instanceof DecompressedTooLargeError) return err;
  return new RangeError(`body does not decompress as ${String(compression)} (${err instanceof Error ? err.message : String(err)})`);
}

/** Node's zlib stops at `maxOutputLength` (checked after every 16 KiB chunk) and throws ERR_BUFFER_TOO_LARGE. */
function zlibBounded(run: (maxOutputLength: number) => Buffer, maxBytes: number): Buffer {
  let out: Buffer;
  try {
    out = run(Math.max(1, maxBytes)); // Node's minimum
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ERR_BUFFER_TOO_LARGE') tooLarge(maxBytes);
    throw err;
  }
  return out.length > maxBytes ? tooLarge(maxBytes) : out;
}

function tooLarge(maxBytes: number): never {
  throw new DecompressedTooLargeError(maxBytes);
}

/** seek-bzip writes one byte at a time to the sink it is given: a growing buffer that refuses byte maxBytes + 1. */
function bzip2Decompress(body: Buffer, maxBytes: number): Buffer {
  let out = Buffer.allocUnsafe(Math.min(maxBytes, 64 * 1024));
  let length = 0;
  bzip2.decode(body, {
    writeByte(byte: number) {
      if (length === out.length) {
        if (length >= maxBytes) tooLarge(maxBytes);
        const bigger = Buffer.allocUnsafe(Math.min(maxBytes, out.length * 2));
        out.copy(bigger, 0, 0, length);
        out = bigger;
      }
      out[length++] = byte;
    },
  });
  return out.subarray(0, length);
}

/**
 * fzstd's one-shot `decompress` allocates the size a frame header declares before decoding
 * anything (up to 2 GiB), so its streaming decoder is used instead, after a walk over the frame
 * and block headers that refuses a frame declaring more content than `maxBytes`, or a window (which
 * fzstd allocates) larger than both `maxBytes` and the 8 MiB every zstd decoder must support
 * (RFC 8878 §3.1.1.1.2). Decoded blocks (at most 128 KiB each) are counted as they come.
 */
function zstdDecompress(body: Buffer, maxBytes: number): Buffer {
  checkZstdFrames(body, maxBytes);
  const chunks: Uint8Array[] = [];
  let length = 0;
  const stream = new ZstdStream((chunk) => {
    length += chunk.length;
    if (length > maxBytes) tooLarge(maxBytes);
    if (chunk.length > 0) chunks.push(chunk.slice());
  });
  stream.push(body, true);
  return Buffer.concat(chunks, length);
}

const ZSTD_MAGIC = 0xfd2fb528;
const ZSTD_WINDOW_FLOOR = 8 * 1024 * 1024;

function checkZstdFrames(data: Buffer, maxBytes: number): void {
  const windowCap = Math.max(maxBytes, ZSTD_WINDOW_FLOOR);
  let pos = 0;
  // Anything this walk cannot follow is left to fzstd, which reports it as corrupt.
  while (pos + 4 <= data.length) {
    const magic = data.readUInt32LE(pos);
    if ((magic & 0xfffffff0) === 0x184d2a50) {
      if (pos + 8 > data.length) return;
      pos += 8 + data.readUInt32LE(pos + 4); // skippable frame
      continue;
    }
    if (magic !== ZSTD_MAGIC || pos + 5 > data.length) return;
    const descriptor = data[pos + 4];
    const singleSegment = (descriptor >> 5) & 1;
    const checksum = (descriptor >> 2) & 1;
    const sizeFlag = descriptor >> 6;
    let p = pos + 5;
    let window = 0;
    if (!singleSegment) {
      if (p >= data.length) return;
      const exponent = 10 + (data[p] >> 3);
      window = 2 ** exponent + (2 ** exponent / 8) * (data[p] & 7);
      p++;
    }
    p += [0, 1, 2, 4][descriptor & 3]; // dictionary id
    const sizeBytes = sizeFlag === 0 ? singleSegment : 1 << sizeFlag;
    if (sizeBytes > 0) {
      if (p + sizeBytes > data.length) return;
      let size = 0;
      for (let i = sizeBytes - 1; i >= 0; i--) size = size * 256 + data[p + i];
      if (sizeBytes === 2) size += 256;
      if (size > maxBytes) tooLarge(maxBytes);
      if (singleSegment) window = size;
      p += sizeBytes;
    }
    if (window > windowCap) {
      throw new RangeError(`zstd frame declares a ${window}-byte window, more than the ${windowCap} bytes this decoder allocates`);
    }
    for (;;) {
      if (p + 3 > data.length) return;
      const block = data[p] | (data[p + 1] << 8) | (data[p + 2] << 16);
      const type = (block >> 1) & 3;
      p += 3 + (type === 1 ? 1 : block >>> 3);
      if (block & 1) break;
    }
    pos = p + checksum * 4;
  }
}

/**
 * xz-decompress yields the output in small chunks as it is read; reading stops (and the decoder
 * is released) once the total passes `maxBytes`. The library caps the LZMA2 dictionary it allocates.
 */
async function xzDecompress(body: Buffer, maxBytes: number): Promise<Buffer> {
  const reader = new XzReadableStream(new Blob([body]).stream()).getReader();
  const chunks: Uint8Array[] = [];
  let length = 0;
  let finished = false;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        finished = true;
        break;
      }
      length += value.length;
      if (length > maxBytes) tooLarge(maxBytes);
      chunks.push(value);
    }
  } finally {
    // Cancelling frees the decoder's shared context for the next message.
    if (!finished) await reader.cancel().catch(() => undefined);
  }
  return Buffer.concat(chunks, length);
}
