import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { brotliCompressSync, constants as zlibConstants, deflateSync, gzipSync } from 'node:zlib';
import { InvalidTaskMessageError } from '../../../lib/errors/celery.errors';
import { DecompressedTooLargeError, decompressBody } from '../../../lib/protocol/compression';
import { decodeTaskMessage, decodeTaskMessageAsync, encodeTaskMessage } from '../../../lib/protocol/task-message';

/** Bodies compressed the way kombu compresses them (Python's zlib, bz2 and lzma modules; the zstd tool). */
const fixture = JSON.parse(readFileSync(join(__dirname, '..', '..', 'fixtures', 'compressed-bodies.json'), 'utf8')) as {
  body: string;
  compressed: Record<string, string>;
};
const bodies: [string, Buffer][] = [
  ...Object.entries(fixture.compressed).map(([mime, b64]) => [mime, Buffer.from(b64, 'base64')] as [string, Buffer]),
  ['application/x-brotli', brotliCompressSync(Buffer.from(fixture.body))],
];
const headers = (compression: string) => ({ task: 'tasks.sortWords', id: 'c-1', compression });

describe('compressed task bodies', () => {
  it.each(bodies)('reads %s', async (mime, compressed) => {
    expect((await decompressBody(compressed, mime)).toString()).toBe(fixture.body);
    const task = await decodeTaskMessageAsync({ headers: headers(mime), contentType: 'application/json', body: compressed });
    expect(task.args).toEqual(['storage yay my DB is powerful results Astra', false]);
  });

  it('reads zlib synchronously in decodeTaskMessage too', () => {
    const task = decodeTaskMessage({ headers: headers('application/x-gzip'), contentType: 'application/json', body: Buffer.from(fixture.compressed['application/x-gzip'], 'base64') });
    expect(task.id).toBe('c-1');
  });

  it('rejects an unknown compression with an error naming it and the task id', async () => {
    const error = await decodeTaskMessageAsync({ headers: headers('application/x-snappy'), contentType: 'application/json', body: Buffer.from('x') }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidTaskMessageError);
    expect((error as InvalidTaskMessageError).taskId).toBe('c-1');
    expect((error as Error).message).toContain('unsupported compression "application/x-snappy"');
  });

  it.each(bodies)('rejects a corrupt %s body with an error naming the compression', async (mime) => {
    const error = await decodeTaskMessageAsync({ headers: headers(mime), contentType: 'application/json', body: Buffer.from('definitely not compressed') }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidTaskMessageError);
    expect((error as Error).message).toContain(`does not decompress as ${mime}`);
  });

  it.each(['zlib', 'brotli'])('writes %s bodies that read back, with the compression header after Celery\'s', async (name) => {
    const m = encodeTaskMessage({ task: 't', id: 'i', args: ['x'], compression: name }, { nowMicros: 0, origin: 'o' });
    expect(Object.keys(m.headers).pop()).toBe('compression');
    const task = await decodeTaskMessageAsync({ headers: m.headers, contentType: 'application/json', body: m.body });
    expect(task.args).toEqual(['x']);
  });
});

/**
 * 10 MiB of zeros (10485760 bytes) compressed by the tools kombu's codecs match: Python's bz2 and
 * lzma modules (`bz2.compress(data, 9)`, `lzma.compress(data)`) and the zstd 1.5.4 CLI (`zstd -19`,
 * with and without `--no-content-size`). Node has no bzip2 / xz / zstd encoder, hence fixtures.
 */
const TEN_MIB = 10 * 1024 * 1024;
const ZEROS_BZIP2 =
  'QlpoOTFBWSZTWTNUU3kAUFBAIMAAAAQACCAAMMwFKaYEgTYgkCeLuSKcKEgZqim8gA==';
