/**
 * Reading the run store's append-only files from a byte position: only whole lines (a line still being
 * written has no newline yet), except at the end of a run, when a last unterminated line is taken too.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { isErrnoCode } from '../../runs/fs-util.js';

export interface Line {
  text: string;
  /** Byte position just after this line (its newline included). */
  end: number;
}

/** Lines of `file` from byte `from` (at most `maxBytes` read); none when the file does not exist. */
export async function readLines(file: string, from: number, options: { final: boolean; maxBytes?: number }): Promise<Line[]> {
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (err) {
    if (isErrnoCode(err, 'ENOENT')) return [];
    throw err;
  }
  try {
    const { size } = await fh.stat();
    if (size <= from) return [];
    const length = Math.min(size - from, options.maxBytes ?? 8 << 20);
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, from);
    const out: Line[] = [];
    let start = 0;
    for (let i = 0; i < bytesRead; i++) {
      if (buf[i] !== 0x0a) continue;
      out.push({ text: buf.toString('utf8', start, i).replace(/\r$/, ''), end: from + i + 1 });
      start = i + 1;
    }
    // The unterminated tail counts only when the whole file was read and the run is over.
    if (options.final && start < bytesRead && from + bytesRead === size) out.push({ text: buf.toString('utf8', start, bytesRead), end: size });
    return out;
  } finally {
    await fh.close();
  }
}

export function sha256Text(text: string | Uint8Array): string {
  return createHash('sha256').update(text).digest('hex');
}
