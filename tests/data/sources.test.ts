import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parquetWriteFile } from 'hyparquet-writer';
import { openSource, FolderSource, ParquetSource, TableSource, WebdatasetSource } from '../../src/data/sources/index.js';
import type { DataSource, SourceItem } from '../../src/data/sources/index.js';
import { SkipCounts } from '../../src/data/skips.js';
import { prepareItems } from '../../src/data/prepare.js';
import { NoUsableItemsError, TruncatedShardError } from '../../src/data/errors.js';
import { solidImage, tarBytes, writeTar } from './fixtures.js';

let dir: string;
let red: Buffer;
let blue: Buffer;
let green: Buffer;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sources-'));
  red = await solidImage('png', [255, 0, 0]);
  blue = await solidImage('jpeg', [0, 0, 255]);
  green = await solidImage('webp', [0, 255, 0]);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function collect(source: DataSource, skips = new SkipCounts()): Promise<SourceItem[]> {
  const out: SourceItem[] = [];
  for await (const item of source.items({ skips })) out.push(item);
  return out;
}

describe('WebdatasetSource', () => {
  it('streams items from brace-pattern shards in order, grouping files by key', async () => {
    await mkdir(join(dir, 'wds'));
    await writeTar(join(dir, 'wds', '00000.tar'), [
      { name: '000000000.png', body: red },
      { name: '000000000.txt', body: 'a red square' },
      { name: '000000000.json', body: JSON.stringify({ title: 'Red', width: 24 }) },
      { name: '000000001.jpg', body: blue },
      { name: '000000001.txt', body: 'blue' },
    ]);
    await writeTar(join(dir, 'wds', '00001.tar'), [
      { name: 'sub/000000002.webp', body: green },
      { name: 'sub/000000002.txt', body: 'green' },
    ]);
    const source = openSource(join(dir, 'wds', '{00000..00001}.tar'));
    expect(source).toBeInstanceOf(WebdatasetSource);
    const items = await collect(source);
    expect(items.map((i) => i.key)).toEqual(['000000000', '000000001', 'sub/000000002']);
    expect(items.map((i) => i.caption)).toEqual(['a red square', 'blue', 'green']);
    expect(Buffer.from(items[1]?.image ?? []).equals(blue)).toBe(true);
    expect(items[0]?.meta).toMatchObject({ title: 'Red', width: 24, image_ext: 'png' });
  });
});

describe('FolderSource', () => {
  it('reads images with sibling .txt recursively in sorted order', async () => {
    const root = join(dir, 'folder');
    await mkdir(join(root, 'sub'), { recursive: true });
    await writeFile(join(root, 'b.png'), red);
    await writeFile(join(root, 'b.txt'), 'red one');
    await writeFile(join(root, 'a.jpg'), blue);
    await writeFile(join(root, 'a.txt'), 'blue one');
    await writeFile(join(root, 'notes.md'), 'ignored');
    await writeFile(join(root, 'sub', 'c.webp'), green);
    await writeFile(join(root, 'sub', 'c.json'), JSON.stringify({ description: 'green one' }));
    const source = openSource(root);
    expect(source).toBeInstanceOf(FolderSource);
    const items = await collect(source);
    expect(items.map((i) => i.key)).toEqual(['a', 'b', join('sub', 'c')]);
    expect(items.map((i) => i.caption)).toEqual(['blue one', 'red one', '']);
    expect(items[2]?.meta.description).toBe('green one');
  });
});

