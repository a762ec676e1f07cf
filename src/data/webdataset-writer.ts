import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { braceRange } from './braces.js';

/** One webdataset sample: files sharing the key, e.g. `{ png: bytes, txt: 'caption', json: {...} }`. */
export interface WebdatasetSample {
  key: string;
  files: Record<string, Uint8Array | string>;
}

export interface ShardWriterOptions {
  dir: string;
  /** File prefix: `train` gives `train-00000.tar`. */
  prefix: string;
  samplesPerShard: number;
}

/**
 * Writes img2dataset-style tar shards. Headers carry fixed mtime/owner so the same samples give
 * byte-identical tars; each shard is written to a hidden temp name and renamed when complete.
 */
export class WebdatasetShardWriter {
  private pack: tar.Pack | undefined;
  private done: Promise<void> | undefined;
  private tmpPath = '';
  private inShard = 0;
  private readonly shards: string[] = [];

  constructor(private readonly opts: ShardWriterOptions) {
    if (!(opts.samplesPerShard > 0)) throw new RangeError('samplesPerShard must be a positive integer');
  }

  async add(sample: WebdatasetSample): Promise<void> {
    if (!this.pack) await this.openShard();
    const pack = this.pack as tar.Pack;
    // Sorted extensions: a stable entry order is part of byte-identical output.
    for (const ext of Object.keys(sample.files).sort()) {
      const value = sample.files[ext] as Uint8Array | string;
      const body = typeof value === 'string' ? Buffer.from(value, 'utf8') : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
      await new Promise<void>((resolve, reject) => {
        pack.entry(
          { name: `${sample.key}.${ext}`, size: body.length, mtime: new Date(0), mode: 0o644, uid: 0, gid: 0, uname: '', gname: '' },
          body,
          (err) => (err ? reject(err) : resolve()),
        );
      });
    }
    this.inShard++;
    if (this.inShard >= this.opts.samplesPerShard) await this.closeShard();
  }

  /** Finishes the last shard; returns the shard paths and a brace pattern covering them. */
  async finish(): Promise<{ shards: string[]; pattern: string }> {
    if (this.pack) await this.closeShard();
    const pattern = this.shards.length === 0 ? '' : braceRange(join(this.opts.dir, `${this.opts.prefix}-`), this.shards.length, '.tar');
    return { shards: [...this.shards], pattern };
  }

  /** Removes a half-written shard (on abort or error). */
  async abort(): Promise<void> {
    if (this.pack) {
      this.pack.destroy();
      await this.done?.catch(() => undefined);
      await rm(this.tmpPath, { force: true });
      this.pack = undefined;
    }
  }

  private async openShard(): Promise<void> {
    await mkdir(this.opts.dir, { recursive: true });
    const name = `${this.opts.prefix}-${String(this.shards.length).padStart(5, '0')}.tar`;
    this.tmpPath = join(this.opts.dir, `.${name}.tmp`);
    this.pack = tar.pack();
    this.done = pipeline(this.pack, createWriteStream(this.tmpPath));
    this.inShard = 0;
  }

  private async closeShard(): Promise<void> {
    const pack = this.pack as tar.Pack;
    pack.finalize();
    await this.done;
    const final = join(this.opts.dir, `${this.opts.prefix}-${String(this.shards.length).padStart(5, '0')}.tar`);
    await rename(this.tmpPath, final);
    // img2dataset's per-shard stats, so readers know the size of the dataset without reading it.
    await writeFile(final.replace(/\.tar$/, '_stats.json'), `${JSON.stringify({ count: this.inShard, successes: this.inShard, failed_to_download: 0, failed_to_resize: 0 })}\n`);
    this.shards.push(final);
    this.pack = undefined;
    this.done = undefined;
  }
}
