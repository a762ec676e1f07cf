export { WandbClient } from './client.js';
export type { FileStreamBody, ResumeStatus, UpsertRunInput } from './client.js';
export { WandbError, DEFAULT_RETRY, backoffDelay, parseRetryAfter } from './http.js';
export type { RetryPolicy } from './http.js';
export { appUrl, runUrl, groupUrl, wandbMode, baseUrlFrom, WandbConfigError, DEFAULT_BASE_URL } from './settings.js';
export type { WandbSettings, WandbTracking, WandbMode } from './settings.js';
export { pushArtifact, pullArtifact, parseArtifactRef, checkpointArtifacts, manifestDigest, ArtifactDigestError } from './artifacts.js';
export type { PushArtifactOptions, PushedArtifact, PullArtifactOptions, CheckpointArtifact, ArtifactFile } from './artifacts.js';
