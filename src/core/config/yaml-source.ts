import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, visit, type Document, type Node } from 'yaml';
import { ConfigError, type SourceLocation } from '../errors.js';

/** Config files are small; anything bigger is a mistake (a dataset, a log), refused before it fills memory. */
export const MAX_CONFIG_BYTES = 5 * 1024 * 1024;
/** Aliases a document may expand (an alias bomb expands a few lines into gigabytes). */
const MAX_ALIASES = 100;

export interface ReadOptions {
  /**
   * Whether error messages may quote the file's text. Off for files outside the project not named `.yaml`
   * (`extends: /etc/…`): a file that is not YAML is refused by position and kind of error, never by its content.
   */
  quote?: boolean;
}

/**
 * Reads a regular file of at most MAX_CONFIG_BYTES. Opened non-blocking and checked with fstat before anything
 * is read, so a FIFO, a device (`/dev/zero`) or a directory is refused at once instead of hanging or filling memory.
 */
function readConfigFile(file: string): string {
  const fail = (message: string): never => {
    throw new ConfigError([{ path: [], message, location: { file } }]);
  };
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    return fail(`cannot read the file: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) {
      const kind = st.isDirectory() ? 'a directory' : st.isFIFO() ? 'a FIFO' : st.isCharacterDevice() || st.isBlockDevice() ? 'a device' : 'not a regular file';
      fail(`is ${kind}: a config file must be a regular YAML file`);
    }
    if (st.size > MAX_CONFIG_BYTES) fail(`is ${(st.size / 2 ** 20).toFixed(1)} MiB: config files are limited to ${MAX_CONFIG_BYTES / 2 ** 20} MiB (is this really a config file?)`);
    // Read at most one byte past the limit: a file that grows while being read is still bounded.
    const buf = Buffer.alloc(Math.min(st.size, MAX_CONFIG_BYTES) + 1);
    let n = 0;
    for (let got = -1; got !== 0 && n < buf.length; n += got) got = readSync(fd, buf, n, buf.length - n, n);
    if (n > MAX_CONFIG_BYTES) fail(`is larger than ${MAX_CONFIG_BYTES / 2 ** 20} MiB: config files are limited to that`);
    return buf.subarray(0, n).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** A parsed YAML file that can say on which line any key path stands. */
export class YamlSource {
  private constructor(
    readonly file: string,
    readonly doc: Document,
    private readonly lines: LineCounter,
    /** Whether messages about this file may quote its keys and text (see ReadOptions.quote). */
    readonly quote: boolean,
  ) {}

  /**
   * Parses safely: the core schema only (no tags that build objects or run code), duplicate keys are errors,
   * and an unknown tag is an error rather than a warning.
   */
  static read(file: string, text?: string, options: ReadOptions = {}): YamlSource {
    const quote = options.quote ?? true;
    const src = text ?? readConfigFile(file);
    const lines = new LineCounter();
    const doc = parseDocument(src, { lineCounter: lines, schema: 'core', uniqueKeys: true, prettyErrors: true, strict: true });
    const problems = [...doc.errors, ...doc.warnings].map((e) => ({
      path: [] as string[],
      message: quote ? `invalid YAML: ${e.message.split('\n')[0]}` : `invalid YAML (${e.code}); is it a YAML file?`,
      location: { file, line: e.linePos?.[0].line, column: e.linePos?.[0].col },
    }));
    if (problems.length > 0) throw new ConfigError(problems);
    const source = new YamlSource(file, doc, lines, quote);
    if (doc.contents !== null && !isMap(doc.contents)) {
      throw new ConfigError([{ path: [], message: 'expected a mapping of keys (name:, stages:, …) at the top level', location: source.locate([]) }]);
    }
    return source;
  }

  /** Plain JS value of the document (`{}` for an empty file); an alias bomb is an error at its first alias. */
  value(): Record<string, unknown> {
    try {
      // yaml gives an alias the same object as its anchor; each use must be its own copy, or an override of
      // one stage (`stages.b.with.model.d_model=…`) would silently change every stage sharing the anchor.
      // The core schema holds only JSON values, and MAX_ALIASES bounds the expansion.
      return JSON.parse(JSON.stringify(this.doc.toJS({ maxAliasCount: MAX_ALIASES }) ?? {})) as Record<string, unknown>;
    } catch (err) {
      let at: number | undefined;
      visit(this.doc, {
        Alias: (_, node) => {
          at = node.range?.[0];
          return visit.BREAK;
        },
      });
      const pos = at === undefined ? undefined : this.lines.linePos(at);
      const message = /alias/i.test((err as Error).message)
        ? `aliases expand too much (more than ${MAX_ALIASES} alias uses, as in a "billion laughs" file); write the values out instead`
        : `cannot build the document: ${(err as Error).message.split('\n')[0]}`;
      throw new ConfigError([{ path: [], message, location: { file: this.file, line: pos?.line, column: pos?.col } }]);
    }
  }

  has(path: (string | number)[]): boolean {
    return path.length === 0 || this.doc.hasIn(path);
  }

  /** Line of the key `path` (the key itself, so "unknown key" points at it), or of its nearest existing ancestor. */
  locate(path: (string | number)[]): SourceLocation {
    let node: unknown = this.doc.contents;
    let offset = (node as Node | null)?.range?.[0] ?? 0;
    for (const key of path) {
      if (isMap(node)) {
        const pair = node.items.find((p) => (isScalar(p.key) ? p.key.value : p.key) === key);
        if (!pair) break;
        offset = (pair.key as Node | null)?.range?.[0] ?? offset;
        node = pair.value;
      } else if (isSeq(node) && typeof key === 'number' && node.items[key]) {
        node = node.items[key];
        offset = (node as Node).range?.[0] ?? offset;
      } else break;
    }
    const pos = this.lines.linePos(offset);
    return { file: this.file, line: pos.line, column: pos.col };
  }
}
