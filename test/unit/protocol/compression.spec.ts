import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { brotliCompressSync } from 'node:zlib';
import { InvalidTaskMessageError } from '../../../lib/errors/celery.errors';
import { decompressBody } from '../../../lib/protocol/compression';
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