const ZEROS_XZ =
  '/Td6WFoAAATm1rRGAgAhARYAAAB0L+Wj//8RAWxdAABv/f//o7f/Rz5IFXI5YVG4kijmo4YH+e7kHoLTL8U6PAFLsX7JiopNL6MN' +
  '2X+m44wjEVPgWRjFdYrid/i2lH8MasDedElk4ulcU7IE2PdEDKtfDW1G6eXDdoi3llestk3haR1v+0uIEGxCy4g/XACP0E6vJiiU' +
  'cR89jyThcJ6nI1/sKMuF0ZWYin4qkfIndfcZwAaYTZj92K/VkA/EJVP49ZE2MQWlsO5vwXBNRwzRkRGqrWAdus6xJxhcWYbpZlJY' +
  'vul2rFnk5VsFCPnH2q38+1IrdM0eWyBC+d1TPfgpZAk7gMsqbN+1O/DEvS5fqg8+S2ZCkBMO/xCT+HF4WfgLzf+VKEYPqfx83vua' +
  'MC5WwI+F84OBwGXEJVP49ZE2MQWlsO5vwXBNRwzRkRGqrWAdus6xJxhcWYbpZlJYvul2rFnk5VsFCPnH2q38+1IrdM0eWyBC+d1T' +
  'PfgpZAk7gMsqbN+1O/DEvEgn5lif/xABKwDsc1On/b6ufDEan7eNMW5wnqcjX+woy4XRlZiKfiqR8id19xnABphNmP3Yr9WQD8Ql' +
  'U/j1kTYxBaWw7m/BcE1HDNGREaqtYB26zrEnGFxZhulmUli+6XasWeTlWwUI+cfarfz7Uit0zR5bIEL53VM9+ClkCTuAyyps37U7' +
  '8MS9Ll+qDz5LZkKQEw7/EJP4cXhZ+AvN/5UoRg+p/Hze+5owLlbAj4Xzg4HAZcQlU/j1kTYxBaWw7m/BcE1HDNGREaqtYB26zrEn' +
  'GFxZhulmUli+6XasWeTlWwUI+cfarfz7Uit0zR5bIEL53VM9+ClkCTuAyyps37U78MS9Ll+qDz5LZkKQEw7/EJP4cXhZ+AvN/5Uo' +
  'Rg+p/Hze+5owLlbAj4Xzg4HAZcQlUQ8/sp//EAErAOxzU6f9vq58MRqft40xbnCepyNf7CjLhdGVmIp+KpHyJ3X3GcAGmE2Y/div' +
  '1ZAPxCVT+PWRNjEFpbDub8FwTUcM0ZERqq1gHbrOsScYXFmG6WZSWL7pdqxZ5OVbBQj5x9qt/PtSK3TNHlsgQvndUz34KWQJO4DL' +
  'KmzftTvwxL0uX6oPPktmQpATDv8Qk/hxeFn4C83/lShGD6n8fN77mjAuVsCPhfODgcBlxCVT+PWRNjEFpbDub8FwTUcM0ZERqq1g' +
  'HbrOsScYXFmG6WZSWL7pdqxZ5OVbBQj5x9qt/PtSK3TNHlsgQvndUz34KWQJO4DLKmzftTvwxL0uX6oPPktmQpATDv8Qk/hxeFn4' +
  'C83/lShGD6n8fN77mjAuVsCPhfODgcBlxCVRDz+yn/8QASsA7HNTp/2+rnwxGp+3jTFucJ6nI1/sKMuF0ZWYin4qkfIndfcZwAaY' +
  'TZj92K/VkA/EJVP49ZE2MQWlsO5vwXBNRwzRkRGqrWAdus6xJxhcWYbpZlJYvul2rFnk5VsFCPnH2q38+1IrdM0eWyBC+d1TPfgp' +
  'ZAk7gMsqbN+1O/DEvS5fqg8+S2ZCkBMO/xCT+HF4WfgLzf+VKEYPqfx83vuaMC5WwI+F84OBwGXEJVP49ZE2MQWlsO5vwXBNRwzR' +
  'kRGqrWAdus6xJxhcWYbpZlJYvul2rFnk5VsFCPnH2q38+1IrdM0eWyBC+d1TPfgpZAk7gMsqbN+1O/DEvS5fqg8+S2ZCkBMO/xCT' +
  '+HF4WfgLzf+VKEYPqfx83vuaMC5WwI+F84OBwGXEJVEPP7Kf/xABKwDsc1On/b6ufDEan7eNMW5wnqcjX+woy4XRlZiKfiqR8id1' +
  '9xnABphNmP3Yr9WQD8QlU/j1kTYxBaWw7m/BcE1HDNGREaqtYB26zrEnGFxZhulmUli+6XasWeTlWwUI+cfarfz7Uit0zR5bIEL5' +
  '3VM9+ClkCTuAyyps37U78MS9Ll+qDz5LZkKQEw7/EJP4cXhZ+AvN/5UoRg+p/Hze+5owLlbAj4Xzg4HAZcQlU/j1kTYxBaWw7m/B' +
  'cE1HDNGREaqtYB26zrEnGFxZhulmUli+6XasWeTlWwUI+cfarfz7Uit0zR5bIEL53VM9+ClkCTuAyyps37U78MS9Ll+qDz5LZkKQ' +
  'Ew7/EJP4cXhZ+AvN/5UoRg+p/Hze+5owLlbAj4Xzg4HAZcQlUQ8/soAEqQAFAJC5KjAAAAB26TXF3OcsxgAB1wyAgIAFNNQbTrHE' +
  'Z/sCAAAAAARZWg==';
