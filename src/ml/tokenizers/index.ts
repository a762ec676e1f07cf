/** Text tokenizers: Hugging Face tokenizer.json / vocab.json + merges.txt loading, encoding, and a byte-level BPE trainer. */
export { TokenizerError } from './errors.js';
export { BYTE_TO_CHAR, GPT2_SPLIT_PATTERN, byteLevelPreTokens } from './bytelevel.js';
export {
  TextTokenizer,
  type AddedTokenJson,
  type ComponentJson,
  type DecodeOptions,
  type EncodeBatchOptions,
  type EncodeOptions,
  type Encoded,
  type EncodedBatch,
  type ModelJson,
  type SpecialTokenNames,
  type TokenizerJson,
} from './tokenizer.js';
export { byteLevelJsonFromVocab, loadTokenizer, parseMergesTxt, saveTokenizer, tokenizerFromJson, validateTokenizerJson, withSwappedIds } from './load.js';
export { BART_SPECIAL_TOKENS, trainByteLevelBpe, trainByteLevelBpeJson, type TrainByteLevelBpeOptions } from './train.js';
