import { closeSync, openSync, writeSync } from 'node:fs';
import { scrub } from '../secrets.js';

/** `warning`: a stage's warnings (logger.warn), kept apart from its errors. */
export type OutputStream = 'stdout' | 'stderr' | 'warning';

/** Append-only writer of a run's output.log: `<iso ts> <text>` per line, stderr lines prefixed `ERROR ` (as W&B), warnings `WARN `. */
export interface OutputLog {
  readonly path: string;
  /** Appends one line per line of `text` (a trailing newline does not add an empty line); secrets are scrubbed. */
  line(text: string, stream?: OutputStream): void;
  close(): void;
}

export function openOutputLog(path: string, secrets: readonly string[]): OutputLog {
  let fd: number | undefined;
  return {
    path,
    line(text, stream = 'stdout') {
      // Opened lazily and kept open: a stage can print thousands of lines.
      fd ??= openSync(path, 'a');
      // Scrub before splitting so a secret cut by a line break or a \r is still caught whole.
      const lines = scrub(text, secrets).replace(/\r?\n$/, '').split(/\r?\n/);
      const prefix = stream === 'stderr' ? 'ERROR ' : stream === 'warning' ? 'WARN ' : '';
      let out = '';
      for (const l of lines) {
        // A progress bar redraws with \r: keep only what the terminal would finally show.
        const shown = l.slice(l.lastIndexOf('\r') + 1);
        out += `${new Date().toISOString()} ${prefix}${shown}\n`;
      }
      writeSync(fd, out);
    },
    close() {
      if (fd !== undefined) closeSync(fd);
      fd = undefined;
    },
  };
}
