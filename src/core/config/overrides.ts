import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../errors.js';
import type { PluginRegistry } from '../plugins/registry.js';

/**
 * Command-line overrides, Hydra's small grammar:
 *   `a.b=1`    set (the key may be new only where the schema allows it; validation says otherwise)
 *   `+a.b=1`   add a key that must not exist yet
 *   `++a.b=1`  add or overwrite: never an error for being set or not (Hydra's spelling; here it behaves as `a.b=1`,
 *              whose new keys the schema checks anyway)
 *   `~a.b`     delete a key (e.g. `~stages.push` drops a stage); `~a.list.2` removes that list item
 * A path segment of digits is a list index where the value there is a list (`stages.vqgan.with.model.ch_mult.1=4`);
 * on a mapping it is an ordinary key.
 * Values are YAML flow scalars: `10`, `true`, `[a,b]`, `{x: 1}`, `"quoted"`.
 */
export interface Override {
  op: 'set' | 'add' | 'upsert' | 'delete';
  path: string[];
  value?: unknown;
  text: string;
}

const KEY = /^[A-Za-z_][\w-]*$/;
const INDEX = /^\d+$/;

/** Why `text` is not a key path (`a.b.0.c`), or '' when it is one. */
export function keyPathProblem(text: string): string {
  const path = text.split('.');
  if (INDEX.test(path[0]!)) return `a path starts with a key, not a list index ('${path[0]}')`;
  for (const k of path) if (!KEY.test(k) && !INDEX.test(k)) return `'${k}' is not a valid key (letters, digits, '_' and '-') or list index (digits)`;
  return '';
}

export function parseOverride(text: string): Override {
  const bad = (why: string): never => {
    throw new ConfigError([{ path: [], message: `bad override '${text}': ${why}`, origin: 'command line' }]);
  };
  let op: Override['op'] = 'set';
  let body = text;
  if (body.startsWith('~')) {
    op = 'delete';
    body = body.slice(1);
  } else if (body.startsWith('++')) {
    op = 'upsert';
    body = body.slice(2);
  } else if (body.startsWith('+')) {
    op = 'add';
    body = body.slice(1);
  }
  const eq = body.indexOf('=');
  if (op === 'delete' && eq >= 0) bad("'~key' deletes a key and takes no value");
  if (op !== 'delete' && eq < 0) bad("expected 'key.path=value' (or '~key.path' to delete)");
  const keyText = op === 'delete' ? body : body.slice(0, eq);
  const problem = keyPathProblem(keyText);
  if (problem) bad(problem);
  const path = keyText.split('.');
  if (op === 'delete') return { op, path, text };
  let value: unknown;
  try {
    value = parseYaml(body.slice(eq + 1), { schema: 'core' });
  } catch (err) {
    bad(`the value is not valid YAML (${(err as Error).message.split('\n')[0]})`);
  }
  return { op, path, value: value ?? null, text };
}

type Tree = Record<string, unknown>;
type Container = Tree | unknown[];

function isTree(v: unknown): v is Tree {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * The value a key path would have if the experiment does not set it (a plugin's default), or undefined.
 * An index override into a list the file leaves to the plugin (`…model.ch_mult.1=4`) changes that default list.
 */
export type DefaultAt = (path: string[], config: Tree) => unknown;

export interface ApplyOptions {
  defaultAt?: DefaultAt;
}

/** Applies overrides in order to a deep copy of `config`. */
export function applyOverrides(config: Tree, overrides: Override[], options: ApplyOptions = {}): Tree {
  const out = structuredClone(config);
  for (const o of overrides) {
    const fail = (why: string): never => {
      throw new ConfigError([{ path: o.path, message: why, origin: `command-line override '${o.text}'` }]);
    };
    const shown = (n: number) => o.path.slice(0, n).join('.');
    /** Index of `key` in `list` (the value at path[0..at)), or a failure naming the valid range. */
    const indexIn = (list: unknown[], key: string, at: number): number => {
      if (!INDEX.test(key)) fail(`'${shown(at)}' is a list, so it has items 0…${list.length - 1}, not a key '${key}'`);
      const i = Number(key);
      if (i >= list.length) fail(`'${shown(at)}' has ${list.length} item${list.length === 1 ? '' : 's'} (0…${list.length - 1}), so it has no item ${i}; set the whole list to change its length`);
      return i;
    };
    let node: Container = out;
    for (const [i, key] of o.path.slice(0, -1).entries()) {
      const nextKey = o.path[i + 1]!;
      if (Array.isArray(node)) {
        const item: unknown = node[indexIn(node, key, i)];
        if (!isTree(item) && !Array.isArray(item)) fail(`'${shown(i + 1)}' is ${item === null ? 'null' : `a ${typeof item}`}, so it has no ${INDEX.test(nextKey) ? 'item' : 'key'} '${nextKey}'`);
        node = item as Container;
        continue;
      }
      let next = node[key];
      if (next === undefined && o.op !== 'delete') {
        if (INDEX.test(nextKey)) {
          const fallback = options.defaultAt?.(o.path.slice(0, i + 1), out);
          if (!Array.isArray(fallback)) fail(`'${shown(i + 1)}' is not set (and has no default list), so it has no item ${nextKey}; set the whole list: ${shown(i + 1)}=[…]`);
          next = structuredClone(fallback);
        } else next = {};
        node[key] = next;
      } else if (!isTree(next) && !Array.isArray(next)) {
        fail(`'${shown(i + 1)}' is ${next === undefined ? 'not set' : 'not a mapping'}, so it has no key '${nextKey}'`);
      }
      node = next as Container;
    }
    const last = o.path[o.path.length - 1]!;
    if (Array.isArray(node)) {
      if (o.op === 'add') fail(`'${shown(o.path.length - 1)}' is a list: items are not added by index; set the whole list, or use '${o.path.join('.')}=…' to change item ${last}`);
      const i = indexIn(node, last, o.path.length - 1);
      if (o.op === 'delete') node.splice(i, 1);
      else node[i] = o.value;
    } else if (o.op === 'delete') {
      if (!(last in node)) fail(`cannot delete '${o.path.join('.')}': it is not set`);
      delete node[last];
    } else if (o.op === 'add' && last in node) {
      fail(`'${o.path.join('.')}' is already set; use '${o.path.join('.')}=…' (or '++${o.path.join('.')}=…') to change it`);
    } else {
      node[last] = o.value;
    }
  }
  return out;
}

/**
 * DefaultAt for `stages.<name>.with.<field…>`: what the stage's plugin fills in for that field, given the rest
 * of the stage's `with:` as it stands (so `…with.model.ch_mult.1=4` edits the plugin's default ch_mult).
 */
export function pluginDefaults(registry: PluginRegistry): DefaultAt {
  return (path, config) => {
    if (path[0] !== 'stages' || path[2] !== 'with' || path.length < 4) return undefined;
    const stage = (config.stages as Tree | undefined)?.[path[1]!];
    if (!isTree(stage) || typeof stage.plugin !== 'string') return undefined;
    const plugin = registry.get(stage.plugin);
    const parsed = plugin?.config.safeParse(isTree(stage.with) ? stage.with : {});
    if (!parsed?.success) return undefined;
    let v: unknown = parsed.data;
    for (const key of path.slice(3)) v = isTree(v) ? v[key] : Array.isArray(v) && INDEX.test(key) ? v[Number(key)] : undefined;
    return v;
  };
}
