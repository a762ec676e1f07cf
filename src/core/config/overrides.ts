import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../errors.js';

/**
 * Command-line overrides, Hydra's small grammar:
 *   `a.b=1`   set (the key may be new only where the schema allows it; validation says otherwise)
 *   `+a.b=1`  add a key that must not exist yet
 *   `~a.b`    delete a key (e.g. `~stages.push` drops a stage)
 * Values are YAML flow scalars: `10`, `true`, `[a,b]`, `{x: 1}`, `"quoted"`.
 */
export interface Override {
  op: 'set' | 'add' | 'delete';
  path: string[];
  value?: unknown;
  text: string;
}

const KEY = /^[A-Za-z_][\w-]*$/;

export function parseOverride(text: string): Override {
  const bad = (why: string): never => {
    throw new ConfigError([{ path: [], message: `bad override '${text}': ${why}`, origin: 'command line' }]);
  };
  let op: Override['op'] = 'set';
  let body = text;
  if (body.startsWith('~')) {
    op = 'delete';
    body = body.slice(1);
  } else if (body.startsWith('+')) {
    op = 'add';
    body = body.slice(1);
  }
  const eq = body.indexOf('=');
  if (op === 'delete' && eq >= 0) bad("'~key' deletes a key and takes no value");
  if (op !== 'delete' && eq < 0) bad("expected 'key.path=value' (or '~key.path' to delete)");
  const keyText = op === 'delete' ? body : body.slice(0, eq);
  const path = keyText.split('.');
  for (const k of path) if (!KEY.test(k)) bad(`'${k}' is not a valid key (letters, digits, '_' and '-')`);
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

function isTree(v: unknown): v is Tree {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Applies overrides in order to a deep copy of `config`. */
export function applyOverrides(config: Tree, overrides: Override[]): Tree {
  const out = structuredClone(config);
  for (const o of overrides) {
    const fail = (why: string): never => {
      throw new ConfigError([{ path: o.path, message: why, origin: `command-line override '${o.text}'` }]);
    };
    let node: Tree = out;
    for (const [i, key] of o.path.slice(0, -1).entries()) {
      const next = node[key];
      if (next === undefined && o.op !== 'delete') node[key] = {};
      else if (!isTree(next)) fail(`'${o.path.slice(0, i + 1).join('.')}' is ${next === undefined ? 'not set' : 'not a mapping'}, so it has no key '${o.path[i + 1]}'`);
      node = node[key] as Tree;
    }
    const last = o.path[o.path.length - 1]!;
    if (o.op === 'delete') {
      if (!(last in node)) fail(`cannot delete '${o.path.join('.')}': it is not set`);
      delete node[last];
    } else if (o.op === 'add' && last in node) {
      fail(`'${o.path.join('.')}' is already set; use '${o.path.join('.')}=…' to change it`);
    } else {
      node[last] = o.value;
    }
  }
  return out;
}
