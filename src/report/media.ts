/**
 * Images and tables of runs, embedded as data URIs under one byte budget (the report is a single file that a
 * mail or a CI artifact carries). Files are read only from inside their run's directory.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { extname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import sharp from 'sharp';

/** Raw bytes of all embedded images together; base64 adds a third, and the page's own ~150 KB come on top. */
export const DEFAULT_IMAGE_BUDGET = 3_200_000;
/** An image larger than this is re-encoded smaller before it is embedded. */
const LARGE_IMAGE = 400_000;
const MAX_TABLE_ROWS = 200;
const MAX_TABLE_FILE = 5_000_000;

export interface EmbeddedImage {
  /** relative to the run dir */
  path: string;
  dataUri: string;
  width: number;
  height: number;
  bytes: number;
  /** re-encoded smaller to fit */
  downscaled?: boolean;
}

/** A path inside `dir` (relative to it, or absolute inside it), or undefined for anything outside. */
export function insideDir(dir: string, path: string): string | undefined {
  const abs = isAbsolute(path) ? resolve(path) : resolve(dir, path);
  const rel = relative(resolve(dir), abs);
  if (rel === '' || rel.startsWith(`..${sep}`) || rel === '..' || isAbsolute(rel)) return undefined;
  return abs;
}

const MIME: Record<string, string> = { '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.webp': 'image/webp', '.gif': 'image/gif' };

export function isImagePath(p: string): boolean {
  return extname(p).toLowerCase() in MIME;
}

/** Embeds images in priority order until the budget is spent; the rest are counted, not embedded. */
export class ImageBudget {
  private spent = 0;
  omitted = 0;
  private readonly cache = new Map<string, EmbeddedImage | undefined>();

  constructor(readonly limit = DEFAULT_IMAGE_BUDGET) {}

  get used(): number {
    return this.spent;
  }

  /** `path` relative to `runDir`; undefined when outside it, missing, unreadable or over the budget. */
  async embed(runDir: string, path: string, warn: (m: string) => void): Promise<EmbeddedImage | undefined> {
    const abs = insideDir(runDir, path);
    if (!abs) {
      warn(`${runDir}: image ${path} is outside the run directory; not embedded`);
      return undefined;
    }
    if (this.cache.has(abs)) return this.cache.get(abs);
    let bytes: Buffer;
    try {
      bytes = await readFile(abs);
    } catch (err) {
      warn(`${abs}: ${(err as Error).message}; not embedded`);
      this.cache.set(abs, undefined);
      return undefined;
    }
    let mime = MIME[extname(abs).toLowerCase()] ?? 'image/png';
    let downscaled = false;
    let width = 0;
    let height = 0;
    try {
      const meta = await sharp(bytes).metadata();
      width = meta.width ?? 0;
      height = meta.height ?? 0;
      if (bytes.length > LARGE_IMAGE || bytes.length > this.limit - this.spent) {
        // pixel-art grids stay sharp at half size with nearest-neighbour; photos survive WebP
        const smaller = await sharp(bytes).resize({ width: Math.max(64, Math.round(width / 2)), kernel: 'nearest' }).webp({ quality: 80 }).toBuffer({ resolveWithObject: true });
        if (smaller.data.length < bytes.length) {
          bytes = smaller.data;
          mime = 'image/webp';
          width = smaller.info.width;
          height = smaller.info.height;
          downscaled = true;
        }
      }
    } catch (err) {
      warn(`${abs}: not a readable image (${(err as Error).message}); not embedded`);
      this.cache.set(abs, undefined);
      return undefined;
    }
    if (this.spent + bytes.length > this.limit) {
      this.omitted++;
      return undefined;
    }
    this.spent += bytes.length;
    const img: EmbeddedImage = { path, dataUri: `data:${mime};base64,${bytes.toString('base64')}`, width, height, bytes: bytes.length, ...(downscaled ? { downscaled } : {}) };
    this.cache.set(abs, img);
    return img;
  }
}

