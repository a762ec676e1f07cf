import { MinidalleError } from '../errors.js';

/** Base class of everything the run store throws on purpose. */
export class RunStoreError extends MinidalleError {
  override name = 'RunStoreError';
}

/** No run directory matches an id or prefix. */
export class RunNotFoundError extends RunStoreError {
  override name = 'RunNotFoundError';
  constructor(
    readonly query: string,
    readonly root: string,
  ) {
    super(`no run matches '${query}' in ${root} (\`minidalle ls\` lists the runs)`);
  }
}

/** A prefix matches more than one run. */
export class AmbiguousRunIdError extends RunStoreError {
  override name = 'AmbiguousRunIdError';
  constructor(
    readonly query: string,
    readonly candidates: string[],
  ) {
    const shown = candidates.slice(0, 10).join(', ');
    const more = candidates.length > 10 ? ` and ${candidates.length - 10} more` : '';
    super(`run id prefix '${query}' matches ${candidates.length} runs (${shown}${more}); give more characters`);
  }
}

/** run.json exists but cannot be used: names the file, the field and what was expected. */
export class RunRecordError extends RunStoreError {
  override name = 'RunRecordError';
  constructor(
    readonly file: string,
    readonly field: string,
    readonly expected: string,
  ) {
    super(`${file}: ${field === '' ? 'the file' : `field '${field}'`} is invalid: ${expected}`);
  }
}

/** A bad argument to the store (step, metric name, key, …). */
export class RunUsageError extends RunStoreError {
  override name = 'RunUsageError';
}

/** A checkpoint could not be written or read. */
export class CheckpointError extends RunStoreError {
  override name = 'CheckpointError';
}

/** A media file is not what it claims to be (e.g. not a PNG). */
export class MediaError extends RunStoreError {
  override name = 'MediaError';
}
