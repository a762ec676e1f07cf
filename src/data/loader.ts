/**
 * Training loader over encoded parquet shards: per-epoch shard order and windowed shuffle are both
 * derived from the seed, so the loader's whole state is a small position. Saving `position()` after
 * batch k and calling `restore()` on a fresh loader yields exactly batches k+1, k+2… of the
 * uninterrupted run.
 *
 * Shuffle: rows are read in (shuffled) shard order in windows of `shuffleWindow` rows; each window is
 * permuted with the generator whose state the position records. Batches may span windows and epochs.
 */
import { join } from 'node:path';
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } from 'hyparquet';
import type { AsyncBuffer, FileMetaData } from 'hyparquet';
import { EncodedDatasetError } from './errors.js';
import { readEncodedManifest } from './encoded.js';
import type { EncodedManifest, EncodedRow } from './encoded.js';
import { toInt32Array } from './sources/parquet.js';
import { SeededRng, hashSeed } from './rng.js';

/** Exact place in the stream, JSON-serialisable, saved with checkpoints. */
export interface LoaderPosition {
  epoch: number;
  /** Index into this epoch's (shuffled) shard order where the current shuffle window starts. */
  shard: number;
  /** Row within that shard where the window starts. */
  offset: number;
  /** Generator state at the window start (permutes the window). */
  rng: number;
  /** Rows of the window already handed out. */
  index: number;
}

export interface LoaderOptions<T> {
  batchSize: number;
  seed: number;
  /** Rows permuted together; 0 or 1 disables shuffling (rows and shards in order). */
  shuffleWindow?: number;
  /** Stop after this many epochs (default: never). */
  epochs?: number;
  /** With finite epochs: drop the last incomplete batch. */
  dropLast?: boolean;
  /** This host's part: shard i goes to host i % count. */
  shardByHost?: { index: number; count: number };
  /** Lazy per-batch transform (e.g. tokenisation); called only for batches that are taken. */
  transform?: (rows: EncodedRow[]) => T | Promise<T>;
}

interface Window {
  rows: EncodedRow[];
  /** Where the next window starts. */
  endShard: number;
  endOffset: number;
  rngAfter: number;
}

export class EncodedLoader<T = EncodedRow[]> {
  private pos: LoaderPosition;
  private window: Window | undefined;
  private readonly files = new Map<string, Promise<{ buffer: AsyncBuffer; metadata: FileMetaData }>>();
  private finished = false;
  /** The last decoded row group: consecutive windows usually fall in the same one. */
  private groupCache: { path: string; start: number; rows: EncodedRow[] } | undefined;

  private constructor(
    readonly dir: string,
    readonly manifest: EncodedManifest,
    /** Manifest shard indices owned by this host. */
    readonly hostShards: number[],
    private readonly opts: LoaderOptions<T>,
  ) {
    this.pos = this.epochStart(0);
  }

  /** Opens the encoded dataset in `dir` (reads and checks `dataset.json`). */
  static async open<T = EncodedRow[]>(dir: string, opts: LoaderOptions<T>): Promise<EncodedLoader<T>> {
    if (!(opts.batchSize > 0)) throw new RangeError(`loader batchSize must be positive (got ${opts.batchSize})`);
    const manifest = await readEncodedManifest(dir);
    const { index, count } = opts.shardByHost ?? { index: 0, count: 1 };
    if (!(count >= 1) || index < 0 || index >= count) throw new RangeError(`shard_by_host: index ${index} is outside 0..${count - 1}`);
    const hostShards = manifest.shards.map((_, i) => i).filter((i) => i % count === index && (manifest.shards[i]?.rows ?? 0) > 0);
    if (hostShards.length === 0) {
      throw new EncodedDatasetError(join(dir, 'dataset.json'), `${manifest.shards.length} shard(s) leave host ${index} of ${count} with no data; write at least ${count} shards (smaller rows_per_shard)`);
    }
    return new EncodedLoader(dir, manifest, hostShards, opts);
  }

  /** Rows this host sees per epoch. */
  get rowsPerEpoch(): number {
    return this.hostShards.reduce((s, i) => s + (this.manifest.shards[i]?.rows ?? 0), 0);
  }

  /** Position after the last batch returned (where a resumed run continues). */
  position(): LoaderPosition {
    return { ...this.pos };
  }

  /** Continues from a saved position; the next batch is the one after the batch it was saved at. */
  restore(position: LoaderPosition): void {
    for (const k of ['epoch', 'shard', 'offset', 'rng', 'index'] as const) {
      if (!Number.isInteger(position[k]) || position[k] < 0) throw new RangeError(`loader position: "${k}" must be a non-negative integer (got ${String(position[k])})`);
    }
    if (position.shard > this.hostShards.length) throw new RangeError(`loader position: shard ${position.shard} is beyond this host's ${this.hostShards.length} shards (different dataset or host count?)`);
    this.pos = { ...position };
    this.window = undefined;
    this.finished = false;
  }

