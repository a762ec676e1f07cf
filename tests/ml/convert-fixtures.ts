/**
 * Shared by the converter tests: runs tests/fixtures/convert/make_checkpoints.py once per test file with
 * Debian's /usr/bin/python3 (torch + msgpack), and reads its reference files. When that Python lacks torch
 * the tests are skipped, with the reason in their names.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const PYTHON = '/usr/bin/python3';
const SCRIPT = join(import.meta.dirname, '..', 'fixtures', 'convert', 'make_checkpoints.py');

/** Why the torch fixtures cannot be made here, or null when they can. */
export function torchUnavailable(): string | null {
  const r = spawnSync(PYTHON, ['-c', 'import torch, msgpack, numpy'], { encoding: 'utf8' });
  if (r.error) return `${PYTHON} not found`;
  if (r.status !== 0) return `${PYTHON} lacks torch/msgpack/numpy (apt-get install python3-torch python3-msgpack)`;
  return null;
}

/** Writes every fixture into a fresh temp folder and returns it. */
export function makeCheckpoints(): { dir: string; sideEffect: string } {
  const dir = mkdtempSync(join(tmpdir(), 'minidalle-convert-'));
  const r = spawnSync(PYTHON, [SCRIPT, dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`make_checkpoints.py failed (${r.status}):\n${r.stderr}`);
  const info = JSON.parse(r.stdout) as { side_effect: string };
  return { dir, sideEffect: info.side_effect };
}

/** The original tensors' bytes as Python wrote them: name → { bytes, shape, dtype }. */
export function readReference(dir: string, name: string): Map<string, { bytes: Buffer; shape: number[]; dtype: string }> {
  const index = JSON.parse(readFileSync(join(dir, 'ref', `${name}.json`), 'utf8')) as Record<string, { offset: number; nbytes: number; shape: number[]; dtype: string }>;
  const data = readFileSync(join(dir, 'ref', `${name}.bin`));
  return new Map(Object.entries(index).map(([k, v]) => [k, { bytes: data.subarray(v.offset, v.offset + v.nbytes), shape: v.shape, dtype: v.dtype }]));
}

/** Bytes of every tensor of a safetensors file (data as stored), with dtype and shape. */
export function safetensorsBytes(file: string): Map<string, { bytes: Buffer; shape: number[]; dtype: string }> {
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out = new Map<string, { bytes: Buffer; shape: number[]; dtype: string }>();
  for (const [k, v] of Object.entries(header)) {
    if (k === '__metadata__') continue;
    out.set(k, { bytes: buf.subarray(8 + n + v.data_offsets[0], 8 + n + v.data_offsets[1]), shape: v.shape, dtype: v.dtype });
  }
  return out;
}

export interface DecodeReference {
  codes: number[][];
  shape: number[];
  pixels: number[];
}

export function readDecodeReference(dir: string): DecodeReference {
  return JSON.parse(readFileSync(join(dir, 'ref', 'decode.json'), 'utf8')) as DecodeReference;
}
