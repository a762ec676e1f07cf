import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  SafetensorsError,
  bf16BitsToFloat,
  f16BitsToFloat,
  floatToBf16Bits,
  floatToF16Bits,
  parseSafetensors,
  readSafetensors,
  readSafetensorsHeader,
  serializeSafetensors,
  writeSafetensors,
  type RawTensor,
} from '../../src/ml/safetensors.js';

const dir = mkdtempSync(join(tmpdir(), 'minidalle-st-'));

/** Builds a file by hand (independent of our writer) from a header object and raw data bytes. */
function handMade(header: unknown, data: Uint8Array, headerLenOverride?: bigint): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const out = Buffer.alloc(8 + json.length + data.length);
  out.writeBigUInt64LE(headerLenOverride ?? BigInt(json.length), 0);
  json.copy(out, 8);
  Buffer.from(data).copy(out, 8 + json.length);
  return out;
}

function f32(values: number[]): RawTensor {
  return { dtype: 'float32', shape: [values.length], data: Float32Array.from(values) };
}

describe('half-precision bit patterns', () => {
  // Known IEEE binary16 encodings.
  const f16Cases: [number, number][] = [
    [1, 0x3c00], [-2, 0xc000], [0.5, 0x3800], [65504, 0x7bff], [2 ** -24, 0x0001], [2 ** -14, 0x0400],
    [0, 0x0000], [Infinity, 0x7c00], [-Infinity, 0xfc00], [0.333251953125, 0x3555],
  ];
  it('F16 encodes and decodes known values', () => {
    for (const [v, bits] of f16Cases) {
      expect(floatToF16Bits(v)).toBe(bits);
      expect(f16BitsToFloat(bits)).toBe(v);
    }
    expect(floatToF16Bits(1 / 3)).toBe(0x3555); // nearest half to 1/3
    expect(floatToF16Bits(-0)).toBe(0x8000);
    expect(floatToF16Bits(70000)).toBe(0x7c00); // overflow → inf
    expect(Number.isNaN(f16BitsToFloat(floatToF16Bits(NaN)))).toBe(true);
    // round half to even: 1 + 2^-11 is halfway between 1 and 1+2^-10 → 1 (even mantissa)
    expect(floatToF16Bits(1 + 2 ** -11)).toBe(0x3c00);
    expect(floatToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
  });
  it('BF16 encodes and decodes known values', () => {
    const cases: [number, number][] = [[1, 0x3f80], [-2, 0xc000], [3.140625, 0x4049], [0, 0], [Infinity, 0x7f80]];
    for (const [v, bits] of cases) {
      expect(floatToBf16Bits(v)).toBe(bits);
      expect(bf16BitsToFloat(bits)).toBe(v);
    }
    expect(floatToBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie → even
    expect(floatToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82);
  });
});

describe('reading hand-made files of each dtype', () => {
  it('decodes F16, BF16, F32, F64, I64, I32, U8 from known bytes', () => {
    const bytes = Buffer.alloc(4 + 4 + 8 + 8 + 16 + 8 + 2);
    let o = 0;
    bytes.writeUInt16LE(0x3c00, o); bytes.writeUInt16LE(0xc000, o + 2); o += 4; // F16 [1, -2]
    bytes.writeUInt16LE(0x3f80, o); bytes.writeUInt16LE(0x4049, o + 2); o += 4; // BF16 [1, 3.140625]
    bytes.writeFloatLE(1.5, o); bytes.writeFloatLE(-0.25, o + 4); o += 8; // F32
    bytes.writeDoubleLE(0.1, o); o += 8; // F64 [0.1]
    bytes.writeBigInt64LE(-5n, o); bytes.writeBigInt64LE(16384n, o + 8); o += 16; // I64
    bytes.writeInt32LE(7, o); bytes.writeInt32LE(-8, o + 4); o += 8; // I32
    bytes.writeUInt8(255, o); bytes.writeUInt8(1, o + 1); // U8
    const header = {
      __metadata__: { format: 'pt' },
      h: { dtype: 'F16', shape: [2], data_offsets: [0, 4] },
      b: { dtype: 'BF16', shape: [2, 1], data_offsets: [4, 8] },
      f: { dtype: 'F32', shape: [1, 2], data_offsets: [8, 16] },
      d: { dtype: 'F64', shape: [], data_offsets: [16, 24] },
      l: { dtype: 'I64', shape: [2], data_offsets: [24, 40] },
      i: { dtype: 'I32', shape: [2], data_offsets: [40, 48] },
      u: { dtype: 'U8', shape: [2], data_offsets: [48, 50] },
    };
    const { tensors, metadata } = parseSafetensors(handMade(header, bytes));
    expect(metadata).toEqual({ format: 'pt' });
    expect([...tensors.get('h')!.data]).toEqual([1, -2]);
    expect(tensors.get('b')!.shape).toEqual([2, 1]);
    expect([...tensors.get('b')!.data]).toEqual([1, 3.140625]);
    expect([...tensors.get('f')!.data]).toEqual([1.5, -0.25]);
    expect(tensors.get('d')!.shape).toEqual([]);
    expect(tensors.get('d')!.data[0]).toBeCloseTo(0.1, 7);
    expect(tensors.get('l')!.dtype).toBe('int32');
    expect([...tensors.get('l')!.data]).toEqual([-5, 16384]);
    expect([...tensors.get('i')!.data]).toEqual([7, -8]);
    expect([...tensors.get('u')!.data]).toEqual([255, 1]);
  });

  it('refuses an I64 value that does not fit in int32', () => {
    const bytes = Buffer.alloc(8);
    bytes.writeBigInt64LE(2n ** 40n);
    expect(() => parseSafetensors(handMade({ x: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, bytes), 'big.safetensors')).toThrow(/big\.safetensors.*does not fit in int32/);
  });
});

describe('round trip through our writer', () => {
  const values = [0, 1, -1, 0.1, 3.14159, -65504, 1e-3, 12345.678];
  it('F32 is bit exact, F16 and BF16 round to the nearest representable value', async () => {
    for (const floatDtype of ['F32', 'F16', 'BF16'] as const) {
      const path = join(dir, `rt-${floatDtype}.safetensors`);
      writeSafetensors(path, { 'a.weight': f32(values), ids: { dtype: 'int32', shape: [2, 2], data: Int32Array.from([1, -2, 3, 2 ** 31 - 1]) } }, { floatDtype, metadata: { step: '7' } });
      const back = await readSafetensors(path);
      expect(back.metadata).toEqual({ step: '7' });
      expect(back.tensors.get('ids')!.shape).toEqual([2, 2]);
      expect([...back.tensors.get('ids')!.data]).toEqual([1, -2, 3, 2 ** 31 - 1]);
      const got = [...back.tensors.get('a.weight')!.data];
      const expected = values.map((v) =>
        floatDtype === 'F32' ? Math.fround(v) : floatDtype === 'F16' ? f16BitsToFloat(floatToF16Bits(v)) : bf16BitsToFloat(floatToBf16Bits(v)),
      );
      expect(got).toEqual(expected);
      if (floatDtype !== 'F32') expect(got).not.toEqual(values.map(Math.fround)); // it really was converted
      expect(readSafetensorsHeader(path).tensors.find((t) => t.name === 'a.weight')!.dtype).toBe(floatDtype);
    }
  });

  it('writes deterministic bytes with an 8-byte aligned data section', () => {
    const a = serializeSafetensors(new Map([['z', f32([1])], ['a', f32([2, 3])]]));
    const b = serializeSafetensors(new Map([['a', f32([2, 3])], ['z', f32([1])]]));
    expect(a.equals(b)).toBe(true);
    expect(Number(a.readBigUInt64LE(0)) % 8).toBe(0);
  });

  it('reads only the requested names from a file', async () => {
    const path = join(dir, 'some.safetensors');
    writeSafetensors(path, { a: f32([1]), b: f32([2]) });
    const got = await readSafetensors(path, { names: ['b'] });
    expect([...got.tensors.keys()]).toEqual(['b']);
    await expect(readSafetensors(path, { names: ['c'] })).rejects.toThrow(/some\.safetensors.*c/);
  });
});

describe('corrupt files are refused with the file name', () => {
  const good = { x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
  const data = new Uint8Array(8);
  const cases: [string, Buffer, RegExp][] = [
    ['shorter than 8 bytes', Buffer.alloc(5), /shorter than the 8-byte/],
    ['header length past the end', handMade(good, data, 10_000n), /larger than the .* bytes after it/],
    ['oversized header length', handMade(good, data, 2n ** 62n), /exceeds the .*limit/],
    ['truncated data', handMade(good, data).subarray(0, -3), /run past the end/],
    ['invalid JSON', (() => { const b = handMade(good, data); b[8] = 0x7b + 1; return b; })(), /not valid UTF-8 JSON/],
    ['header is an array', handMade([1, 2], data), /must be a JSON object/],
    ['unknown dtype', handMade({ x: { dtype: 'F8', shape: [2], data_offsets: [0, 8] } }, data), /unsupported dtype/],
    ['negative shape', handMade({ x: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, data), /shape must be/],
    ['lying size', handMade({ x: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, data), /needs 12 bytes but data_offsets span 8/],
    ['end before begin', handMade({ x: { dtype: 'F32', shape: [0], data_offsets: [8, 0] } }, data), /end 0 < begin 8/],
    ['overlapping tensors', handMade({ x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, y: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, data), /overlap/],
    ['bad metadata', handMade({ __metadata__: { a: 1 }, ...good }, data), /__metadata__\.a must be a string/],
  ];
  for (const [what, buf, re] of cases) {
    it(`${what} (buffer and file)`, async () => {
      expect(() => parseSafetensors(buf, 'mem.safetensors')).toThrow(SafetensorsError);
      expect(() => parseSafetensors(buf, 'mem.safetensors')).toThrow(re);
      const path = join(dir, `bad-${what.replace(/\W+/g, '-')}.safetensors`);
      writeFileSync(path, buf);
      await expect(readSafetensors(path)).rejects.toThrow(new RegExp(`${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
      await expect(readSafetensors(path)).rejects.toThrow(re);
    });
  }
  it('the good file used above parses', () => {
    expect(parseSafetensors(handMade(good, data)).tensors.get('x')!.shape).toEqual([2]);
  });
});