describe('TableSource', () => {
  beforeAll(async () => {
    await mkdir(join(dir, 'table', 'img'), { recursive: true });
    await writeFile(join(dir, 'table', 'img', 'r.png'), red);
    await writeFile(join(dir, 'table', 'img', 'b.jpg'), blue);
  });

  it('parses quoted CSV fields: commas, doubled quotes, CRLF', async () => {
    const file = join(dir, 'table', 'quoted.csv');
    await writeFile(file, 'image_path,caption,extra\r\nimg/r.png,"b, c","say ""hi"""\r\n');
    const items = await collect(openSource(file));
    expect(items.map((i) => [i.caption, i.meta.extra])).toEqual([['b, c', 'say "hi"']]);
  });

  it('keeps every good row around a stray quote and unterminated quotes; each bad row is counted with file:line', async () => {
    const file = join(dir, 'table', 'broken.csv');
    const lines = [
      'key,image_path,caption',
      'k1,img/r.png,a 12" vinyl record', // a stray quote in an unquoted field: text
      'k2,img/b.jpg,"good, quoted"',
      'k3,img/r.png,"unterminated caption', // line 4: runs into the next rows until the quote of k5
      'k4,img/b.jpg,fine',
      'k5,img/r.png,"two',
      'lines"',
      'k6,img/b.jpg,ok',
      'k7,img/r.png,"closed" and more', // line 9: text after a closing quote
      'k8,img/b.jpg,too,many,fields', // line 10
      'k9,img/r.png,"never closed', // line 11: open until the end of the file
      'k10,img/b.jpg,last',
      '',
    ];
    await writeFile(file, lines.join('\n'));
    const skips = new SkipCounts();
    const items = await collect(openSource(file), skips);
    expect(items.map((i) => [i.key, i.caption])).toEqual([
      ['k1', 'a 12" vinyl record'],
      ['k2', 'good, quoted'],
      ['k4', 'fine'],
      ['k5', 'two\nlines'],
      ['k6', 'ok'],
      ['k10', 'last'],
    ]);
    expect(skips.count('bad_row')).toBe(4);
    expect(skips.total).toBe(4);
    expect(skips.messages.map((m) => m.slice(0, m.indexOf(': ')))).toEqual([4, 9, 10, 11].map((n) => `${file}:${n}`));
    expect(skips.messages[0]).toMatch(/unterminated/);
    expect(skips.messages[2]).toContain('5 fields where the header has 3');
    expect(await openSource(file).estimateCount()).toBe(11);
  });

  it('a runaway quote in a large file costs one row, not the rest of the file', async () => {
    const file = join(dir, 'table', 'runaway.csv');
    const rows = Array.from({ length: 3000 }, (_, i) => `k${i},img/r.png,caption ${i}`);
    rows[1000] = 'k1000,img/r.png,"oops';
    await writeFile(file, ['key,image_path,caption', ...rows].join('\n'));
    const skips = new SkipCounts();
    const items = await collect(openSource(file), skips);
    expect(items).toHaveLength(2999);
    expect(skips.messages).toEqual([expect.stringContaining(`${file}:1002: a quoted field is never closed`)]);
  });

  it('reads TSV with paths relative to the file', async () => {
    const file = join(dir, 'table', 'list.tsv');
    await writeFile(file, 'image_path\tcaption\textra\nimg/r.png\ta 12" red thing\t1\nimg/b.jpg\ta blue thing\t2\n');
    const items = await collect(openSource(file));
    expect(items.map((i) => i.caption)).toEqual(['a 12" red thing', 'a blue thing']);
    expect(Buffer.from(items[0]?.image ?? []).equals(red)).toBe(true);
    expect(items[1]?.meta.extra).toBe('2');
  });

  it('reads CSV with quoted commas and newlines', async () => {
    const file = join(dir, 'table', 'list.csv');
    await writeFile(file, 'key,image_path,caption\nk1,img/r.png,"red, bright"\nk2,img/b.jpg,"two\nlines"\n');
    const items = await collect(new TableSource(file));
    expect(items.map((i) => [i.key, i.caption])).toEqual([
      ['k1', 'red, bright'],
      ['k2', 'two\nlines'],
    ]);
  });

  it('reads JSONL and counts rows whose image is missing', async () => {
    const file = join(dir, 'table', 'list.jsonl');
    await writeFile(file, [{ image_path: 'img/b.jpg', caption: 'blue' }, { image_path: 'img/nope.png', caption: 'gone' }, { image_path: 'img/r.png', caption: 'red' }].map((r) => JSON.stringify(r)).join('\n'));
    const skips = new SkipCounts();
    const items = await collect(openSource(file), skips);
    expect(items.map((i) => i.caption)).toEqual(['blue', 'red']);
    expect(skips.count('missing_image')).toBe(1);
    expect(skips.messages[0]).toContain('list.jsonl:2');
  });

  it('names the missing column', async () => {
    const file = join(dir, 'table', 'bad.tsv');
    await writeFile(file, 'path\ttext\nimg/r.png\tred\n');
    await expect(collect(openSource(file))).rejects.toThrow(/bad\.tsv: header has no "image_path" column/);
  });
});

