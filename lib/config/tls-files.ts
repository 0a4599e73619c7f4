import { readFileSync } from 'node:fs';
import { CeleryConnectionError } from '../errors/celery.errors';
import type { ResolvedTls } from './resolved-config';

/** Node TLS options from PEM file paths, read when connecting. */
export interface TlsMaterial {
  ca?: Buffer[];
  cert?: Buffer;
  key?: Buffer;
  rejectUnauthorized: boolean;
  servername?: string;
}

export function readTlsFiles(tls: ResolvedTls, what: string): TlsMaterial {
  const read = (path: string, role: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new CeleryConnectionError(`Cannot read the ${role} file for ${what} TLS at ${path}: ${(err as Error).message}`);
    }
  };
  const material: TlsMaterial = { rejectUnauthorized: tls.rejectUnauthorized };
  if (tls.ca) material.ca = [read(tls.ca, 'CA certificate')];
  if (tls.cert) material.cert = read(tls.cert, 'client certificate');
  if (tls.key) material.key = read(tls.key, 'client key');
  if (tls.servername) material.servername = tls.servername;
  return material;
}
