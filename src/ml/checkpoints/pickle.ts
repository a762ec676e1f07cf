/**
 * A restricted Python unpickler: it reads the pickles PyTorch writes (`torch.save`, protocols 2–5) and
 * builds only data — None/bools/ints/floats/strings/bytes, lists, tuples, dicts, sets — plus the few
 * objects a caller allows by their global name (tensors, storages, OrderedDict).
 *
 * Nothing is ever executed: a pickle names a global (`GLOBAL`/`STACK_GLOBAL`) and then calls it
 * (`REDUCE`, `NEWOBJ`) or sets its state (`BUILD`). A global outside the allow-list becomes an inert
 * `PyGlobal` reference, harmless as a value (Lightning pickles callback classes as dict keys); calling
 * it, or building any object from it, is a `PickleRefusedError` that names the global, e.g.
 * `posix.system`. The opcodes that exist only to run code or reach outside the pickle (`INST`, `OBJ`
 * with an unknown class, `EXT*` registry lookups) are refused the same way.
 *
 * Persistent ids (`BINPERSID`/`PERSID`: how torch refers to the tensor storages kept outside the
 * pickle) are handed to the caller's `persistentLoad`.
 */

export class PickleError extends Error {
  constructor(
    readonly source: string,
    problem: string,
  ) {
    super(`${source}: ${problem}`);
    this.name = 'PickleError';
  }
}

/** The pickle wanted to run something outside the allow-list; nothing was run. */
export class PickleRefusedError extends PickleError {
  constructor(
    source: string,
    readonly global: string,
    what: string,
  ) {
    super(
      source,
      `refused to ${what} \`${global}\`: this checkpoint's pickle wants to run code, and only tensors, storages, OrderedDict, dicts, lists, tuples, numbers and strings are built (nothing was executed). Load it only if you trust its origin, in Python, and re-save its state_dict.`,
    );
    this.name = 'PickleRefusedError';
  }
}

/** A reference to a Python global the pickle named but that is not allowed to be called. */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualified(): string {
    return `${this.module}.${this.name}`;
  }
}

/** A Python tuple (kept apart from lists so tensor metadata reads as what it is). */
export class PyTuple {
  constructor(readonly items: unknown[]) {}
}

/** A Python dict (or OrderedDict): insertion-ordered, keys as decoded (strings, numbers, tuples, …). */
export class PyDict {
  readonly entries = new Map<unknown, unknown>();
  /** attributes set by BUILD (a state_dict's `_metadata`), kept as data and otherwise ignored */
  readonly state: unknown[] = [];
  get(key: unknown): unknown {
    return this.entries.get(key);
  }
  set(key: unknown, value: unknown): void {
    this.entries.set(key, value);
  }
}

/** What an allowed global does when the pickle calls it: build a value from plain arguments. */
export type AllowedCall = (args: unknown[]) => unknown;

export interface UnpickleOptions {
  /** `module.name` → the builder the pickle may call; everything else is refused when called */
  allowed: ReadonlyMap<string, AllowedCall>;
  /** torch's persistent ids (storages); absent means a persistent id is an error */
  persistentLoad?: (pid: unknown) => unknown;
  /** names the pickle in errors (a path, or `file.ckpt:archive/data.pkl`) */
  source: string;
}

/** Where the pickle bytes come from: a buffer, or a file read piece by piece (legacy torch files). */
export interface PickleInput {
  /** the next n bytes (fewer only at the end of the input) */
  read(n: number): Uint8Array;
  /** bytes up to and including the next '\n' */
  readLine(): Uint8Array;
  /** offset of the next byte */
  readonly position: number;
}

export class BufferInput implements PickleInput {
  private pos = 0;
  constructor(private readonly buf: Uint8Array) {}
  get position(): number {
    return this.pos;
  }
  read(n: number): Uint8Array {
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += out.length;
    return out;
  }
  readLine(): Uint8Array {
    const end = this.buf.indexOf(0x0a, this.pos);
    return this.read(end < 0 ? this.buf.length - this.pos : end - this.pos + 1);
  }
}

const MARK = Symbol('mark');
const utf8 = new TextDecoder('utf-8', { fatal: true });
const latin1 = new TextDecoder('latin1');