describe('ParquetSource', () => {
  it('reads pre-encoded rows (key, caption, encoding) across shards', async () => {
    const columns = (keys: string[]) => [
      { name: 'key', data: keys },
      { name: 'caption', data: keys.map((k) => `caption ${k}`) },
      { name: 'encoding', data: keys.map((_, i) => [i, i + 1, i + 2]) },
    ];
    const schema = [
      { name: 'root', num_children: 3 },
      { name: 'key', type: 'BYTE_ARRAY' as const, converted_type: 'UTF8' as const, repetition_type: 'REQUIRED' as const },
      { name: 'caption', type: 'BYTE_ARRAY' as const, converted_type: 'UTF8' as const, repetition_type: 'REQUIRED' as const },
      { name: 'encoding', repetition_type: 'REQUIRED' as const, converted_type: 'LIST' as const, num_children: 1 },
      { name: 'list', repetition_type: 'REPEATED' as const, num_children: 1 },
      { name: 'element', type: 'INT32' as const, repetition_type: 'REQUIRED' as const },
    ];
    parquetWriteFile({ filename: join(dir, 'enc-0.parquet'), columnData: columns(['a', 'b']), schema });
    parquetWriteFile({ filename: join(dir, 'enc-1.parquet'), columnData: columns(['c']), schema });
    const source = openSource(join(dir, 'enc-{0..1}.parquet'));
    expect(source).toBeInstanceOf(ParquetSource);
    const items = await collect(source);
    expect(items.map((i) => i.key)).toEqual(['a', 'b', 'c']);
    expect(items.map((i) => Array.from(i.encoding ?? []))).toEqual([
      [0, 1, 2],
      [1, 2, 3],
      [0, 1, 2],
    ]);
    expect(items[2]?.caption).toBe('caption c');
  });

  it('reads rows carrying image bytes', async () => {
    parquetWriteFile({
      filename: join(dir, 'img.parquet'),
      columnData: [
        { name: 'caption', data: ['red', 'blue'], type: 'STRING' },
        { name: 'image', data: [new Uint8Array(red), new Uint8Array(blue)], type: 'BYTE_ARRAY' },
      ],
    });
    const items = await collect(openSource(join(dir, 'img.parquet')));
    expect(items.map((i) => i.caption)).toEqual(['red', 'blue']);
    expect(Buffer.from(items[1]?.image ?? []).equals(blue)).toBe(true);
  });
});

