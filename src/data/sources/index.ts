import { statSync } from 'node:fs';
import { extname } from 'node:path';
import { expandBraces } from '../braces.js';
import { DataSourceError } from '../errors.js';
import { FolderSource } from './folder.js';
import { ParquetSource } from './parquet.js';
import { TableSource } from './table.js';
import type { DataSource } from './types.js';
import { WebdatasetSource } from './webdataset.js';

export type { DataSource, ReadOptions, SourceItem } from './types.js';
export { WebdatasetSource, isUnsafeEntryName, splitEntryName } from './webdataset.js';
export { FolderSource } from './folder.js';
export { TableSource, tableRecords, DEFAULT_TABLE_COLUMNS } from './table.js';
export type { TableColumns, TableRecord } from './table.js';
export { ParquetSource, DEFAULT_PARQUET_COLUMNS } from './parquet.js';
export type { ParquetColumns } from './parquet.js';

/**
 * Picks the source kind from a path or pattern: `*.tar` patterns → webdataset, `*.parquet` → parquet,
 * `.tsv/.csv/.jsonl` → table, a directory → folder.
 */
export function openSource(spec: string): DataSource {
  const first = expandBraces(spec)[0] ?? spec;
  const ext = extname(first).toLowerCase();
  if (ext === '.tar') return new WebdatasetSource(spec);
  if (ext === '.parquet') return new ParquetSource(spec);
  if (ext === '.tsv' || ext === '.csv' || ext === '.jsonl' || ext === '.ndjson') return new TableSource(spec);
  let isDir = false;
  try {
    isDir = statSync(spec).isDirectory();
  } catch {
    // Falls through to the error below, which names what was expected.
  }
  if (isDir) return new FolderSource(spec);
  throw new DataSourceError(spec, 'not a dataset: expected tar shards (x-{00000..00009}.tar), parquet, .tsv/.csv/.jsonl, or an image folder');
}