const ZEROS_ZSTD =
  'KLUv/YRoAACgAEwAAAgAAQD8/zkQAgIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAAC' +
  'ABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAA' +
  'AgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQ' +
  'AAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIA' +
  'EAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAMAEABwmzhR';
const ZEROS_ZSTD_NO_CONTENT_SIZE =
  'KLUv/QRoTAAACAABAPz/ORACAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAAC' +
  'ABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAA' +
  'AgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQ' +
  'AAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAgAQAAIA' +
  'EAACABAAAgAQAAIAEAACABAAAgAQAAIAEAACABAAAwAQAHCbOFE=';

const zeros = Buffer.alloc(TEN_MIB);
const brotliFast = (b: Buffer) => brotliCompressSync(b, { params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 4 } });

/** Every codec's 10 MiB-of-zeros body: [label, compression header, body]. */
const bombs: [string, string, Buffer][] = [
  ['zlib', 'application/x-gzip', deflateSync(zeros, { level: 9 })],
  ['brotli', 'application/x-brotli', brotliFast(zeros)],
  ['bzip2', 'application/x-bz2', Buffer.from(ZEROS_BZIP2, 'base64')],
  ['zstd', 'application/zstd', Buffer.from(ZEROS_ZSTD, 'base64')],
  ['zstd without a content size', 'application/zstd', Buffer.from(ZEROS_ZSTD_NO_CONTENT_SIZE, 'base64')],
  ['lzma/xz', 'application/x-lzma', Buffer.from(ZEROS_XZ, 'base64')],
];

