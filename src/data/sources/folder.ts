import { readdir, readFile } from 'node:fs/promises';
import { extname, join, relative } from 'node:path';
import { DataSourceError } from '../errors.js';
import type { DataSource, ReadOptions, SourceItem } from './types.js';
import { isImageExtension, skip } from './types.js';

async function* walk(dir: string): AsyncGenerator<string> {
  const entries = await readdir(dir, { withFileTypes: true });
  // Sorted by name so the order is the same on every file system.
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* walk(p);
    else if (e.isFile()) yield p;
  }
}

/** A folder (recursively) of images with a sibling `<name>.txt` caption and optional `<name>.json`. */
export class FolderSource implements DataSource {
  readonly kind = 'folder' as const;

  constructor(readonly description: string) {}

  async estimateCount(): Promise<number | undefined> {
    let n = 0;
    try {
      for await (const file of walk(this.description)) if (isImageExtension(extname(file).slice(1))) n++;
    } catch {
      return undefined; // items() reports the unreadable folder
    }
    return n;
  }

  async *items(options: ReadOptions): AsyncGenerator<SourceItem, void, undefined> {
    const root = this.description;
    let files: AsyncGenerator<string>;
    try {
      await readdir(root);
      files = walk(root);
    } catch (err) {
      throw new DataSourceError(root, `cannot list the image folder (${(err as Error).message})`);
    }
    for await (const file of files) {
      if (options.signal?.aborted) return;
      const ext = extname(file).slice(1);
      if (!isImageExtension(ext)) continue;
      const stem = file.slice(0, file.length - ext.length - 1);
      const key = relative(root, stem);
      let image: Buffer;
      try {
        image = await readFile(file);
      } catch (err) {
        skip(options, 'unreadable_file', `${file}: cannot read (${(err as Error).message})`);
        continue;
      }
      const caption = await readFile(`${stem}.txt`, 'utf8').catch(() => '');
      let meta: Record<string, unknown> = {};
      const json = await readFile(`${stem}.json`, 'utf8').catch(() => undefined);
      if (json !== undefined) {
        try {
          const parsed: unknown = JSON.parse(json);
          if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) meta = parsed as Record<string, unknown>;
        } catch {
          options.onWarning?.(`${stem}.json: invalid JSON; attributes ignored`);
        }
      }
      yield { key, image: new Uint8Array(image.buffer, image.byteOffset, image.byteLength), caption, meta: { ...meta, image_path: file } };
    }
  }
}
