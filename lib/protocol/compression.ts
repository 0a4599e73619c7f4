import { brotliCompressSync, brotliDecompressSync, deflateSync, inflateSync } from 'node:zlib';
import { decompress as zstdDecompress } from 'fzstd';
import { XzReadableStream } from 'xz-decompress';

// seek-bzip ships no type declarations.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const bzip2 = require('seek-bzip') as { decode(input: Buffer): Buffer };

/**
 * Message body compression, by the `compression` header kombu writes (wire spec §1.7). Note that
 * kombu's "gzip" is a zlib stream (RFC 1950), not gzip. Reading covers every compressor kombu can
 * register: zlib (Node), brotli (Node), bzip2 (seek-bzip), zstd (fzstd) and lzma/xz (xz-decompress,
 * which is asynchronous). Writing supports zlib and brotli.
 */
interface Codec {
  mime: string;
  decompress(body: Buffer): Buffer | Promise<Buffer>;
  compress?(body: Buffer): Buffer;
}

const CODECS: Codec[] = [
  { mime: 'application/x-gzip', decompress: (b) => inflateSync(b), compress: (b) => deflateSync(b) },
  { mime: 'application/x-brotli', decompress: (b) => brotliDecompressSync(b), compress: (b) => brotliCompressSync(b) },
  { mime: 'application/x-bz2', decompress: (b) => bzip2.decode(b) },
  { mime: 'application/zstd', decompress: (b) => Buffer.from(zstdDecompress(b)) },
  { mime: 'application/x-lzma', decompress: (b) => xzDecompress(b) },
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

/** The decompressed body; throws (or rejects) with a reason naming the compression. */
export function decompressBody(body: Buffer, compression: unknown): Buffer | Promise<Buffer> {
  const codec = CODECS.find((c) => c.mime === compression);
  if (!codec) throw new RangeError(`unsupported compression ${JSON.stringify(compression)}`);
  try {
    const out = codec.decompress(body);
    if (out instanceof Promise) return out.catch((err: unknown) => Promise.reject(failure(compression, err)));
    return out;
  } catch (err) {
    throw failure(compression, err);
  }
}

function failure(compression: unknown, err: unknown): RangeError {
  return new RangeError(`body does not decompress as ${String(compression)} (${err instanceof Error ? err.message : String(err)})`);
}

async function xzDecompress(body: Buffer): Promise<Buffer> {
  const stream = new XzReadableStream(new Blob([body]).stream());
  return Buffer.from(await new Response(stream).arrayBuffer());
}
