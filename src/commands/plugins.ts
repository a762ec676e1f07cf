import { z } from 'zod';
import type { PluginRegistry } from '../core/plugins/registry.js';

interface JsonSchema {
  type?: string | string[];
  description?: string;
  default?: unknown;
  enum?: unknown[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  anyOf?: JsonSchema[];
}

function typeOf(s: JsonSchema): string {
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(' | ');
  if (s.anyOf) return s.anyOf.map(typeOf).join(' | ');
  if (s.type === 'array' && s.items) return `${typeOf(s.items)}[]`;
  return Array.isArray(s.type) ? s.type.join(' | ') : (s.type ?? 'any');
}

/** Each plugin with the fields of its `with:` block: type, default, description. */
export function describePlugins(registry: PluginRegistry): string {
  const out: string[] = [];
  for (const { plugin, source } of registry.all()) {
    out.push(`${plugin.name}${plugin.version ? ` v${plugin.version}` : ''} — ${plugin.description}  [${source}]`);
    let schema: JsonSchema;
    try {
      schema = z.toJSONSchema(plugin.config, { io: 'input', unrepresentable: 'any' }) as JsonSchema;
    } catch {
      out.push('    (schema not representable)');
      continue;
    }
    for (const [key, field] of Object.entries(schema.properties ?? {})) {
      const required = schema.required?.includes(key) && field.default === undefined ? ' (required)' : '';
      const def = field.default !== undefined ? ` = ${JSON.stringify(field.default)}` : '';
      out.push(`    ${key}: ${typeOf(field)}${def}${required}${field.description ? `  — ${field.description}` : ''}`);
    }
    out.push('');
  }
  return out.length ? out.join('\n').trimEnd() : 'no plugins installed';
}
