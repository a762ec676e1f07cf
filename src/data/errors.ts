/** Typed errors of the data pipeline; each message names the file (and entry/field) and what was expected. */

export class DataError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A source path, pattern or column layout that cannot be read at all. */
export class DataSourceError extends DataError {
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
  }
}

/** A tar entry whose name is absolute or climbs out with `..`; never extracted, counted as skipped. */
export class UnsafeTarEntryError extends DataError {
  constructor(
    readonly shard: string,
    readonly entry: string,
  ) {
    super(`${shard}: tar entry "${entry}" has an absolute path or "..": refused (rebuild the shard with relative names)`);
  }
}

/** A tar shard that ends in the middle of an entry; items before the cut were kept. */
export class TruncatedShardError extends DataError {
  constructor(
    readonly shard: string,
    readonly itemsKept: number,
    cause: string,
  ) {
    super(`${shard}: truncated or corrupt tar (${cause}) after ${itemsKept} complete item(s); re-download or re-create this shard`);
  }
}

/** Every item of a source was skipped: almost certainly a wrong path, format or column name. */
export class NoUsableItemsError extends DataError {
  constructor(
    readonly source: string,
    readonly reasons: Record<string, number>,
  ) {
    super(
      `${source}: no usable items (skipped: ${
        Object.entries(reasons)
          .map(([k, v]) => `${k}=${v}`)
          .join(', ') || 'source was empty'
      }); check the path, file format and caption/image columns`,
    );
  }
}

/** Encoded shards or their manifest are inconsistent (missing shard, checksum, column layout). */
export class EncodedDatasetError extends DataError {
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
  }
}