  /** The next batch, or undefined after the last epoch. */
  async next(): Promise<T | undefined> {
    if (this.finished) return undefined;
    const rows: EncodedRow[] = [];
    let pos = { ...this.pos };
    let window = this.window;
    while (rows.length < this.opts.batchSize) {
      if (!window) window = await this.readWindow(pos);
      if (pos.index < window.rows.length) {
        const take = Math.min(this.opts.batchSize - rows.length, window.rows.length - pos.index);
        rows.push(...window.rows.slice(pos.index, pos.index + take));
        pos.index += take;
        continue;
      }
      // Window used up: the next one starts where it ended, or the next epoch begins.
      if (window.endShard >= this.shardOrder(pos.epoch).length) {
        const epoch = pos.epoch + 1;
        if (this.opts.epochs !== undefined && epoch >= this.opts.epochs) {
          this.finished = true;
          break;
        }
        pos = this.epochStart(epoch);
      } else {
        pos = { epoch: pos.epoch, shard: window.endShard, offset: window.endOffset, rng: window.rngAfter, index: 0 };
      }
      window = undefined;
    }
    if (rows.length === 0 || (this.finished && this.opts.dropLast && rows.length < this.opts.batchSize)) {
      this.finished = true;
      return undefined;
    }
    this.pos = pos;
    this.window = window;
    const transform = this.opts.transform;
    return transform ? await transform(rows) : (rows as unknown as T);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T, void, undefined> {
    for (;;) {
      const batch = await this.next();
      if (batch === undefined) return;
      yield batch;
    }
  }

  private epochStart(epoch: number): LoaderPosition {
    return { epoch, shard: 0, offset: 0, rng: new SeededRng(hashSeed(this.opts.seed, epoch, 2)).state(), index: 0 };
  }

  private shuffles(): boolean {
    return (this.opts.shuffleWindow ?? 0) > 1;
  }

  /** Manifest shard indices in the order this epoch reads them. */
  private shardOrder(epoch: number): number[] {
    const order = [...this.hostShards];
    return this.shuffles() ? new SeededRng(hashSeed(this.opts.seed, epoch, 1)).shuffle(order) : order;
  }

  private async readWindow(pos: LoaderPosition): Promise<Window> {
    const order = this.shardOrder(pos.epoch);
    const size = this.shuffles() ? (this.opts.shuffleWindow as number) : this.opts.batchSize;
    const rows: EncodedRow[] = [];
    let shard = pos.shard;
    let offset = pos.offset;
    while (rows.length < size && shard < order.length) {
      const info = this.manifest.shards[order[shard] as number];
      if (!info) break;
      const end = Math.min(info.rows, offset + (size - rows.length));
      if (end > offset) rows.push(...(await this.readRows(info.file, offset, end)));
      offset = end;
      if (offset >= info.rows) {
        shard++;
        offset = 0;
      }
    }
    const rng = SeededRng.fromState(pos.rng);
    if (this.shuffles()) rng.shuffle(rows);
    return { rows, endShard: shard, endOffset: offset, rngAfter: rng.state() };
  }

  /** Rows [start, end) of a shard, decoded one parquet row group at a time; the last group is kept for the next window. */
  private async readRows(file: string, start: number, end: number): Promise<EncodedRow[]> {
    const path = join(this.dir, file);
    let opened = this.files.get(path);
    if (!opened) {
      opened = (async () => {
        const buffer = await asyncBufferFromFile(path);
        return { buffer, metadata: await parquetMetadataAsync(buffer) };
      })();
      this.files.set(path, opened);
    }
    let handle: { buffer: AsyncBuffer; metadata: FileMetaData };
    try {
      handle = await opened;
    } catch (err) {
      this.files.delete(path);
      throw new EncodedDatasetError(path, `cannot open the shard (${(err as Error).message})`);
    }
    const out: EncodedRow[] = [];
    let groupStart = 0;
    for (const group of handle.metadata.row_groups) {
      const groupEnd = groupStart + Number(group.num_rows);
      if (groupEnd > start && groupStart < end) {
        const rows = await this.readGroup(path, handle, groupStart, groupEnd);
        out.push(...rows.slice(Math.max(0, start - groupStart), Math.min(rows.length, end - groupStart)));
      }
      groupStart = groupEnd;
      if (groupStart >= end) break;
    }
    return out;
  }

  private async readGroup(path: string, handle: { buffer: AsyncBuffer; metadata: FileMetaData }, start: number, end: number): Promise<EncodedRow[]> {
    if (this.groupCache && this.groupCache.path === path && this.groupCache.start === start) return this.groupCache.rows;
    let raw: Record<string, unknown>[];
    try {
      raw = await parquetReadObjects({ file: handle.buffer, metadata: handle.metadata, columns: ['key', 'caption', 'encoding'], rowStart: start, rowEnd: end });
    } catch (err) {
      throw new EncodedDatasetError(path, `cannot read rows ${start}..${end} (${(err as Error).message})`);
    }
    const rows = raw.map((r, i) => {
      const encoding = toInt32Array(r.encoding);
      if (!encoding || encoding.length !== this.manifest.code_count) {
        throw new EncodedDatasetError(path, `row ${start + i}: encoding has ${encoding?.length ?? 0} codes, the manifest says ${this.manifest.code_count}`);
      }
      return { key: String(r.key), caption: String(r.caption ?? ''), encoding };
    });
    this.groupCache = { path, start, rows };
    return rows;
  }
}
