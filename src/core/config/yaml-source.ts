import { readFileSync } from 'node:fs';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node } from 'yaml';
import { ConfigError, type SourceLocation } from '../errors.js';

/** A parsed YAML file that can say on which line any key path stands. */
export class YamlSource {
  private constructor(
    readonly file: string,
    readonly doc: Document,
    private readonly lines: LineCounter,
  ) {}

  /**
   * Parses safely: the core schema only (no tags that build objects or run code), duplicate keys are errors,
   * and an unknown tag is an error rather than a warning.
   */
  static read(file: string, text?: string): YamlSource {
    let src: string;
    try {
      src = text ?? readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError([{ path: [], message: `cannot read the file: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, location: { file } }]);
    }
    const lines = new LineCounter();
    const doc = parseDocument(src, { lineCounter: lines, schema: 'core', uniqueKeys: true, prettyErrors: true, strict: true });
    const problems = [...doc.errors, ...doc.warnings].map((e) => ({
      path: [] as string[],
      message: `invalid YAML: ${e.message.split('\n')[0]}`,
      location: { file, line: e.linePos?.[0].line, column: e.linePos?.[0].col },
    }));
    if (problems.length > 0) throw new ConfigError(problems);
    const source = new YamlSource(file, doc, lines);
    if (doc.contents !== null && !isMap(doc.contents)) {
      throw new ConfigError([{ path: [], message: 'expected a mapping of keys (name:, stages:, …) at the top level', location: source.locate([]) }]);
    }
    return source;
  }

  /** Plain JS value of the document (`{}` for an empty file). */
  value(): Record<string, unknown> {
    return (this.doc.toJS({ maxAliasCount: 100 }) ?? {}) as Record<string, unknown>;
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
