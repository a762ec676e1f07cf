import { createReadStream } from 'node:fs';
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { dirname, extname, isAbsolute, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { parse as parseCsv, type CsvError, type Options, type Parser } from 'csv-parse';
import { parse as parseCsvSync } from 'csv-parse/sync';
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

/** A quoted CSV field may hold line breaks, but a record longer than this is an unterminated quote, not a caption. */
const MAX_RECORD_BYTES = 1 << 20;
const CHUNK_BYTES = 1 << 16;

/** One record of a CSV/TSV file: its fields, or why it is unusable; `line` is the 1-based line it starts on. */
export interface TableRecord {
  line: number;
  fields?: string[];
  error?: string;
}

interface Restart {
  /** Byte offset to parse from again, and how many lines lie before it. */
  offset: number;
  lineBase: number;
}

interface Parsed {
  fields: string[];
  raw: string;
  /** End of the record (its line break included), in bytes and lines from where this parser started. */
  bytes: number;
  lines: number;
}

function csvOptions(format: 'csv' | 'tsv', onRecord: (p: Parsed) => void): Options {
  return {
    delimiter: format === 'tsv' ? '\t' : ',',
    // TSV (CC3M/CC12M style) is unquoted: a lone " in a caption is just text.
    quote: format === 'tsv' ? false : '"',
    relax_column_count: true, // field counts are checked here, so the message can name the header
    skip_empty_lines: true,
    bom: true,
    raw: true,
    max_record_size: MAX_RECORD_BYTES,
    // Records are taken here rather than from the stream, so none is lost when a later record fails.
    // With `raw`, csv-parse hands on_record `{ record, raw }`.
    on_record: (record: unknown, info) => {
      const fields = Array.isArray(record) ? (record as string[]) : (record as { record: string[] }).record;
      onRecord({ fields, raw: info.raw ?? '', bytes: info.bytes, lines: info.lines });
      return null;
    },
  };
}

/** Line breaks before the first character of `raw` (csv-parse counts skipped empty lines into the next record). */
function leadingBreaks(raw: string): number {
  const m = /^(?:\r?\n)+/.exec(raw);
  return m ? m[0].split('\n').length - 1 : 0;
}

/** Reads physical lines from byte `offset`: skips empty ones, then returns up to `count` lines and the offset after them. */
async function linesAt(fh: FileHandle, offset: number, count: number): Promise<{ lines: string[]; skipped: number; next: number }> {
  const lines: string[] = [];
  let skipped = 0;
  let parts: Buffer[] = [];
  let kept = 0;
  let pos = offset;
  const buf = Buffer.alloc(CHUNK_BYTES);
  const close = (): void => {
    let text = Buffer.concat(parts).toString('utf8').replace(/\r$/, '');
    if (offset === 0 && lines.length === 0 && skipped === 0) text = text.replace(/^\ufeff/, '');
    parts = [];
    kept = 0;
    if (text === '' && lines.length === 0) skipped++;
    else lines.push(text);
  };
  for (;;) {
    const { bytesRead } = await fh.read(buf, 0, CHUNK_BYTES, pos);
    if (bytesRead === 0) {
      if (kept > 0) close();
      return { lines, skipped, next: pos };
    }
    let from = 0;
    for (let i = 0; i < bytesRead; i++) {
      if (buf[i] !== 0x0a) continue;
      // A runaway line is kept only up to the record limit: it is reported, not stored.
      if (kept < MAX_RECORD_BYTES) parts.push(Buffer.from(buf.subarray(from, Math.min(i, from + MAX_RECORD_BYTES - kept))));
      close();
      from = i + 1;
      if (lines.length === count) return { lines, skipped, next: pos + from };
    }
    if (kept < MAX_RECORD_BYTES && from < bytesRead) {
      const piece = buf.subarray(from, Math.min(bytesRead, from + MAX_RECORD_BYTES - kept));
      parts.push(Buffer.from(piece));
      kept += piece.length;
    }
    pos += bytesRead;
  }
}

function describe(err: CsvError | Error): string {
  switch ((err as CsvError).code) {
    case 'CSV_QUOTE_NOT_CLOSED':
      return 'a quoted field is never closed (an unterminated `"`)';
    case 'CSV_INVALID_CLOSING_QUOTE':
      return 'a quoted field is followed by more text before the next comma (an unterminated or stray `"`)';
    case 'INVALID_OPENING_QUOTE':
      return 'a `"` inside an unquoted field, and the row does not parse even reading it as text';
    case 'CSV_MAX_RECORD_SIZE':
      return `a record longer than ${MAX_RECORD_BYTES >> 20} MiB (an unterminated \`"\`?)`;
    default:
      return `unparsable (${err.message})`;
  }
}

/**
 * CSV/TSV records with csv-parse, streamed in chunks. A bad record never takes good rows with it: it is reported
 * with the line it starts on, and parsing starts again on the line after that one, so a runaway quote costs one
 * row. A `"` inside an unquoted field (`a 12" vinyl record`) is read as text when the row then has the header's
 * width. The first record is the header; every later record must have as many fields.
 */
export async function* tableRecords(file: string, format: 'csv' | 'tsv'): AsyncGenerator<TableRecord, void, undefined> {
  const fh = await open(file, 'r');
  let width: number | undefined;
  try {
    let from: Restart | undefined = { offset: 0, lineBase: 0 };
    while (from) from = yield* parseFrom(from);
  } finally {
    await fh.close();
  }

  async function* parseFrom({ offset, lineBase }: Restart): AsyncGenerator<TableRecord, Restart | undefined, undefined> {
    const queue: Parsed[] = [];
    const parser = parseCsv(csvOptions(format, (p) => queue.push(p)));
    parser.on('error', () => {}); // errors are taken from the write/end callbacks below
    parser.resume();
    let doneBytes = 0;
    let doneLines = 0;
    let pos = offset;
    const buf = Buffer.alloc(CHUNK_BYTES);
    try {
      for (let eof = false; !eof; ) {
        const { bytesRead } = await fh.read(buf, 0, CHUNK_BYTES, pos);
        pos += bytesRead;
        eof = bytesRead === 0;
        const failure = await (eof ? finish(parser) : feed(parser, Buffer.from(buf.subarray(0, bytesRead))));
        for (const r of queue.splice(0)) {
          const line = lineBase + doneLines + 1 + leadingBreaks(r.raw);
          const endLine = lineBase + r.lines;
          const recordStart = offset + doneBytes;
          doneBytes = r.bytes;
          doneLines = r.lines;
          if (r.fields.length === 1 && r.fields[0]!.trim() === '') continue; // a blank line holds no item
          if (width === undefined) width = r.fields.length;
          else if (r.fields.length !== width) {
            const what = `${r.fields.length} fields where the header has ${width}`;
            if (endLine === line) {
              yield { line, error: what };
              continue;
            }
            // A quote opened on this line ran over later lines: only this line is lost.
            yield { line, error: `${what}, in a record running over lines ${line}–${endLine} (an unterminated \`"\`?); reading goes on at line ${line + 1}` };
            const first = await linesAt(fh, recordStart, 1);
            return { offset: first.next, lineBase: line };
          }
          yield { line, fields: r.fields };
        }
        if (failure) return yield* recover(failure, offset + doneBytes, lineBase + doneLines, lineBase);
      }
      return undefined;
    } finally {
      parser.destroy();
    }
  }

  /** The record starting at byte `start` (after line `before`) failed to parse: report it, and say where to go on. */
  async function* recover(err: Error, start: number, before: number, lineBase: number): AsyncGenerator<TableRecord, Restart | undefined, undefined> {
    const first = await linesAt(fh, start, 1);
    if (first.lines.length === 0) return undefined;
    const line = before + 1 + first.skipped;
    const quoteLine = (err as CsvError).lines;
    if ((err as CsvError).code === 'INVALID_OPENING_QUOTE' && typeof quoteLine === 'number' && width !== undefined) {
      // A stray quote in an unquoted field: read the lines up to it again with relaxed quotes.
      const span = await linesAt(fh, start, Math.max(1, lineBase + quoteLine - line + 1));
      let records: string[][] = [];
      try {
        records = parseCsvSync(span.lines.join('\n'), { relax_quotes: true, relax_column_count: true, delimiter: ',' }) as string[][];
      } catch {
        records = [];
      }
      if (records.length === 1 && records[0]!.length === width) {
        yield { line, fields: records[0]! };
        return { offset: span.next, lineBase: line + span.lines.length - 1 };
      }
    }
    yield { line, error: `${describe(err)}; reading goes on at line ${line + 1}` };
    return { offset: first.next, lineBase: line };
  }
}

function feed(parser: Parser, chunk: Buffer): Promise<Error | undefined> {
  return new Promise((res) => parser.write(chunk, (err) => res(err ?? undefined)));
}

function finish(parser: Parser): Promise<Error | undefined> {
  return new Promise((res) => {
    parser.once('error', (err) => res(err));
    parser.once('end', () => res(undefined));
    parser.end();
  });
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

  /** Non-empty lines (less the header row of TSV/CSV), streamed: exact unless quoted CSV fields hold line breaks. */
  async estimateCount(): Promise<number | undefined> {
    const input = createReadStream(this.description, 'utf8');
    const lines = createInterface({ input, crlfDelay: Infinity });
    let n = 0;
    try {
      for await (const line of lines) if (line.trim() !== '') n++;
    } catch {
      return undefined; // items() reports the unreadable file
    } finally {
      lines.close();
      input.destroy();
    }
    return this.format === 'jsonl' ? n : Math.max(0, n - 1);
  }

  private async *rows(): AsyncGenerator<{ line: number; row: Record<string, unknown> | undefined; error?: string }> {
    const file = this.description;
    try {
      if (this.format === 'jsonl') {
        yield* this.jsonlRows();
        return;
      }
      let header: string[] | undefined;
      for await (const { line, fields, error } of tableRecords(file, this.format)) {
        if (!header) {
          if (!fields) throw new DataSourceError(file, `line ${line}: the header row is unreadable: ${error}`);
          header = fields.map((f) => f.trim());
          for (const required of [this.columns.image, this.columns.caption]) {
            if (!header.includes(required)) throw new DataSourceError(file, `header has no "${required}" column (columns: ${header.join(', ')})`);
          }
          continue;
        }
        if (!fields) {
          yield { line, row: undefined, error };
          continue;
        }
        const row: Record<string, unknown> = {};
        header.forEach((h, i) => (row[h] = fields[i]));
        yield { line, row };
      }
    } catch (err) {
      if (err instanceof DataSourceError) throw err;
      throw new DataSourceError(file, `cannot read the table (${(err as Error).message})`);
    }
  }

  private async *jsonlRows(): AsyncGenerator<{ line: number; row: Record<string, unknown> | undefined; error?: string }> {
    const input = createReadStream(this.description, 'utf8');
    const lines = createInterface({ input, crlfDelay: Infinity });
    let lineNo = 0;
    try {
      for await (const line of lines) {
        lineNo++;
        if (line.trim() === '') continue;
        try {
          const parsed: unknown = JSON.parse(line);
          if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) yield { line: lineNo, row: undefined, error: 'not a JSON object' };
          else yield { line: lineNo, row: parsed as Record<string, unknown> };
        } catch (err) {
          yield { line: lineNo, row: undefined, error: `invalid JSON (${(err as Error).message})` };
        }
      }
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
