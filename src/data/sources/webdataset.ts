import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import tar from 'tar-stream';
import { expandBraces } from '../braces.js';
import { DataSourceError, TruncatedShardError, UnsafeTarEntryError } from '../errors.js';
import type { DataSource, ReadOptions, SourceItem } from './types.js';
import { isImageExtension, skip } from './types.js';

/** True for names that could escape an extraction directory (absolute, drive letters, `..` segments). */
export function isUnsafeEntryName(name: string): boolean {
  if (name.startsWith('/') || name.startsWith('\\') || /^[A-Za-z]:/.test(name)) return true;
  return name.split(/[\\/]/).includes('..');
}

/** Webdataset key and extension: `dir/00012.jpg` → (`dir/00012`, `jpg`); the key ends at the basename's first dot. */
export function splitEntryName(name: string): { key: string; ext: string } {
  const slash = name.lastIndexOf('/');
  const dot = name.indexOf('.', slash + 1);
  if (dot < 0) return { key: name, ext: '' };
  return { key: name.slice(0, dot), ext: name.slice(dot + 1).toLowerCase() };
}

interface Group {
  key: string;
  files: Map<string, Buffer>;
}

/**
 * img2dataset webdataset shards (`{00000..00012}.tar`), streamed entry by entry with tar-stream; files
 * sharing a key form one item. Only the current item is held in memory.
 */
export class WebdatasetSource implements DataSource {
  readonly kind = 'webdataset' as const;
  readonly shards: string[];

  constructor(readonly description: string) {
    this.shards = expandBraces(description);
  }

  /** img2dataset writes `<shard>_stats.json` with `successes` beside each shard; without them, unknown. */
  async estimateCount(): Promise<number | undefined> {
    let total = 0;
    for (const shard of this.shards) {
      try {
        const stats = JSON.parse(await readFile(shard.replace(/\.tar$/, '_stats.json'), 'utf8')) as { successes?: unknown };
        if (typeof stats.successes !== 'number') return undefined;
        total += stats.successes;
      } catch {
        return undefined;
      }
    }
    return total;
  }

  async *items(options: ReadOptions): AsyncGenerator<SourceItem, void, undefined> {
    for (const shard of this.shards) {
      if (options.signal?.aborted) return;
      yield* this.readShard(shard, options);
    }
  }

  private async *readShard(shard: string, options: ReadOptions): AsyncGenerator<SourceItem, void, undefined> {
    const extract = tar.extract();
    const input = createReadStream(shard);
    input.on('error', (err) => extract.destroy(err));
    input.pipe(extract);
    let group: Group | undefined;
    let yielded = 0;
    const finish = (g: Group): SourceItem | undefined => {
      let image: Buffer | undefined;
      let imageExt = '';
      for (const [ext, body] of g.files) {
        if (!image && isImageExtension(ext)) {
          image = body;
          imageExt = ext;
        }
      }
      if (!image) {
        skip(options, 'missing_image', `${shard}: item "${g.key}" has no .jpg/.png/.webp file (has: ${[...g.files.keys()].join(', ') || 'nothing'})`);
        return undefined;
      }
      let meta: Record<string, unknown> = {};
      const json = g.files.get('json');
      if (json) {
        try {
          const parsed: unknown = JSON.parse(json.toString('utf8'));
          if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) meta = parsed as Record<string, unknown>;
        } catch {
          options.onWarning?.(`${shard}: item "${g.key}" has invalid .json; its attributes are ignored`);
        }
      }
      const txt = g.files.get('txt');
      return {
        key: g.key,
        image: new Uint8Array(image.buffer, image.byteOffset, image.byteLength),
        caption: txt ? txt.toString('utf8') : '',
        meta: { ...meta, source_shard: shard, image_ext: imageExt },
      };
    };
    try {
      for await (const entry of extract) {
        const name = entry.header.name;
        if (entry.header.type !== 'file') {
          entry.resume();
          continue;
        }
        if (isUnsafeEntryName(name)) {
          entry.resume();
          skip(options, 'unsafe_tar_entry', new UnsafeTarEntryError(shard, name).message);
          continue;
        }
        const { key, ext } = splitEntryName(name);
        // A new key means the previous item is complete: hand it out before reading this entry's body,
        // so a shard cut inside this entry still keeps the previous item.
        if (group && group.key !== key) {
          const item = finish(group);
          group = undefined;
          if (item) {
            yielded++;
            yield item;
          }
          if (options.signal?.aborted) {
            entry.resume();
            return;
          }
        }
        const chunks: Buffer[] = [];
        for await (const c of entry) chunks.push(c as Buffer);
        group ??= { key, files: new Map() };
        group.files.set(ext, Buffer.concat(chunks));
      }
    } catch (err) {
      const cause = err instanceof Error ? err.message : String(err);
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR') {
        const e = new DataSourceError(shard, `cannot open shard (${code}); check the brace pattern and that the file exists`);
        if (options.strict) throw e;
        skip(options, 'unreadable_file', e.message);
        return;
      }
      // Files of the pending item that were read completely form an item; the cut entry is lost.
      if (group && group.files.size > 0 && [...group.files.keys()].some((ext) => isImageExtension(ext))) {
        const item = finish(group);
        if (item) {
          yielded++;
          yield item;
        }
      }
      group = undefined;
      const e = new TruncatedShardError(shard, yielded, cause);
      if (options.strict) throw e;
      // The pending item may be cut short, so it is dropped with the rest of the shard.
      skip(options, 'truncated_shard', e.message);
      return;
    } finally {
      input.destroy();
      extract.destroy();
    }
    if (group) {
      const item = finish(group);
      if (item) yield item;
    }
  }
}