describe('bad data', () => {
  it('skips and counts corrupt images, empty captions, unsafe entries and a truncated shard, keeping everything else', async () => {
    const bad = join(dir, 'bad');
    await mkdir(bad);
    const truncatedJpeg = blue.subarray(0, Math.floor(blue.length / 2));
    await writeTar(join(bad, 'd-00000.tar'), [
      { name: '0.png', body: red },
      { name: '0.txt', body: 'good zero' },
      { name: '1.png', body: Buffer.from('this is not an image') },
      { name: '1.txt', body: 'corrupt bytes' },
      { name: '2.jpg', body: truncatedJpeg },
      { name: '2.txt', body: 'truncated jpeg' },
      { name: '3.png', body: red },
      { name: '3.txt', body: '   \n ' },
      { name: '../../etc/evil.txt', body: 'escape' },
      { name: '/abs/evil.png', body: red },
      { name: '4.webp', body: green },
      { name: '4.txt', body: 'good four' },
    ]);
    const full = await tarBytes([
      { name: '5.png', body: red },
      { name: '5.txt', body: 'good five' },
      { name: '6.png', body: red },
      { name: '6.txt', body: 'lost in truncation' },
    ]);
    // Cut inside the 6.png body: 5 is complete, 6 is not.
    await writeFile(join(bad, 'd-00001.tar'), full.subarray(0, 512 * 4 + 512 + 100));
    await writeTar(join(bad, 'd-00002.tar'), [
      { name: '7.png', body: red },
      { name: '7.txt', body: 'good seven' },
    ]);
    const skips = new SkipCounts();
    const warnings: string[] = [];
    const items = [];
    for await (const it of prepareItems(openSource(join(bad, 'd-{00000..00002}.tar')), { image: { resolution: 8, range: '0_1', background: [0, 0, 0], crop: 'centre' }, onWarning: (m) => warnings.push(m) }, skips)) items.push(it);
    expect(items.map((i) => i.key)).toEqual(['0', '4', '5', '7']);
    expect(items.map((i) => i.caption)).toEqual(['good zero', 'good four', 'good five', 'good seven']);
    expect(skips.toJSON().by_reason).toEqual({ corrupt_image: 2, missing_caption: 1, unsafe_tar_entry: 2, truncated_shard: 1 });
    expect(warnings.some((w) => w.includes('d-00000.tar') && w.includes('../../etc/evil.txt'))).toBe(true);
    expect(warnings.some((w) => w.includes('d-00000.tar') && w.includes('/abs/evil.png'))).toBe(true);
    expect(warnings.some((w) => /d-00001\.tar: truncated .* after 1 complete item/.test(w))).toBe(true);
    expect(warnings.some((w) => w.includes('"3" has no caption'))).toBe(true);
  });

  it('in strict mode throws TruncatedShardError after yielding the items before the cut', async () => {
    const full = await tarBytes([
      { name: 'a.png', body: red },
      { name: 'a.txt', body: 'a' },
      { name: 'b.png', body: red },
      { name: 'b.txt', body: 'b' },
    ]);
    const file = join(dir, 'trunc.tar');
    await writeFile(file, full.subarray(0, 512 * 4 + 300));
    const seen: string[] = [];
    const run = async () => {
      for await (const it of new WebdatasetSource(file).items({ skips: new SkipCounts(), strict: true })) seen.push(it.key);
    };
    await expect(run()).rejects.toBeInstanceOf(TruncatedShardError);
    await expect(run()).rejects.toThrow(/trunc\.tar: truncated/);
    expect(seen[0]).toBe('a');
  });

  it('counts a missing shard of a pattern as unreadable and reads the others', async () => {
    await writeTar(join(dir, 'm-0.tar'), [
      { name: 'a.png', body: red },
      { name: 'a.txt', body: 'a' },
    ]);
    const skips = new SkipCounts();
    const items = await collect(openSource(join(dir, 'm-{0..1}.tar')), skips);
    expect(items.map((i) => i.key)).toEqual(['a']);
    expect(skips.toJSON().by_reason).toEqual({ unreadable_file: 1 });
    expect(skips.messages[0]).toMatch(/m-1\.tar: cannot open shard \(ENOENT\)/);
  });

  it('fails clearly when a source has no usable item', async () => {
    const file = join(dir, 'allbad.tar');
    await writeTar(file, [
      { name: 'x.png', body: Buffer.from('nope') },
      { name: 'x.txt', body: 'caption' },
      { name: 'y.png', body: red },
    ]);
    const run = async () => {
      for await (const _ of prepareItems(openSource(file), { image: { resolution: 8, range: '0_1', background: [0, 0, 0], crop: 'centre' } })) void _;
    };
    await expect(run()).rejects.toBeInstanceOf(NoUsableItemsError);
    await expect(run()).rejects.toThrow(/allbad\.tar: no usable items \(skipped: corrupt_image=1, missing_caption=1\)/);
  });
});
