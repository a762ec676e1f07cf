/**
 * Encoded datasets in dalle-mini's layout: parquet shards with `key` (string), `caption` (string) and
 * `encoding` (list<int32>, the VQGAN codes), plus a `dataset.json` manifest with row counts and sha256 of
 * every shard. Shards and manifest are written to hidden temp names and renamed, so a crash never leaves
 * a partial shard visible.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parquetWriteFile } from 'hyparquet-writer';
import type { SchemaElement } from 'hyparquet-writer';
import { EncodedDatasetError } from './errors.js';

export interface EncodedRow {
  key: string;
  caption: string;
  encoding: Int32Array;
}

export interface EncodedShardInfo {
  /** File name relative to the dataset folder. */
  file: string;
  rows: number;
  bytes: number;
  sha256: string;
}

export interface EncodedManifest {
  format: 'minidalle-encoded/1';
  count: number;
  /** Codes per row (256 for a 16×16 VQGAN f16 grid). */
  code_count: number;
  shards: EncodedShardInfo[];
  /** Who wrote it: plugin, VQGAN checkpoint, source, versions… (JSON, caller-defined). */
  producer: Record<string, unknown>;
}

export const MANIFEST_NAME = 'dataset.json';

const SCHEMA: SchemaElement[] = [
  { name: 'root', num_children: 3 },
  { name: 'key', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'REQUIRED' },
  { name: 'caption', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'REQUIRED' },
  { name: 'encoding', repetition_type: 'REQUIRED', converted_type: 'LIST', num_children: 1 },
  { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
  { name: 'element', type: 'INT32', repetition_type: 'REQUIRED' },
];

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export interface EncodedWriterOptions {
  dir: string;
  rowsPerShard: number;
  codeCount: number;
  producer?: Record<string, unknown>;
  /** Rows per parquet row group: the loader's read granularity. */
  rowGroupSize?: number;
  /** Shards already written by an earlier, interrupted writer (same dir): new shards continue after them. */
  existingShards?: EncodedShardInfo[];
}

export class EncodedShardWriter {
  private rows: EncodedRow[] = [];
  private readonly shards: EncodedShardInfo[] = [];
  private count = 0;

  constructor(private readonly opts: EncodedWriterOptions) {
    if (!(opts.rowsPerShard > 0) || !(opts.codeCount > 0)) throw new RangeError('EncodedShardWriter: rowsPerShard and codeCount must be positive');
    for (const shard of opts.existingShards ?? []) {
      this.shards.push(shard);
      this.count += shard.rows;
    }
  }

  /** Shards written so far (complete and visible), in order. */
  get finishedShards(): readonly EncodedShardInfo[] {
    return this.shards;
  }

  /** Buffers one row (at most one shard is held in memory) and flushes a full shard. */
  async add(row: { key: string; caption: string; encoding: ArrayLike<number> }): Promise<void> {
    if (row.encoding.length !== this.opts.codeCount) {
      throw new EncodedDatasetError(join(this.opts.dir, this.shardName(this.shards.length)), `row "${row.key}": encoding has ${row.encoding.length} codes, expected ${this.opts.codeCount}`);
    }
    this.rows.push({ key: row.key, caption: row.caption, encoding: Int32Array.from(row.encoding) });
    if (this.rows.length >= this.opts.rowsPerShard) await this.flush();
  }

  /** Writes the last shard and the manifest; returns the manifest. */
  async finish(): Promise<EncodedManifest> {
    if (this.rows.length > 0) await this.flush();
    const manifest: EncodedManifest = { format: 'minidalle-encoded/1', count: this.count, code_count: this.opts.codeCount, shards: [...this.shards], producer: this.opts.producer ?? {} };
    await mkdir(this.opts.dir, { recursive: true });
    const tmp = join(this.opts.dir, `.${MANIFEST_NAME}.tmp`);
    await writeFile(tmp, JSON.stringify(manifest, null, 2) + '\n');
    await rename(tmp, join(this.opts.dir, MANIFEST_NAME));
    return manifest;
  }

  private shardName(i: number): string {
    return `shard-${String(i).padStart(5, '0')}.parquet`;
  }

  private async flush(): Promise<void> {
    await mkdir(this.opts.dir, { recursive: true });
    const name = this.shardName(this.shards.length);
    const tmp = join(this.opts.dir, `.${name}.tmp`);
    const rows = this.rows;
    this.rows = [];
    try {
      parquetWriteFile({
        filename: tmp,
        columnData: [
          { name: 'key', data: rows.map((r) => r.key) },
          { name: 'caption', data: rows.map((r) => r.caption) },
          { name: 'encoding', data: rows.map((r) => Array.from(r.encoding)) },
        ],
        schema: SCHEMA,
        rowGroupSize: this.opts.rowGroupSize ?? 1024,
        createdBy: 'minidalle',
      });
    } catch (err) {
      await rm(tmp, { force: true });
      throw new EncodedDatasetError(join(this.opts.dir, name), `cannot write shard (${(err as Error).message})`);
    }
    const [sha256, st] = await Promise.all([sha256File(tmp), stat(tmp)]);
    await rename(tmp, join(this.opts.dir, name));
    this.shards.push({ file: name, rows: rows.length, bytes: st.size, sha256 });
    this.count += rows.length;
  }
}

/** Reads and checks `dataset.json`; `verify` also re-hashes every shard. */
export async function readEncodedManifest(dir: string, options: { verify?: boolean } = {}): Promise<EncodedManifest> {
  const path = join(dir, MANIFEST_NAME);
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new EncodedDatasetError(path, `cannot read the encoded dataset manifest (${(err as Error).message}); was the encode stage finished?`);
  }
  const m = parsed as Partial<EncodedManifest>;
  if (m.format !== 'minidalle-encoded/1' || !Array.isArray(m.shards) || typeof m.count !== 'number' || typeof m.code_count !== 'number') {
    throw new EncodedDatasetError(path, 'not a minidalle encoded dataset manifest (expected format "minidalle-encoded/1" with count, code_count, shards)');
  }
  const sum = m.shards.reduce((s, sh) => s + sh.rows, 0);
  if (sum !== m.count) throw new EncodedDatasetError(path, `shard rows add up to ${sum}, manifest count says ${m.count}`);
  if (options.verify) {
    for (const sh of m.shards) {
      const file = join(dir, sh.file);
      const actual = await sha256File(file).catch((err: Error) => {
        throw new EncodedDatasetError(file, `missing or unreadable shard (${err.message})`);
      });
      if (actual !== sh.sha256) throw new EncodedDatasetError(file, `sha256 ${actual.slice(0, 12)}… does not match the manifest (${sh.sha256.slice(0, 12)}…): the shard is corrupt or was replaced`);
    }
  }
  return m as EncodedManifest;
}
