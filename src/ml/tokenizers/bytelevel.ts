/**
 * Byte-level BPE building blocks shared by the tokenizer and the trainer: GPT-2's byte → unicode map and its
 * pre-tokenization regex, written so JavaScript matches what the Rust `tokenizers` library (Oniguruma) matches.
 *
 * JavaScript's `\s` and Oniguruma's differ: Oniguruma's is Unicode White_Space (includes U+0085 NEL, excludes
 * U+FEFF), JavaScript's excludes U+0085 and includes U+FEFF. GPT-2-style JS ports (gpt-3-encoder, js-tiktoken,
 * @huggingface/tokenizers' own ByteLevel) use the JS one and so split "a \u0085b" or " \uFEFFy" differently
 * from the Hugging Face library; this pattern spells the Oniguruma set out.
 */

/** Unicode White_Space, i.e. Oniguruma's `\s` for UTF-8 text. */
const WS = '\\t\\n\\v\\f\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';

/** GPT-2's pre-tokenizer: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`. */
export const GPT2_SPLIT_PATTERN = new RegExp(
  `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^${WS}\\p{L}\\p{N}]+|[${WS}]+(?![^${WS}])|[${WS}]+`,
  'gu',
);

/** GPT-2's `bytes_to_unicode`: printable bytes map to themselves, the others to U+0100 onwards. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const out: string[] = new Array<string>(256);
  let n = 0;
  for (let b = 0; b < 256; b++) out[b] = String.fromCharCode(printable(b) ? b : 256 + n++);
  return out;
})();

const encoder = new TextEncoder();

/** A piece of text in the byte-level alphabet: its UTF-8 bytes, each as its BYTE_TO_CHAR symbol. */
export function toByteLevel(piece: string): string {
  let out = '';
  for (let i = 0; i < piece.length; i++) {
    const c = piece.charCodeAt(i);
    if (c >= 0x80) {
      // Not ASCII: go through UTF-8 (the ASCII loop above is the common case, and needs no encoder).
      out = '';
      for (const b of encoder.encode(piece)) out += BYTE_TO_CHAR[b] as string;
      return out;
    }
    out += BYTE_TO_CHAR[c] as string;
  }
  return out;
}

/**
 * The ByteLevel pre-tokenizer: text → GPT-2 pre-tokens (when `useRegex`), each written in the byte-level
 * alphabet (`" world"` → `"Ġworld"`); `addPrefixSpace` puts a space before text that has none.
 */
export function byteLevelPreTokens(text: string, addPrefixSpace = false, useRegex = true): string[] {
  const t = addPrefixSpace && !text.startsWith(' ') ? ` ${text}` : text;
  const pieces = useRegex ? (t.match(GPT2_SPLIT_PATTERN) ?? []) : [t];
  return pieces.map(toByteLevel);
}

/**
 * The Rust library's `Lowercase` normalizer: each code point lowercased on its own. JavaScript's
 * `toLowerCase` also applies the one context-dependent rule (Final_Sigma: "ΟΔΥΣΣΕΥΣ" → "οδυσσευς"), which
 * Rust's per-character mapping does not ("οδυσσευσ"); so text with Σ is lowercased character by character.
 */
export function lowercaseLikeRust(text: string): string {
  if (!text.includes('\u03a3')) return text.toLowerCase();
  let out = '';
  for (const c of text) out += c.toLowerCase();
  return out;
}
