/**
 * Caption handling as in dalle-mini's text normalisation: repair mojibake, NFKC, HTML entities,
 * whitespace, optional lowercasing, a length limit, a choice of caption field, and seeded blanking
 * (empty caption with probability `blankProb`) for classifier-free guidance.
 */
import type { SourceItem } from './sources/types.js';
import { SeededRng } from './rng.js';

/** Windows-1252 characters in 0x80–0x9F, mapped back to their byte (they appear in UTF-8-read-as-cp1252 text). */
const CP1252: Record<string, number> = {
  '€': 0x80, '‚': 0x82, 'ƒ': 0x83, '„': 0x84, '…': 0x85, '†': 0x86, '‡': 0x87, 'ˆ': 0x88, '‰': 0x89, 'Š': 0x8a,
  '‹': 0x8b, 'Œ': 0x8c, 'Ž': 0x8e, '‘': 0x91, '’': 0x92, '“': 0x93, '”': 0x94, '•': 0x95, '–': 0x96, '—': 0x97,
  '˜': 0x98, '™': 0x99, 'š': 0x9a, '›': 0x9b, 'œ': 0x9c, 'ž': 0x9e, 'Ÿ': 0x9f,
};

/** Lead characters of UTF-8 sequences mis-decoded as cp1252/latin-1 ("Ã©", "â€™", "Â "). */
const MOJIBAKE_HINT = /[ÂÃâÅÆÐÑ][\u0080-\u00bf€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ]/;

/**
 * Repairs text that was UTF-8 but decoded as cp1252/latin-1 ("cafÃ©" → "café"). The repair is kept
 * only if every character maps back to a byte and the bytes are valid UTF-8, so correct text is untouched.
 */
export function fixMojibake(text: string): string {
  if (!MOJIBAKE_HINT.test(text)) return text;
  const bytes: number[] = [];
  for (const ch of text) {
    const code = ch.codePointAt(0) as number;
    if (code < 0x100) bytes.push(code);
    else if (CP1252[ch] !== undefined) bytes.push(CP1252[ch]);
    else return text;
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(bytes));
  } catch {
    return text;
  }
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: ' ', '#39': "'" };

function unescapeHtml(text: string): string {
  return text.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+|#39);/gi, (m, name: string) => {
    const lower = name.toLowerCase();
    if (ENTITIES[lower] !== undefined) return ENTITIES[lower];
    const code = lower.startsWith('#x') ? parseInt(lower.slice(2), 16) : lower.startsWith('#') ? parseInt(lower.slice(1), 10) : NaN;
    return Number.isFinite(code) && code > 0 && code < 0x110000 ? String.fromCodePoint(code) : m;
  });
}

export interface CaptionOptions {
  /** Fields tried in order: `txt` is the `.txt`/caption column; others are read from the item's JSON/meta. */
  fields: string[];
  lowercase: boolean;
  /** Maximum characters; longer captions are cut at the last word boundary. 0 = no limit. */
  maxChars: number;
  /** Probability of replacing a caption by '' (classifier-free guidance), seeded. */
  blankProb: number;
}

export const DEFAULT_CAPTION_OPTIONS: CaptionOptions = { fields: ['txt'], lowercase: false, maxChars: 0, blankProb: 0 };

/** Normalises one caption string (no field choice, no blanking). */
export function normalizeCaption(text: string, options: Pick<CaptionOptions, 'lowercase' | 'maxChars'> = DEFAULT_CAPTION_OPTIONS): string {
  let t = fixMojibake(text);
  t = unescapeHtml(t);
  t = t.normalize('NFKC');
  // Control and zero-width characters carry no meaning for the tokenizer.
  t = t.replace(/[\u0000-\u001f\u007f-\u009f\u200b-\u200d\u2060\ufeff]/g, ' ');
  t = t.replace(/\s+/g, ' ').trim();
  if (options.lowercase) t = t.toLowerCase();
  if (options.maxChars > 0 && t.length > options.maxChars) {
    const cut = t.slice(0, options.maxChars + 1);
    const space = cut.lastIndexOf(' ');
    t = (space > options.maxChars / 2 ? cut.slice(0, space) : t.slice(0, options.maxChars)).trim();
  }
  return t;
}

function fieldText(value: unknown): string {
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === 'string').join(', ');
  return '';
}

/** The first non-empty (after normalisation) of the configured fields, or undefined when there is none. */
export function pickCaption(item: Pick<SourceItem, 'caption' | 'meta'>, options: CaptionOptions): string | undefined {
  for (const field of options.fields) {
    const raw = field === 'txt' || field === 'caption' ? item.caption || fieldText(item.meta[field]) : fieldText(item.meta[field]);
    const text = normalizeCaption(raw, options);
    if (text !== '') return text;
  }
  return undefined;
}

/** Applies field choice, normalisation and blanking with a caller-supplied generator (seeded per item). */
export function processCaption(item: Pick<SourceItem, 'caption' | 'meta'>, options: CaptionOptions, rng: SeededRng): { caption: string; blanked: boolean } | undefined {
  const caption = pickCaption(item, options);
  if (caption === undefined) return undefined;
  if (options.blankProb > 0 && rng.next() < options.blankProb) return { caption: '', blanked: true };
  return { caption, blanked: false };
}
