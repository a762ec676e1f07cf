import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, extname, isAbsolute, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { DataSourceError } from '../errors.js';
import type { DataSource, ReadOptions, SourceItem } from './types.js';
import { skip } from './types.js';

export interface TableColumns {
  /** Column holding the image path, relative to the table file's folder. */
  image: string;
  caption: string;
  /** Optional column used as the item key (else the 1-based row number). */
  key: string;
}

export const DEFAULT_TABLE_COLUMNS: TableColumns = { image: 'image_path', caption: 'caption', key: 'key' };

/** Splits one CSV/TSV record (RFC 4180 quoting: `"a, b"`, doubled `""` inside quotes). */
export function parseDelimited(record: string, delimiter: string): string[] {
  const out: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < record.length; i++) {
    const ch = record[i] as string;
    if (quoted) {
      if (ch === '"') {
        if (record[i + 1] === '"') {
          field += '"';
          i++;
        } else quoted = false;
      } else field += ch;
    } else if (ch === '"' && field === '') quoted = true;
    else if (ch === delimiter) {
      out.push(field);
      field = '';
    } else field += ch;
  }
  out.push(field);
  return out;
}

/** Odd count of quote characters means the record continues on the next line (a quoted newline). */
function quotesOpen(text: string): boolean {
  let n = 0;
  for (const ch of text) if (ch === '"') n++;
  return n % 2 === 1;
}

/** TSV, CSV or JSONL with an image path and a caption per row, streamed line by line. */
export class TableSource implements DataSource {
  readonly kind = 'table' as const;
  readonly format: 'tsv' | 'csv' | 'jsonl';

  constructor(
    readonly description: string,
    readonly columns: TableColumns = DEFAULT_TABLE_COLUMNS,
  ) {
    const ext = extname(description).toLowerCase();
    if (ext === '.tsv') this.format = 'tsv';
    else if (ext === '.csv') this.format = 'csv';
    else if (ext === '.jsonl' || ext === '.ndjson') this.format = 'jsonl';
    else throw new DataSourceError(description, 'unknown table format: expected a .tsv, .csv or .jsonl file');
  }

  /** Non-empty lines (less the header row of TSV/CSV): exact unless quoted CSV fields hold line breaks. */
  async estimateCount(): Promise<number | undefined> {
    let text: string;
    try {
      text = await readFile(this.description, 'utf8');
    } catch {
      return undefined;
    }
    const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '').length;
    return this.format === 'jsonl' ? lines : Math.max(0, lines - 1);
  }

  private async *rows(): AsyncGenerator<{ line: number; row: Record<string, unknown> | undefined; error?: string }> {
    const file = this.description;
    const input = createReadStream(file, 'utf8');
    const lines = createInterface({ input, crlfDelay: Infinity });
    let header: string[] | undefined;
    let pending = '';
    let lineNo = 0;
    let startLine = 0;
    try {
      for await (const line of lines) {
        lineNo++;
        if (this.format === 'jsonl') {
          if (line.trim() === '') continue;
          try {
            const parsed: unknown = JSON.parse(line);
            if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) yield { line: lineNo, row: undefined, error: 'not a JSON object' };
            else yield { line: lineNo, row: parsed as Record<string, unknown> };
          } catch (err) {
            yield { line: lineNo, row: undefined, error: `invalid JSON (${(err as Error).message})` };
          }
          continue;
        }
        if (pending === '') startLine = lineNo;
        pending = pending === '' ? line : `${pending}\n${line}`;
        // CSV quotes may span lines; TSV (CC3M/CC12M style) is unquoted, so a lone " in a caption is just text.
        if (this.format === 'csv' && quotesOpen(pending)) continue;
        const record = pending;
        pending = '';
        if (record.trim() === '') continue;
        const fields = this.format === 'tsv' ? record.split('\t') : parseDelimited(record, ',');
        if (!header) {
          header = fields.map((f) => f.trim());
          for (const required of [this.columns.image, this.columns.caption]) {
            if (!header.includes(required)) throw new DataSourceError(file, `header has no "${required}" column (columns: ${header.join(', ')})`);
          }
          continue;
        }
        if (fields.length !== header.length) {
          yield { line: startLine, row: undefined, error: `${fields.length} fields where the header has ${header.length}` };
          continue;
        }
        const row: Record<string, unknown> = {};
        header.forEach((h, i) => (row[h] = fields[i]));
        yield { line: startLine, row };
      }
    } catch (err) {
      if (err instanceof DataSourceError) throw err;
      throw new DataSourceError(file, `cannot read the table (${(err as Error).message})`);
    } finally {
      lines.close();
      input.destroy();
    }
  }

  async *items(options: ReadOptions): AsyncGenerator<SourceItem, void, undefined> {
    const file = this.description;
    const base = dirname(resolve(file));
    let n = 0;
    for await (const { line, row, error } of this.rows()) {
      if (options.signal?.aborted) return;
      n++;
      if (!row) {
        skip(options, 'bad_row', `${file}:${line}: ${error ?? 'unreadable row'}`);
        continue;
      }
      const rel = row[this.columns.image];
      if (typeof rel !== 'string' || rel === '') {
        skip(options, 'missing_image', `${file}:${line}: empty "${this.columns.image}"`);
        continue;
      }
      const path = isAbsolute(rel) ? rel : resolve(base, rel);
      let image: Buffer;
      try {
        image = await readFile(path);
      } catch (err) {
        skip(options, 'missing_image', `${file}:${line}: cannot read image ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
        continue;
      }
      const rawKey = row[this.columns.key];
      const key = typeof rawKey === 'string' && rawKey !== '' ? rawKey : typeof rawKey === 'number' ? String(rawKey) : String(n).padStart(9, '0');
      const caption = row[this.columns.caption];
      const meta: Record<string, unknown> = { ...row, image_path: path };
      yield { key, image: new Uint8Array(image.buffer, image.byteOffset, image.byteLength), caption: typeof caption === 'string' ? caption : '', meta };
    }
  }
}
