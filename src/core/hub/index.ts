/** The Hugging Face Hub replica: push a folder as one commit, pull a revision into the cache (verified). */
export { modelCard, type ModelCardInput } from './model-card.js';
export { pullHubRepo, parseHubRef, hubCacheDir, type HubRef, type PullOptions, type PullResult } from './pull.js';
export { folderFiles, pushFolder, type PushFolderOptions, type PushResult } from './push.js';
export { checkRepoId, DEFAULT_HUB_URL, HubError, hubSettingsFromEnv, type HubSettings } from './settings.js';
