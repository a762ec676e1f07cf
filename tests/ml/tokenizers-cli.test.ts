/** `minidalle tokenize`, run as users run it: the built CLI in a temporary folder. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { saveTokenizer, trainByteLevelBpe, type TextTokenizer } from '../../src/ml/tokenizers/index.js';
import { CLI, cli } from '../support/cli.js';
import { shapesCaptions } from './tokenizers-corpus.js';

let dir: string;
let tok: TextTokenizer;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tok-cli-'));
  tok = trainByteLevelBpe(shapesCaptions(500, 3), { vocabSize: 320 });
  saveTokenizer(tok, join(dir, 'shapes-tok'));
});

const lines = (out: string) => out.trim().split('\n').map((l) => JSON.parse(l) as unknown);

describe('minidalle tokenize', () => {
  it('prints one JSON array of ids per text, with <s> … </s> unless --no-special', () => {
    const r = cli(dir, ['tokenize', '--tokenizer', 'shapes-tok', 'a red circle', 'a blue star on grey']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(lines(r.stdout)).toEqual([tok.encode('a red circle').ids, tok.encode('a blue star on grey').ids]);
    const plain = cli(dir, ['tokenize', '--tokenizer', 'shapes-tok/tokenizer.json', '--no-special', 'a red circle']);
    expect(lines(plain.stdout)).toEqual([tok.encode('a red circle', { addSpecial: false }).ids]);
  });

  it('--max-length truncates keeping </s>; stdin lines are read when no text is given', () => {
    const r = spawnSync(process.execPath, [CLI, 'tokenize', '--tokenizer', 'shapes-tok', '--max-length', '4'], {
      cwd: dir,
      input: 'a large green hexagon in the centre\n\nsmall star\n',
      encoding: 'utf8',
    });
    expect(r.status).toBe(0);
    const out = lines(r.stdout) as number[][];
    expect(out).toHaveLength(3);
    expect(out[0]).toEqual(tok.encode('a large green hexagon in the centre', { maxLength: 4 }).ids);
    expect(out[0]).toHaveLength(4);
    expect(out[0]?.[3]).toBe(tok.eosId);
    expect(out[1]).toEqual([tok.bosId, tok.eosId]);
  });

  it('--decode turns id lists back into text (JSON strings); --no-special drops <s> and </s>', () => {
    const ids = tok.encode('a red circle\non grey').ids;
    const r = cli(dir, ['tokenize', '--tokenizer', 'shapes-tok', '--decode', JSON.stringify(ids), ids.join(' ')]);
    expect(r.code).toBe(0);
    expect(lines(r.stdout)).toEqual(['<s>a red circle\non grey</s>', '<s>a red circle\non grey</s>']);
    const skip = cli(dir, ['tokenize', '--tokenizer', 'shapes-tok', '--decode', '--no-special', ids.join(',')]);
    expect(lines(skip.stdout)).toEqual(['a red circle\non grey']);
  });

  it('errors name the file and what was expected', () => {
    const missing = cli(dir, ['tokenize', '--tokenizer', 'nope.json', 'x']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/error: nope\.json: no such file or folder; expected a tokenizer\.json, or a folder with tokenizer\.json or vocab\.json \+ merges\.txt/);
    writeFileSync(join(dir, 'bad.json'), '{"model": {"type": "BPE"}}');
    const bad = cli(dir, ['tokenize', '--tokenizer', 'bad.json', 'x']);
    expect(bad.stderr).toMatch(/error: bad\.json: model\.vocab must be an object of token → id/);
    const notIds = cli(dir, ['tokenize', '--tokenizer', 'shapes-tok', '--decode', 'hello']);
    expect(notIds.stderr).toMatch(/input 1: expected ids to decode/);
    const noTok = cli(dir, ['tokenize', 'x']);
    expect(noTok.code).toBe(2);
    expect(noTok.stderr).toMatch(/tokenizer/);
  });
});
