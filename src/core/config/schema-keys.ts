import type { z } from 'zod';

/** Loose view of zod internals used only to walk schemas for key suggestions and defaults. */
interface Walkable {
  shape?: Record<string, z.ZodType>;
  unwrap?: () => z.ZodType;
  def?: { innerType?: z.ZodType; valueType?: z.ZodType; element?: z.ZodType; type?: string };
}

function unwrap(schema: z.ZodType): z.ZodType {
  let s = schema as unknown as Walkable;
  for (let i = 0; i < 10; i++) {
    const inner = s.def?.innerType ?? (s.shape === undefined && typeof s.unwrap === 'function' && s.def?.type !== 'array' ? s.unwrap() : undefined);
    if (!inner) break;
    s = inner as unknown as Walkable;
  }
  return s as unknown as z.ZodType;
}

/** The object schema at `path` inside `schema` (through defaults, optionals, records and arrays), if any. */
export function schemaAt(schema: z.ZodType, path: (string | number)[]): z.ZodType | undefined {
  let s: z.ZodType | undefined = unwrap(schema);
  for (const key of path) {
    if (!s) return undefined;
    const w = s as unknown as Walkable;
    if (w.shape) s = w.shape[String(key)];
    else if (w.def?.type === 'record') s = w.def.valueType;
    else if (w.def?.type === 'array') s = w.def.element;
    else return undefined;
    s = s ? unwrap(s) : undefined;
  }
  return s;
}

/** Keys an object schema accepts at `path`. */
export function keysAt(schema: z.ZodType, path: (string | number)[]): string[] {
  const s = schemaAt(schema, path) as unknown as Walkable | undefined;
  return s?.shape ? Object.keys(s.shape) : [];
}

/** Defaults of an object schema's fields (fields without a default are left out). */
export function objectDefaults(schema: z.ZodType): Record<string, unknown> {
  const s = unwrap(schema) as unknown as Walkable;
  const out: Record<string, unknown> = {};
  for (const [k, field] of Object.entries(s.shape ?? {})) {
    const r = field.safeParse(undefined);
    if (r.success && r.data !== undefined) out[k] = r.data;
  }
  return out;
}
