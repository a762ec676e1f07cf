import type { SkipCounts } from '../skips.js';

/** One raw sample as a source yields it, before caption handling and image preprocessing. */
export interface SourceItem {
  /** Stable identifier (webdataset key, relative path, row key). */
  key: string;
  /** Encoded image bytes (jpg/png/webp…); empty for pre-encoded rows that carry `encoding` instead. */
  image: Uint8Array;
  /** The plain caption (`.txt` file, `caption` column); '' when there is none. Other fields live in `meta`. */
  caption: string;
  /** Attributes: the webdataset `.json`, other table columns, file paths. */
  meta: Record<string, unknown>;
  /** VQGAN codes of a pre-encoded row. */
  encoding?: Int32Array;
}

export interface ReadOptions {
  /** Where skipped items are counted by reason. */
  skips: SkipCounts;
  signal?: AbortSignal;
  /** Throw on a truncated shard (after yielding the items before it) instead of counting it. */
  strict?: boolean;
  /** Called with a user-facing message for every skip that has one (a logger's warn). */
  onWarning?: (message: string) => void;
}

/** Every source kind has this shape: a description for messages and a stable-order async iteration. */
export interface DataSource {
  readonly kind: 'webdataset' | 'folder' | 'table' | 'parquet';
  /** Path or pattern, used in error messages. */
  readonly description: string;
  items(options: ReadOptions): AsyncGenerator<SourceItem, void, undefined>;
  /**
   * How many items the source holds, when that is cheap to know without reading it (parquet metadata,
   * table lines, folder listing, img2dataset `<shard>_stats.json`); undefined otherwise. For progress/ETA.
   */
  estimateCount(): Promise<number | undefined>;
}

export const IMAGE_EXTENSIONS = ['jpg', 'jpeg', 'png', 'webp'] as const;

export function isImageExtension(ext: string): boolean {
  return (IMAGE_EXTENSIONS as readonly string[]).includes(ext.toLowerCase());
}

export function skip(options: ReadOptions, reason: Parameters<SkipCounts['add']>[0], message: string): void {
  options.skips.add(reason, message);
  options.onWarning?.(message);
}
