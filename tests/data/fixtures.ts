/** Fixture builders for data tests: everything is generated in a temp dir, nothing is downloaded. */
import { writeFile } from 'node:fs/promises';
import sharp from 'sharp';
import tar from 'tar-stream';

export async function solidImage(format: 'png' | 'jpeg' | 'webp', rgb: [number, number, number], w = 24, h = 24): Promise<Buffer> {
  const img = sharp({ create: { width: w, height: h, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } });
  if (format === 'png') return img.png().toBuffer();
  if (format === 'jpeg') return img.jpeg({ quality: 95 }).toBuffer();
  return img.webp({ lossless: true }).toBuffer();
}

/** An image whose columns are split into vertical bands of the given colours (left to right). */
export async function bandsImage(colours: Array<[number, number, number]>, w: number, h: number): Promise<Buffer> {
  const raw = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const c = colours[Math.floor((x * colours.length) / w)] as [number, number, number];
      raw.set(c, (y * w + x) * 3);
    }
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } }).png().toBuffer();
}

export interface TarEntry {
  name: string;
  body: Buffer | string;
}

export async function tarBytes(entries: TarEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) pack.entry({ name: e.name, mtime: new Date(0) }, typeof e.body === 'string' ? Buffer.from(e.body) : e.body);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export async function writeTar(path: string, entries: TarEntry[]): Promise<Buffer> {
  const bytes = await tarBytes(entries);
  await writeFile(path, bytes);
  return bytes;
}