async function rejectionOf(run: () => unknown): Promise<unknown> {
  try {
    await run();
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

describe('decompression bombs: every codec stops at maxBytes', () => {
  it.each(bombs)('%s: the fixture is a small body that inflates to 10 MiB of zeros', async (_label, mime, body) => {
    expect(body.length).toBeLessThan(11 * 1024);
    const out = await decompressBody(body, mime);
    expect(out.length).toBe(TEN_MIB);
    expect(out.every((b) => b === 0)).toBe(true);
  });

  it.each(bombs)('%s: decompressBody refuses it with maxBytes 1000, naming the limit', async (_label, mime, body) => {
    const err = await rejectionOf(() => decompressBody(body, mime, 1000));
    expect(err).toBeInstanceOf(DecompressedTooLargeError);
    expect((err as DecompressedTooLargeError).maxBytes).toBe(1000);
    expect((err as Error).message).toBe('decompressed body exceeds 1000 bytes');
  });

  it.each(bombs)('%s: accepts exactly maxBytes of output and refuses one byte less', async (_label, mime, body) => {
    expect((await decompressBody(body, mime, TEN_MIB)).length).toBe(TEN_MIB);
    expect(await rejectionOf(() => decompressBody(body, mime, TEN_MIB - 1))).toBeInstanceOf(DecompressedTooLargeError);
  });

  it.each(bombs)('%s: decodeTaskMessageAsync rejects the message with InvalidTaskMessageError naming worker.maxMessageBytes', async (_label, mime, body) => {
    const err = await rejectionOf(() =>
      decodeTaskMessageAsync({ headers: headers(mime), contentType: 'application/json', body }, { accept: ['application/json'], maxBytes: 16384 }),
    );
    expect(err).toBeInstanceOf(InvalidTaskMessageError);
    expect((err as InvalidTaskMessageError).taskId).toBe('c-1');
    expect((err as InvalidTaskMessageError).reason).toBe('decompressed body exceeds 16384 bytes (worker.maxMessageBytes)');
  });

  it.each(bombs.filter(([, mime]) => mime !== 'application/x-lzma'))(
    '%s: decodeTaskMessage (synchronous) rejects it the same way',
    (_label, mime, body) => {
      const run = () => decodeTaskMessage({ headers: headers(mime), contentType: 'application/json', body }, { accept: ['application/json'], maxBytes: 16384 });
      expect(run).toThrow(InvalidTaskMessageError);
      expect(run).toThrow('Invalid task message c-1: decompressed body exceeds 16384 bytes (worker.maxMessageBytes)');
    },
  );

  it('the kombu alias "gzip" is the same zlib codec, bounded the same way', () => {
    const m = encodeTaskMessage({ task: 't', id: 'g-1', args: ['x'.repeat(100_000)], compression: 'gzip' }, { nowMicros: 0, origin: 'o' });
    expect(m.headers.compression).toBe('application/x-gzip');
    const run = () => decodeTaskMessage({ headers: m.headers, contentType: 'application/json', body: m.body }, { accept: ['application/json'], maxBytes: 50_000 });
    expect(run).toThrow('decompressed body exceeds 50000 bytes (worker.maxMessageBytes)');
  });

  it('a real gzip (RFC 1952) bomb labelled application/x-gzip is refused as corrupt, never inflated', () => {
    const err = (() => {
      try {
        return decompressBody(gzipSync(zeros), 'application/x-gzip', 1000);
      } catch (e) {
        return e;
      }
    })();
    expect(err).not.toBeInstanceOf(DecompressedTooLargeError);
    expect((err as Error).message).toContain('does not decompress as application/x-gzip');
  });

  it('keeps compressed bodies under the limit readable with a limit set', async () => {
    for (const [mime, compressed] of bodies) {
      const out = await decompressBody(compressed, mime, fixture.body.length);
      expect(out.toString()).toBe(fixture.body);
    }
  });

  it('zstd: refuses a frame whose header declares a 1.9 GiB window before allocating it', () => {
    // magic, frame descriptor 0 (no content size, not single segment), window descriptor 0xa7
    // (2^30 + 7 * 2^27 = 2013265920 bytes), then one empty last raw block.
    const frame = Buffer.from('28b52ffd' + '00' + 'a7' + '010000', 'hex');
    expect(() => decompressBody(frame, 'application/zstd', 1000)).toThrow(
      'body does not decompress as application/zstd (zstd frame declares a 2013265920-byte window, more than the 8388608 bytes this decoder allocates)',
    );
  });

  it('zstd: refuses a frame declaring a content size above maxBytes, whatever it really holds', () => {
    // single segment, 4-byte content size 0x40000000 (1 GiB), one empty last raw block
    const frame = Buffer.from('28b52ffd' + 'a0' + '00000040' + '010000', 'hex');
    expect(() => decompressBody(frame, 'application/zstd', TEN_MIB)).toThrow(DecompressedTooLargeError);
  });

  it('zstd: walks past skippable frames and reads several frames, counting them all against the limit', () => {
    const one = Buffer.from(ZEROS_ZSTD_NO_CONTENT_SIZE, 'base64');
    const skippable = Buffer.from('502a4d18' + '03000000' + 'abcdef', 'hex');
    const twice = Buffer.concat([skippable, one, one]);
    expect((decompressBody(twice, 'application/zstd', 2 * TEN_MIB) as Buffer).length).toBe(2 * TEN_MIB);
    expect(() => decompressBody(twice, 'application/zstd', 2 * TEN_MIB - 1)).toThrow(DecompressedTooLargeError);
  });

  it('lzma/xz: a refused bomb releases the decoder, so the next xz message still decodes', async () => {
    const bomb = Buffer.from(ZEROS_XZ, 'base64');
    for (let i = 0; i < 3; i++) {
      await expect(decompressBody(bomb, 'application/x-lzma', 1000)).rejects.toBeInstanceOf(DecompressedTooLargeError);
    }
    const good = Buffer.from(fixture.compressed['application/x-lzma'], 'base64');
    const results = await Promise.all([decompressBody(good, 'application/x-lzma', 1000), Promise.resolve(decompressBody(bomb, 'application/x-lzma', 1000)).catch((e: unknown) => e)]);
    expect((results[0] as Buffer).toString()).toBe(fixture.body);
    expect(results[1]).toBeInstanceOf(DecompressedTooLargeError);
    expect((await decompressBody(good, 'application/x-lzma', 1000)).toString()).toBe(fixture.body);
  });
});
