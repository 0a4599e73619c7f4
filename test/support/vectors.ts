import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The captured Celery messages and rows in ../shared/vectors (wire spec §8). */
export const VECTORS_DIR = join(__dirname, '..', '..', '..', 'shared', 'vectors');

export interface CapturedMessage {
  label: string;
  exchange: string;
  routing_key: string;
  properties: Record<string, unknown>;
  headers: Record<string, unknown>;
  body: string;
  props_bytes_hex: string;
}

export interface CaptureFile {
  versions: string[];
  messages: CapturedMessage[];
  declares: [string, Record<string, unknown>][];
}

export function loadVector<T>(name: string): T {
  return JSON.parse(readFileSync(join(VECTORS_DIR, name), 'utf8')) as T;
}

/** Fixed conditions of every capture. */
export const CAPTURE_NOW_MICROS = Date.UTC(2025, 0, 15, 12, 0, 0) * 1000 + 123456;
export const CAPTURE_ORIGIN = 'gen4242@client-host';
export const CAPTURE_REPLY_TO = '0b6c8a7e-3d1f-3c2a-9e4b-7f5d2c1a9e08';
