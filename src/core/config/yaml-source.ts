import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, visit, type Document, type Node, type Pair, type YAMLMap } from 'yaml';
import { ConfigError, type SourceLocation } from '../errors.js';

/** Config files are small; anything bigger is a mistake (a dataset, a log), refused before it fills memory. */
export const MAX_CONFIG_BYTES = 5 * 1024 * 1024;
/** Aliases a document may expand (an alias bomb expands a few lines into gigabytes). */
const MAX_ALIASES = 100;
/** Merge keys a lookup follows into merged mappings, themselves merging (a bound: merges may not loop, but a bug must not hang). */
const MAX_MERGE_DEPTH = 20;

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
   * and an unknown tag is an error rather than a warning. `<<` merge keys (YAML 1.1's, as in GitHub Actions and
   * docker-compose files) are on: `model: { <<: *model, decoder_layers: 3 }` reuses a block with one change.
   */
  static read(file: string, text?: string, options: ReadOptions = {}): YamlSource {
    const quote = options.quote ?? true;
    const src = text ?? readConfigFile(file);
    const lines = new LineCounter();
    const doc = parseDocument(src, { lineCounter: lines, schema: 'core', merge: true, uniqueKeys: true, prettyErrors: true, strict: true });
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

  /** Whether the key `path` is written in this file, directly or through a `<<` merge key. */
  has(path: (string | number)[]): boolean {
    return this.walk(path).found;
  }

  /**
   * Line of the key `path` (the key itself, so "unknown key" points at it), or of its nearest existing ancestor.
   * A key that a mapping takes from a `<<` merge is located where the merged mapping writes it.
   */
  locate(path: (string | number)[]): SourceLocation {
    const pos = this.lines.linePos(this.walk(path).offset);
    return { file: this.file, line: pos.line, column: pos.col };
  }

  /** How far `path` goes in the document: whether all of it, and the offset of the last key found. */
  private walk(path: (string | number)[]): { found: boolean; offset: number } {
    let node: unknown = this.doc.contents;
    let offset = (node as Node | null)?.range?.[0] ?? 0;
    for (const key of path) {
      if (isMap(node)) {
        const pair = this.pairOf(node, key, 0);
        if (!pair) return { found: false, offset };
        offset = (pair.key as Node | null)?.range?.[0] ?? offset;
        node = pair.value;
      } else if (isSeq(node) && typeof key === 'number' && node.items[key]) {
        node = node.items[key];
        offset = (node as Node).range?.[0] ?? offset;
      } else return { found: false, offset };
      if (isAlias(node)) node = node.resolve(this.doc);
    }
    return { found: true, offset };
  }

  /** The pair of `key` in `map`: its own, else from its merge keys' mappings, first merged first (YAML's merge order). */
  private pairOf(map: YAMLMap, key: string | number, depth: number): Pair | undefined {
    const keyOf = (p: Pair): unknown => (isScalar(p.key) ? p.key.value : p.key);
    const own = map.items.find((p) => keyOf(p) === key);
    if (own || depth >= MAX_MERGE_DEPTH) return own;
    // with `merge: true`, yaml parses the key `<<` as a symbol (its MERGE_KEY), so a quoted '<<' stays an ordinary key
    const isMerge = (p: Pair): boolean => {
      const k = keyOf(p);
      return typeof k === 'symbol' && k.description === '<<';
    };
    for (const merge of map.items.filter(isMerge)) {
      const sources = isSeq(merge.value) ? merge.value.items : [merge.value];
      for (const source of sources) {
        const merged = isAlias(source) ? source.resolve(this.doc) : source;
        const pair = isMap(merged) ? this.pairOf(merged, key, depth + 1) : undefined;
        if (pair) return pair;
      }
    }
    return undefined;
  }
}
