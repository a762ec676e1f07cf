import { MinidalleError } from '../../core/errors.js';

/**
 * A tokenizer file that is missing or not what was expected, or an encode/decode request it cannot meet.
 * `file` names the tokenizer file (or folder) involved, when there is one.
 */
export class TokenizerError extends MinidalleError {
  override name = 'TokenizerError';
  constructor(
    message: string,
    readonly file?: string,
  ) {
    super(file === undefined ? message : `${file}: ${message}`);
  }
}
