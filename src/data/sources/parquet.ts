import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, parquetSchema } from 'hyparquet';
import { expandBraces } from '../braces.js';
import { DataSourceError } from '../errors.js';
import type { DataSource, ReadOptions, SourceItem } from './types.js';
import { skip } from './types.js';

export interface ParquetColumns {
  key: string;
  caption: string;
  /** Binary image bytes, or a Hugging Face `Image` struct `{ bytes, path }`. */
  image: string;
  /** VQGAN codes (list<int>) of a pre-encoded dataset. */
  encoding: string;
}

export const DEFAULT_PARQUET_COLUMNS: ParquetColumns = { key: 'key', caption: 'caption', image: 'image', encoding: 'encoding' };

/** Rows read per hyparquet call: bounds memory while keeping calls few. */
const CHUNK_ROWS = 256;

function toBytes(value: unknown): Uint8Array | undefined {
  if (value instanceof Uint8Array) return value;
  if (value && typeof value === 'object' && 'bytes' in value) return toBytes((value as { bytes: unknown }).bytes);
  return undefined;
}

export function toInt32Array(value: unknown): Int32Array | undefined {
  if (value instanceof Int32Array) return value;
  if (Array.isArray(value) || ArrayBuffer.isView(value)) {
    const arr = Array.from(value as ArrayLike<number | bigint>, (v) => Number(v));
    return Int32Array.from(arr);
  }
  return undefined;
}

/**
 * Parquet shards read in row chunks with hyparquet: pre-encoded rows (`key`, `caption`, `encoding`), or
 * rows with image bytes. Needs at least a caption column and one of image / encoding.
 */
export class ParquetSource implements DataSource {
  readonly kind = 'parquet' as const;
  readonly files: string[];

  constructor(
    readonly description: string,
    readonly columns: ParquetColumns = DEFAULT_PARQUET_COLUMNS,
  ) {
    this.files = expandBraces(description);
  }

  async estimateCount(): Promise<number | undefined> {
    let total = 0;
    for (const file of this.files) {
      try {
        total += Number((await parquetMetadataAsync(await asyncBufferFromFile(file))).num_rows);
      } catch {
        return undefined;
      }
    }
    return total;
  }

  async *items(options: ReadOptions): AsyncGenerator<SourceItem, void, undefined> {
    const c = this.columns;
    for (const file of this.files) {
      let buffer;
      let metadata;
      try {
        buffer = await asyncBufferFromFile(file);
        metadata = await parquetMetadataAsync(buffer);
      } catch (err) {
        skip(options, 'unreadable_file', `${file}: not a readable parquet file (${(err as Error).message})`);
        continue;
      }
      const names = parquetSchema(metadata).children.map((ch) => ch.element.name);
      if (!names.includes(c.caption) || (!names.includes(c.image) && !names.includes(c.encoding))) {
        throw new DataSourceError(file, `expected a "${c.caption}" column and an "${c.image}" or "${c.encoding}" column (has: ${names.join(', ')})`);
      }
      const wanted = [c.key, c.caption, c.image, c.encoding].filter((n) => names.includes(n));
      const rows = Number(metadata.num_rows);
      for (let start = 0; start < rows; start += CHUNK_ROWS) {
        if (options.signal?.aborted) return;
        // utf8: false keeps plain binary (image bytes) as bytes; UTF8-annotated columns still decode to strings.
        const chunk = await parquetReadObjects({ file: buffer, metadata, columns: wanted, utf8: false, rowStart: start, rowEnd: Math.min(rows, start + CHUNK_ROWS) });
        for (let i = 0; i < chunk.length; i++) {
          const row = chunk[i] as Record<string, unknown>;
          const rawKey = row[c.key];
          const key = rawKey === undefined || rawKey === null ? `${file}#${start + i}` : String(rawKey);
          const encoding = toInt32Array(row[c.encoding]);
          const image = toBytes(row[c.image]);
          if (!encoding && !image) {
            skip(options, 'missing_image', `${file}: row ${start + i} (key ${key}) has neither image bytes nor an encoding`);
            continue;
          }
          const caption = row[c.caption];
          const item: SourceItem = { key, image: image ?? new Uint8Array(0), caption: typeof caption === 'string' ? caption : '', meta: { source_file: file, row: start + i } };
          if (encoding) item.encoding = encoding;
          yield item;
        }
      }
    }
  }
}
