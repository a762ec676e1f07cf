import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli, COUNTER, project } from '../support/cli.js';

/** Config reads are bounded: a device, a FIFO or a huge file is refused at once, with the file named. */
describe('minidalle validate: bounded, quiet config reads', () => {
  it('extends: /dev/zero, a FIFO or a 6 MiB file fails fast with a clear error', () => {
    const dir = project({
      'zero.yaml': `extends: /dev/zero\n${COUNTER(2)}`,
      'fifo.yaml': `extends: ./pipe.yaml\n${COUNTER(2)}`,
      'big.yaml': `extends: ./huge.yaml\n${COUNTER(2)}`,
      'huge.yaml': `# ${'x'.repeat(6 * 1024 * 1024)}\nname: huge\n`,
    });
    execFileSync('mkfifo', [join(dir, 'pipe.yaml')]);
    const cases: [string, RegExp][] = [
      ['zero.yaml', /\/dev\/zero: is a device: a config file must be a regular YAML file/],
      ['fifo.yaml', /pipe\.yaml: is a FIFO: a config file must be a regular YAML file/],
      ['big.yaml', /huge\.yaml: is 6\.0 MiB: config files are limited to 5 MiB/],
    ];
    for (const [file, expected] of cases) {
      const r = cli(dir, ['validate', file], {}, { timeout: 15_000 });
      expect(r.signal, `${file} hung`).toBeNull();
      expect(r.code, file).toBe(2);
      expect(r.stderr, file).toMatch(expected);
    }
  });

  it('an alias bomb is refused with its file and line', () => {
    const bomb = ['name: bomb', 'a: &a ["x","x","x","x","x","x","x","x","x"]'];
    for (let i = 0; i < 8; i++) bomb.push(`${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(9).fill(`*${String.fromCharCode(97 + i)}`).join(',')}]`);
    const dir = project({ 'bomb.yaml': `${bomb.join('\n')}\n` });
    const r = cli(dir, ['validate', 'bomb.yaml'], {}, { timeout: 15_000 });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/bomb\.yaml:3:\d+: aliases expand too much/);
  });

  it('extends: a non-YAML file outside the project never echoes its lines', () => {
    const outside = mkdtempSync(join(tmpdir(), 'minidalle-outside-'));
    const shadow = join(outside, 'shadow');
    writeFileSync(shadow, 'root:$6$SECRETHASHROOT:19000:0:99999:7:::\nbin: *:19000:0:99999:7:::\nuser: [SECRETFLOW\n');
    const notYaml = join(outside, 'passwd');
    writeFileSync(notYaml, 'root:$6$SECRETHASHTWO:19000:0:99999:7:::\nbin: nologin\n');
    const dir = project({ 'a.yaml': `extends: ${shadow}\n${COUNTER(2)}`, 'b.yaml': `extends: ${notYaml}\n${COUNTER(2)}` });
    const a = cli(dir, ['validate', 'a.yaml']);
    expect(a.code).toBe(2);
    expect(a.stderr).toContain(`${shadow}:4:1: invalid YAML (BAD_INDENT)`);
    expect(a.stderr).toMatch(/invalid YAML \(\w+\); is it a YAML file\?/);
    const b = cli(dir, ['validate', 'b.yaml']);
    expect(b.code).toBe(2);
    expect(b.stderr).toContain(`${notYaml}:1:1: not valid experiment config (the file is outside the project and not named .yaml`);
    for (const r of [a, b]) {
      expect(r.stderr).not.toMatch(/SECRET|19000|root/);
    }
    // Inside the project, the same mistakes are explained in full.
    writeFileSync(join(dir, 'in.yaml'), 'root:$6$VISIBLE:19000:0:99999:7:::\nbin: x\n');
    writeFileSync(join(dir, 'd.yaml'), `extends: ./in.yaml\n${COUNTER(2)}`);
    const d = cli(dir, ['validate', 'd.yaml']);
    expect(d.code).toBe(2);
    expect(d.stderr).toMatch(/in\.yaml:1:1: root.*VISIBLE.*: unknown key/);
  });

  it('an override that creates or sets a bad value is blamed, not the YAML file', () => {
    const dir = project({ 'e.yaml': COUNTER(2) });
    const nope = cli(dir, ['validate', 'e.yaml', 'stages.nope.with.count=1']);
    expect(nope.code).toBe(2);
    expect(nope.stderr).toMatch(/command-line override 'stages\.nope\.with\.count=1': stages\.nope\.plugin: /);
    expect(nope.stderr).not.toContain('e.yaml:');
    const abc = cli(dir, ['validate', 'e.yaml', 'stages.a.with.steps=abc']);
    expect(abc.code).toBe(2);
    expect(abc.stderr).toMatch(/command-line override 'stages\.a\.with\.steps=abc': stages\.a\.with\.steps: .*expected number/i);
    expect(abc.stderr).not.toContain('e.yaml:');
  });
});
