/**
 * Hard negative captions by word swaps, as NegCLIP builds them: the caption with one attribute word changed
 * ("a red circle" → "a red square"), or two words of one kind exchanged ("a red circle on blue" → "a blue
 * circle on red"). A contrastive model trained against them must bind each word to what it describes, which
 * random in-batch captions almost never ask of it.
 *
 * Words come in groups of interchangeable kinds (shapes, colours, positions, …). An entry of a group is one
 * meaning: a word, or a list of synonyms (`[top, upper]`), so a replacement never swaps a word for a synonym
 * and makes a "negative" that is true.
 */

/** Groups of interchangeable words; each entry is a word or a list of synonyms. */
export type WordGroups = ReadonlyArray<ReadonlyArray<string | readonly string[]>>;

export class NegativesError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NegativesError';
  }
}

interface Meaning {
  group: number;
  entry: number;
}

/** Word (lowercase) → its group and entry; a word in two entries is refused (its meaning would be ambiguous). */
function indexWords(groups: WordGroups): Map<string, Meaning> {
  const index = new Map<string, Meaning>();
  groups.forEach((g, group) => {
    if (g.length < 2) throw new NegativesError(`word group ${group + 1} has ${g.length} entr${g.length === 1 ? 'y' : 'ies'}; a swap needs at least 2`);
    g.forEach((e, entry) => {
      for (const w of typeof e === 'string' ? [e] : e) {
        const word = w.toLowerCase();
        if (!/^[\p{L}\p{N}'-]+$/u.test(word)) throw new NegativesError(`word group ${group + 1}: "${w}" is not a single word`);
        const seen = index.get(word);
        if (seen) throw new NegativesError(`"${w}" is in word group ${seen.group + 1} and word group ${group + 1}; each word may have one meaning`);
        index.set(word, { group, entry });
      }
    });
  });
  return index;
}

interface Occurrence extends Meaning {
  start: number;
  end: number;
}

/** Builds captions' hard negatives for one set of word groups. */
export class WordSwapNegatives {
  private readonly index: Map<string, Meaning>;

  constructor(private readonly groups: WordGroups) {
    if (groups.length === 0) throw new NegativesError('no word groups: give at least one group of interchangeable words');
    this.index = indexWords(groups);
  }

  /**
   * One hard negative of `caption`, or null when no word of it is in a group. `uniform` draws in [0, 1).
   * Every edit is equally likely: replacing one grouped word by a word of another entry of its group (not
   * one the caption already uses), or exchanging two words of one group that mean different things.
   */
  negative(caption: string, uniform: () => number): string | null {
    const found: Occurrence[] = [];
    for (const m of caption.matchAll(/[\p{L}\p{N}'-]+/gu)) {
      const meaning = this.index.get(m[0].toLowerCase());
      if (meaning) found.push({ ...meaning, start: m.index, end: m.index + m[0].length });
    }
    type Edit = { kind: 'replace'; at: Occurrence; by: string[] } | { kind: 'exchange'; a: Occurrence; b: Occurrence };
    const edits: Edit[] = [];
    for (const at of found) {
      const used = new Set(found.filter((o) => o.group === at.group).map((o) => o.entry));
      const by = this.groups[at.group]!.flatMap((e, entry) => (used.has(entry) ? [] : [typeof e === 'string' ? e : (e[0] as string)]));
      if (by.length) edits.push({ kind: 'replace', at, by });
    }
    for (let i = 0; i < found.length; i++)
      for (let j = i + 1; j < found.length; j++) {
        const a = found[i]!;
        const b = found[j]!;
        if (a.group === b.group && a.entry !== b.entry) edits.push({ kind: 'exchange', a, b });
      }
    if (edits.length === 0) return null;
    const pick = <T>(xs: readonly T[]): T => xs[Math.min(xs.length - 1, Math.floor(uniform() * xs.length))] as T;
    const edit = pick(edits);
    const word = (o: Occurrence): string => caption.slice(o.start, o.end);
    const splice = (parts: Array<{ o: Occurrence; text: string }>): string => {
      let out = '';
      let at = 0;
      for (const { o, text } of [...parts].sort((x, y) => x.o.start - y.o.start)) {
        out += caption.slice(at, o.start) + text;
        at = o.end;
      }
      return out + caption.slice(at);
    };
    if (edit.kind === 'replace') return splice([{ o: edit.at, text: pick(edit.by) }]);
    return splice([
      { o: edit.a, text: word(edit.b) },
      { o: edit.b, text: word(edit.a) },
    ]);
  }
}