export type TableCell = string | number | boolean | null | { image: EmbeddedImage } | { missingImage: string };

export interface ReportTable {
  key: string;
  /** relative to the run dir */
  path: string;
  columns: string[];
  rows: TableCell[][];
  /** rows in the file (more than shown when truncated) */
  totalRows: number;
}

/** Every `*.table.json` under the run's media/ folder, plus those named by history values. */
export async function findTableFiles(runDir: string, named: readonly string[]): Promise<string[]> {
  const found = new Set<string>();
  const walk = async (dir: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile() && e.name.endsWith('.table.json')) found.add(relative(runDir, p));
    }
  };
  await walk(join(runDir, 'media'));
  for (const n of named) if (insideDir(runDir, n)) found.add(relative(runDir, resolve(runDir, n)));
  return [...found].sort();
}

/**
 * Reads a W&B-style table (`{ columns: string[], data: unknown[][] }`). Cells that are image paths (relative to
 * the run dir or to the table's folder) or `image-file` values become embedded images.
 */
export async function readTable(runDir: string, path: string, images: ImageBudget, warn: (m: string) => void): Promise<ReportTable | undefined> {
  const abs = insideDir(runDir, path);
  if (!abs) return undefined;
  let raw: unknown;
  try {
    const st = await stat(abs);
    if (st.size > MAX_TABLE_FILE) {
      warn(`${abs}: ${st.size} bytes, more than a table the report shows (${MAX_TABLE_FILE}); skipped`);
      return undefined;
    }
    raw = JSON.parse(await readFile(abs, 'utf8'));
  } catch (err) {
    warn(`${abs}: not a readable JSON table (${(err as Error).message}); skipped`);
    return undefined;
  }
  const t = raw as { columns?: unknown; data?: unknown };
  if (!Array.isArray(t?.columns) || !t.columns.every((c) => typeof c === 'string') || !Array.isArray(t.data) || !t.data.every((r) => Array.isArray(r))) {
    warn(`${abs}: expected a table { "columns": [names…], "data": [[cells…]…] }; skipped`);
    return undefined;
  }
  const columns = t.columns as string[];
  const data = t.data as unknown[][];
  const tableDir = join(abs, '..');
  const rows: TableCell[][] = [];
  for (const row of data.slice(0, MAX_TABLE_ROWS)) {
    const cells: TableCell[] = [];
    for (const cell of row) cells.push(await tableCell(runDir, tableDir, cell, images, warn));
    rows.push(cells);
  }
  const key = path.replace(/^media[\\/]/, '').replace(/\.table\.json$/, '');
  return { key, path, columns, rows, totalRows: data.length };
}

async function tableCell(runDir: string, tableDir: string, cell: unknown, images: ImageBudget, warn: (m: string) => void): Promise<TableCell> {
  let imagePath: string | undefined;
  if (typeof cell === 'string' && isImagePath(cell)) imagePath = cell;
  else if (typeof cell === 'object' && cell !== null && (cell as { _type?: unknown })._type === 'image-file' && typeof (cell as { path?: unknown }).path === 'string') imagePath = (cell as { path: string }).path;
  if (imagePath !== undefined) {
    // relative to the run dir (as history values are), else to the table's own folder
    const candidates = [imagePath, relative(runDir, resolve(tableDir, imagePath))];
    for (const c of candidates) {
      const abs = insideDir(runDir, c);
      if (!abs) continue;
      try {
        await stat(abs);
      } catch {
        continue;
      }
      const img = await images.embed(runDir, relative(runDir, abs), warn);
      return img ? { image: img } : { missingImage: imagePath };
    }
    return { missingImage: imagePath };
  }
  if (cell === null || typeof cell === 'string' || typeof cell === 'number' || typeof cell === 'boolean') return cell;
  return JSON.stringify(cell);
}
