/**
 * The restricted unpickler on hand-made pickles (no Python needed): the data opcodes of protocols 2–4
 * decode, and every way a pickle can ask to run code — REDUCE/NEWOBJ of a global, INST, OBJ, BUILD on a
 * global, the copyreg extension registry — is refused naming what it wanted.
 */
import { describe, expect, it } from 'vitest';
import { BASIC_ALLOWED, BufferInput, PickleError, PickleRefusedError, PyDict, PyGlobal, PyTuple, unpickle } from '../../src/ml/checkpoints/pickle.js';

const enc = new TextEncoder();
/** Concatenates opcodes (strings are latin1 bytes) into a pickle. */
function pk(...parts: (string | number[])[]): Uint8Array {
  const bytes: number[] = [];
  for (const p of parts) {
    if (typeof p === 'string') for (const ch of p) bytes.push(ch.charCodeAt(0));
    else bytes.push(...p);
  }
  return Uint8Array.from(bytes);
}
const u32 = (n: number): number[] => [n & 255, (n >> 8) & 255, (n >> 16) & 255, (n >>> 24) & 255];
const ustr = (s: string): number[] => {
  const b = [...enc.encode(s)];
  return [0x58, ...u32(b.length), ...b]; // BINUNICODE
};
const load = (b: Uint8Array): unknown => unpickle(new BufferInput(b), { allowed: BASIC_ALLOWED, source: 'test.pkl' });

describe('restricted unpickler', () => {
  it('decodes dicts, lists, tuples, ints, longs, floats, strings, bytes and memo references (protocol 2 and 4)', () => {
    // {'a': [1, 300, -2, 2**70], 'b': (1.5, None, True), 'c': b'xy', 'd': <memo of the list>}
    const float15 = [0x3f, 0xf8, 0, 0, 0, 0, 0, 0];
    const long70 = [0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0x40];
    const p2 = pk([0x80, 2], '}', [0x71, 0], '(', ustr('a'), ']', [0x71, 1], '(', [0x4b, 1], [0x4d, 0x2c, 0x01], [0x4a, ...u32(-2 >>> 0)], long70, 'e',
      ustr('b'), [0x47, ...float15], 'N', [0x88], [0x87], ustr('c'), [0x43, 2], 'xy', ustr('d'), [0x68, 1], 'u.');
    const d = load(p2) as PyDict;
    expect(d).toBeInstanceOf(PyDict);
    const list = d.get('a') as unknown[];
    expect(list).toEqual([1, 300, -2, 2n ** 70n]);
    expect(d.get('d')).toBe(list);
    expect((d.get('b') as PyTuple).items).toEqual([1.5, null, true]);
    expect(d.get('c')).toEqual(Uint8Array.from([0x78, 0x79]));
    // protocol 4: FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL of an allowed global
    const p4 = pk([0x80, 4, 0x95, ...u32(30), 0, 0, 0, 0], [0x8c, 11], 'collections', [0x94], [0x8c, 11], 'OrderedDict', [0x94, 0x93, 0x94], ')R', [0x94], [0x8c, 1], 'k', [0x4b, 7], 's.');
    const od = load(p4) as PyDict;
    expect(od.get('k')).toBe(7);
  });

  it('refuses REDUCE of os.system (GLOBAL and STACK_GLOBAL), naming it, before anything else is built', () => {
    const g = pk([0x80, 2], 'cposix\nsystem\n', '(', ustr('touch /tmp/x'), 'tR.');
    expect(() => load(g)).toThrow(PickleRefusedError);
    expect(() => load(g)).toThrow(/test\.pkl: refused to call `posix\.system`: .*nothing was executed/);
    const sg = pk([0x80, 4], [0x8c, 2], 'os', [0x8c, 6], 'system', [0x93], ustr('id'), [0x85], 'R.');
    expect(() => load(sg)).toThrow(/refused to call `os\.system`/);
  });

  it('refuses NEWOBJ, INST, OBJ and BUILD on unknown classes, and the copyreg extension registry', () => {
    expect(() => load(pk([0x80, 2], 'cbuiltins\neval\n', ')', [0x81], '.'))).toThrow(/refused to call `builtins\.eval`/);
    expect(() => load(pk('(', ustr('ls'), 'isubprocess\nPopen\n.'))).toThrow(/refused to call `subprocess\.Popen`/);
    expect(() => load(pk('(cos\nsystem\n', ustr('ls'), 'o.'))).toThrow(/refused to call `os\.system`/);
    expect(() => load(pk([0x80, 2], 'cnumpy\nndarray\n', '}b.'))).toThrow(/refused to set the state of `numpy\.ndarray`/);
    expect(() => load(pk([0x80, 2, 0x82, 5], '.'))).toThrow(/refused to look up `copyreg extension code 5`/);
  });

  it('keeps a global that is only named (a class used as a dict key) as an inert reference', () => {
    const v = load(pk([0x80, 2], '}', 'c__main__\nModelCheckpoint\n', [0x4b, 1], 's.')) as PyDict;
    const [key] = [...v.entries.keys()];
    expect(key).toBeInstanceOf(PyGlobal);
    expect((key as PyGlobal).qualified).toBe('__main__.ModelCheckpoint');
  });

  it('reports a truncated or malformed pickle as a PickleError with its byte offset', () => {
    expect(() => load(pk([0x80, 2], ']', [0x4a, 1, 2]))).toThrow(/pickle ends early.*at byte/);
    expect(() => load(pk([0x80, 2], [0xff]))).toThrow(PickleError);
    expect(() => load(pk([0x80, 2], 'a.'))).toThrow(/stack underflow/);
    expect(() => load(pk([0x80, 2], 'NQ.'))).toThrow(/persistent id in a pickle that may not have any/);
  });
});
