import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { MinidalleError } from '../errors.js';
import type { Plugin } from './types.js';

export class PluginError extends MinidalleError {
  override name = 'PluginError';
}

export interface LoadedPlugin {
  plugin: Plugin;
  /** Where it came from: `built-in (plugins/shapes-data)` or `package minidalle-plugin-x`. */
  source: string;
}

const NAME = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;
const HOOKS = new Set(['runStart', 'metrics', 'checkpoint', 'runEnd']);

/** Checks the shape of what a module exported, so a broken plugin fails at load with a message, not mid-run. */
export function checkPluginShape(value: unknown, source: string): Plugin {
  const fail = (why: string): never => {
    throw new PluginError(`${source} does not export a valid plugin: ${why}. A plugin module's default export is definePlugin({ name, description, config, run }).`);
  };
  if (typeof value !== 'object' || value === null) return fail(`got ${value === null ? 'null' : typeof value}`);
  const p = value as Record<string, unknown>;
  if (typeof p.name !== 'string' || !NAME.test(p.name)) fail(`'name' must be a kebab-case string, got ${JSON.stringify(p.name)}`);
  if (typeof p.description !== 'string') fail(`'description' must be a string`);
  const schema = p.config as { safeParse?: unknown } | undefined;
  if (typeof schema?.safeParse !== 'function') fail(`'config' must be a zod schema`);
  if (typeof p.run !== 'function') fail(`'run' must be an async function`);
  if (p.hooks !== undefined) {
    if (typeof p.hooks !== 'object' || p.hooks === null) fail(`'hooks' must be an object`);
    for (const [k, v] of Object.entries(p.hooks as object)) {
      if (!HOOKS.has(k)) fail(`unknown hook '${k}' (hooks: ${[...HOOKS].join(', ')})`);
      if (typeof v !== 'function') fail(`hook '${k}' must be a function`);
    }
  }
  return value as Plugin;
}

export class PluginRegistry {
  private readonly byName = new Map<string, LoadedPlugin>();

  add(plugin: Plugin, source: string): void {
    const checked = checkPluginShape(plugin, source);
    const existing = this.byName.get(checked.name);
    if (existing) throw new PluginError(`two plugins are named '${checked.name}': ${existing.source} and ${source}. Rename one of them.`);
    this.byName.set(checked.name, { plugin: checked, source });
  }

  get(name: string): Plugin | undefined {
    return this.byName.get(name)?.plugin;
  }

  names(): string[] {
    return [...this.byName.keys()].sort();
  }

  all(): LoadedPlugin[] {
    return this.names().map((n) => this.byName.get(n)!);
  }
}

/** Folder of the built-in plugins: `plugins/` beside `src/` (or `dist/plugins` when running compiled). */
export function builtinPluginDir(): string {
  return fileURLToPath(new URL('../../../plugins/', import.meta.url));
}

async function importDefault(url: string, source: string): Promise<unknown> {
  try {
    const mod = (await import(url)) as { default?: unknown };
    return mod.default;
  } catch (err) {
    throw new PluginError(`cannot load ${source}: ${(err as Error).message}`);
  }
}

/**
 * Discovers the built-in plugins (`plugins/<name>/index.{js,ts}`) and the npm packages named in the project
 * config (resolved from the project directory; default export: a plugin or an array of plugins).
 */
export async function loadPlugins(options: { packages?: string[]; projectDir?: string; builtinDir?: string } = {}): Promise<PluginRegistry> {
  const registry = new PluginRegistry();
  const dir = options.builtinDir ?? builtinPluginDir();
  const entries = existsSync(dir) ? readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name).sort() : [];
  const loaded = await Promise.all(
    entries.map(async (name) => {
      const file = ['index.js', 'index.ts'].map((f) => join(dir, name, f)).find((f) => existsSync(f));
      if (!file) return undefined;
      const source = `built-in plugin plugins/${name}`;
      return { source, value: await importDefault(pathToFileURL(file).href, source) };
    }),
  );
  for (const l of loaded) if (l) registry.add(l.value as Plugin, l.source);

  const require = createRequire(join(options.projectDir ?? process.cwd(), 'package.json'));
  for (const pkg of options.packages ?? []) {
    const source = `package '${pkg}'`;
    let resolved: string;
    try {
      resolved = require.resolve(pkg);
    } catch {
      throw new PluginError(`the project config names plugin package '${pkg}', but it is not installed here: run \`npm install ${pkg}\``);
    }
    const value = await importDefault(pathToFileURL(resolved).href, source);
    for (const p of Array.isArray(value) ? value : [value]) registry.add(p as Plugin, source);
  }
  return registry;
}
