export { RunStore, RunHandle, sanitizeKey } from './store.js';
export type { RunStoreOptions, CheckpointsOptions, ImageFileValue, BestValue } from './store.js';
export type { RunRecord, RunStatus, RunInit } from './record.js';
export { RUN_STATUSES, parseRunRecord } from './record.js';
export { newRunId, isRunId } from './ids.js';
export { pngSize } from './png.js';
export type { OutputLog, OutputStream } from './output-log.js';
export type { RunCheckpoints, CheckpointManifest, WarningSink } from './checkpoints.js';
export {
  RunStoreError,
  RunNotFoundError,
  AmbiguousRunIdError,
  RunRecordError,
  RunUsageError,
  CheckpointError,
  MediaError,
} from './errors.js';
export { tryLockFingerprint, FingerprintLock } from './locks.js';
export type { LockOwner, LockAttempt } from './locks.js';
export { writeArtifactManifest, readArtifactManifest, verifyArtifacts, ArtifactError, ARTIFACT_MANIFEST } from './artifacts.js';
export type { ArtifactManifest } from './artifacts.js';