/** Allowed builders that every torch pickle needs besides tensors. */
export const BASIC_ALLOWED: ReadonlyMap<string, AllowedCall> = new Map<string, AllowedCall>([
  ['collections.OrderedDict', (args) => {
    const d = new PyDict();
    // OrderedDict(iterable of pairs) is how some writers pass the items
    const items = args[0];
    if (Array.isArray(items)) for (const kv of items) if (kv instanceof PyTuple) d.set(kv.items[0], kv.items[1]);
    return d;
  }],
  // protocol 2 writes Python 3 bytes as _codecs.encode(text, 'latin1'): pure data
  ['_codecs.encode', (args) => {
    const [text, encoding] = args;
    if (typeof text !== 'string') throw new Error('_codecs.encode expects a string');
    if (encoding === 'latin1' || encoding === 'latin-1') return Uint8Array.from(text, (ch) => ch.charCodeAt(0) & 0xff);
    return new TextEncoder().encode(text);
  }],
  ['builtins.set', (args) => new Set(Array.isArray(args[0]) ? args[0] : [])],
  ['builtins.frozenset', (args) => new Set(Array.isArray(args[0]) ? args[0] : [])],
  ['builtins.bytearray', (args) => (args[0] instanceof Uint8Array ? args[0] : new Uint8Array())],
]);

/**
 * Reads one pickle from `input` (stopping at its STOP opcode) and returns the value it builds.
 * Throws `PickleRefusedError` for anything that would execute code, `PickleError` for a malformed pickle.
 */
