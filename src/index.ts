// Public API for plugin packages.
export { definePlugin } from './core/plugins/types.js';
export type * from './core/plugins/types.js';