export function unpickle(input: PickleInput, opts: UnpickleOptions): unknown {
  const src = opts.source;
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  const fail = (problem: string): never => {
    throw new PickleError(src, `${problem} (at byte ${input.position})`);
  };
  const bytes = (n: number): Uint8Array => {
    const b = input.read(n);
    if (b.length !== n) fail(`pickle ends early: wanted ${n} byte(s), got ${b.length}`);
    return b;
  };
  const dv = (n: number): DataView => {
    const b = bytes(n);
    return new DataView(b.buffer, b.byteOffset, b.byteLength);
  };
  const u8 = (): number => bytes(1)[0] as number;
  const u16 = (): number => dv(2).getUint16(0, true);
  const u32 = (): number => dv(4).getUint32(0, true);
  const u64 = (): number => {
    const v = dv(8).getBigUint64(0, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`length ${v} is too large`);
    return Number(v);
  };
  const line = (): string => {
    const l = input.readLine();
    if (l.length === 0 || l[l.length - 1] !== 0x0a) fail('pickle ends inside a text line');
    return latin1.decode(l.subarray(0, l.length - 1));
  };
  const pop = (): unknown => {
    if (stack.length === 0 || (marks.length && stack.length <= (marks[marks.length - 1] as number))) fail('stack underflow');
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0) fail('stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const m = marks.pop();
    if (m === undefined) fail('no MARK on the stack');
    return stack.splice(m as number);
  };
  const str = (b: Uint8Array): string => {
    try {
      return utf8.decode(b);
    } catch {
      return fail('string is not valid UTF-8');
    }
  };
  /** Python long from little-endian two's complement bytes. */
  const long = (b: Uint8Array): number | bigint => {
    if (b.length === 0) return 0;
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i] as number);
    if ((b[b.length - 1] as number) & 0x80) v -= 1n << BigInt(8 * b.length);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };
  const intFromText = (t: string): number | bigint | boolean => {
    if (t === '00') return false;
    if (t === '01') return true;
    const s = t.endsWith('L') ? t.slice(0, -1) : t;
    if (!/^[+-]?\d+$/.test(s)) return fail(`bad integer ${JSON.stringify(t)}`);
    const v = BigInt(s);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };
  const global = (module: string, name: string): unknown => {
    const q = `${module}.${name}`;
    return opts.allowed.has(q) ? { allowedGlobal: q } : new PyGlobal(module, name);
  };
  const call = (fn: unknown, args: unknown, what: string): unknown => {
    const argList = args instanceof PyTuple ? args.items : Array.isArray(args) ? args : fail(`${what} arguments must be a tuple`);
    if (fn instanceof PyGlobal) throw new PickleRefusedError(src, fn.qualified, 'call');
    const q = (fn as { allowedGlobal?: string } | null)?.allowedGlobal;
    const builder = q ? opts.allowed.get(q) : undefined;
    if (!builder) return fail(`${what} of something that is not a global (${describe(fn)})`);
    try {
      return builder(argList as unknown[]);
    } catch (e) {
      if (e instanceof PickleError) throw e;
      return fail(`${q}: ${(e as Error).message}`);
    }
  };
  const setItems = (target: unknown, items: unknown[]): void => {
    if (!(target instanceof PyDict)) fail(`SETITEM(S) on ${describe(target)}, not a dict`);
    if (items.length % 2) fail('SETITEMS with an odd number of items');
    for (let i = 0; i < items.length; i += 2) (target as PyDict).set(items[i], items[i + 1]);
  };
  const append = (target: unknown, items: unknown[]): void => {
    if (Array.isArray(target)) target.push(...items);
    else if (target instanceof Set) for (const i of items) target.add(i);
    else fail(`APPEND(S) on ${describe(target)}, not a list`);
  };

  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) fail('pickle protocol above 5');
        break;
      case 0x95: // FRAME: a length prefix only
        u64();
        break;
      case 0x2e: // STOP
        if (stack.length !== 1 || marks.length) fail(`pickle stops with ${stack.length} value(s) on the stack`);
        return stack[0];
      case 0x28: // MARK
        marks.push(stack.length);
        break;
      case 0x30: // POP
        if (marks.length && stack.length === marks[marks.length - 1]) marks.pop();
        else pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x4a: stack.push(dv(4).getInt32(0, true)); break; // BININT
      case 0x4b: stack.push(u8()); break; // BININT1
      case 0x4d: stack.push(u16()); break; // BININT2
      case 0x49: stack.push(intFromText(line())); break; // INT
      case 0x4c: stack.push(intFromText(line())); break; // LONG
      case 0x8a: stack.push(long(bytes(u8()))); break; // LONG1
      case 0x8b: stack.push(long(bytes(u32()))); break; // LONG4
      case 0x47: stack.push(dv(8).getFloat64(0, false)); break; // BINFLOAT (big-endian)
      case 0x46: stack.push(Number.parseFloat(line())); break; // FLOAT
      case 0x58: stack.push(str(bytes(u32()))); break; // BINUNICODE
      case 0x8c: stack.push(str(bytes(u8()))); break; // SHORT_BINUNICODE
      case 0x8d: stack.push(str(bytes(u64()))); break; // BINUNICODE8
      case 0x56: stack.push(line()); break; // UNICODE (raw-unicode-escape; ASCII in practice)
      case 0x54: stack.push(latin1.decode(bytes(u32()))); break; // BINSTRING (py2 str)
      case 0x55: stack.push(latin1.decode(bytes(u8()))); break; // SHORT_BINSTRING
      case 0x53: { // STRING: a quoted repr
        const t = line().trim();
        stack.push(t.length >= 2 && (t[0] === "'" || t[0] === '"') ? t.slice(1, -1) : fail('bad STRING'));
        break;
      }
      case 0x42: stack.push(bytes(u32()).slice()); break; // BINBYTES
      case 0x43: stack.push(bytes(u8()).slice()); break; // SHORT_BINBYTES
      case 0x8e: stack.push(bytes(u64()).slice()); break; // BINBYTES8
      case 0x96: stack.push(bytes(u64()).slice()); break; // BYTEARRAY8
      case 0x29: stack.push(new PyTuple([])); break; // EMPTY_TUPLE
      case 0x74: stack.push(new PyTuple(popMark())); break; // TUPLE
      case 0x85: stack.push(new PyTuple([pop()])); break; // TUPLE1
      case 0x86: { const b = pop(); const a = pop(); stack.push(new PyTuple([a, b])); break; } // TUPLE2
      case 0x87: { const c = pop(); const b = pop(); const a = pop(); stack.push(new PyTuple([a, b, c])); break; } // TUPLE3
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x6c: stack.push(popMark()); break; // LIST
      case 0x61: { const v = pop(); append(top(), [v]); break; } // APPEND
      case 0x65: { const items = popMark(); append(top(), items); break; } // APPENDS
      case 0x7d: stack.push(new PyDict()); break; // EMPTY_DICT
      case 0x64: { const d = new PyDict(); setItems(d, popMark()); stack.push(d); break; } // DICT
      case 0x73: { const v = pop(); const k = pop(); setItems(top(), [k, v]); break; } // SETITEM
      case 0x75: { const items = popMark(); setItems(top(), items); break; } // SETITEMS
      case 0x8f: stack.push(new Set()); break; // EMPTY_SET
      case 0x90: { const items = popMark(); append(top(), items); break; } // ADDITEMS
      case 0x91: stack.push(new Set(popMark())); break; // FROZENSET
      case 0x70: memo.set(intFromText(line()) as number, top()); break; // PUT
      case 0x71: memo.set(u8(), top()); break; // BINPUT
      case 0x72: memo.set(u32(), top()); break; // LONG_BINPUT
      case 0x94: memo.set(memo.size, top()); break; // MEMOIZE
      case 0x67: case 0x68: case 0x6a: { // GET, BINGET, LONG_BINGET
        const k = op === 0x67 ? (intFromText(line()) as number) : op === 0x68 ? u8() : u32();
        if (!memo.has(k)) fail(`memo key ${k} was never stored`);
        stack.push(memo.get(k));
        break;
      }
      case 0x63: { // GLOBAL module\nname\n
        const module = line();
        stack.push(global(module, line()));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL needs two strings');
        stack.push(global(module as string, name as string));
        break;
      }
      case 0x52: { const args = pop(); const fn = pop(); stack.push(call(fn, args, 'REDUCE')); break; } // REDUCE
      case 0x81: { const args = pop(); const cls = pop(); stack.push(call(cls, args, 'NEWOBJ')); break; } // NEWOBJ
      case 0x92: { pop(); const args = pop(); const cls = pop(); stack.push(call(cls, args, 'NEWOBJ_EX')); break; } // NEWOBJ_EX
      case 0x6f: { const items = popMark(); const cls = items.shift(); stack.push(call(cls, new PyTuple(items), 'OBJ')); break; } // OBJ
      case 0x69: { // INST module\nname\n: builds an instance of a named class
        const module = line();
        const name = line();
        const items = popMark();
        stack.push(call(global(module, name), new PyTuple(items), 'INST'));
        break;
      }
      case 0x62: { // BUILD: obj.__setstate__(state) — only data objects we built accept state
        const state = pop();
        const obj = top();
        if (obj instanceof PyDict) obj.state.push(state);
        else if (obj instanceof PyGlobal) throw new PickleRefusedError(src, obj.qualified, 'set the state of');
        else if (obj !== null && typeof obj === 'object' && 'setState' in obj && typeof (obj as { setState: unknown }).setState === 'function') (obj as { setState: (s: unknown) => void }).setState(state);
        else fail(`BUILD on ${describe(obj)}`);
        break;
      }
      case 0x51: { // BINPERSID
        const pid = pop();
        if (!opts.persistentLoad) fail('persistent id in a pickle that may not have any');
        stack.push((opts.persistentLoad as (p: unknown) => unknown)(pid));
        break;
      }
      case 0x50: { // PERSID (text)
        const pid = line();
        if (!opts.persistentLoad) fail('persistent id in a pickle that may not have any');
        stack.push((opts.persistentLoad as (p: unknown) => unknown)(pid));
        break;
      }
      case 0x82: case 0x83: case 0x84: // EXT1/2/4: the copyreg extension registry
        throw new PickleRefusedError(src, `copyreg extension code ${op === 0x82 ? u8() : op === 0x83 ? u16() : u32()}`, 'look up');
      case 0x97: // NEXT_BUFFER
      case 0x98: // READONLY_BUFFER
        fail('out-of-band buffers (pickle protocol 5) are not supported');
        break;
      default:
        fail(`unknown pickle opcode 0x${op.toString(16).padStart(2, '0')}`);
    }
  }
}

function describe(v: unknown): string {
  if (v === null) return 'None';
  if (v instanceof PyGlobal) return v.qualified;
  if (v instanceof PyTuple) return 'a tuple';
  if (v instanceof PyDict) return 'a dict';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'an object';
  return typeof v;
}
