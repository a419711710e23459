// Static checks of the deployment files (Dockerfile, .dockerignore, docker-compose.yml)
// and a behavioural check of .ci/run with stubbed npm/apt-get.
//
// Every check reads the real file. Each check is a function that returns a problem
// description (or undefined), and the "checks catch broken variants" section feeds
// deliberately broken copies of the real files through the same functions, so each
// check is shown to be able to fail.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const readRepoFile = (path: string): string => readFileSync(join(root, path), 'utf8');

type Check<T> = { name: string; run: (subject: T) => string | undefined };

const SECRET_NAME = /SECRET|PASSWORD|PASSWD|PASSPHRASE|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL/i;
const URL_WITH_PASSWORD = /[a-z][a-z0-9+.-]*:\/\/[^/\s@:]*:[^/\s@]+@/i;

// ---------------------------------------------------------------------------------------
// Dockerfile parsing
// ---------------------------------------------------------------------------------------

type Instruction = { cmd: string; args: string; line: number; stage: number };
type Stage = { index: number; image: string; name: string | undefined; instructions: Instruction[] };
type Dockerfile = { instructions: Instruction[]; stages: Stage[] };

function parseDockerfile(text: string): Dockerfile {
  const instructions: Instruction[] = [];
  const stages: Stage[] = [];
  let pending = '';
  let pendingLine = 0;
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    // Docker drops comment lines, even in the middle of a continued instruction.
    if (/^\s*#/.test(raw)) return;
    if (pending === '' && raw.trim() === '') return;
    if (pending === '') pendingLine = i + 1;
    const continued = /\\\s*$/.test(raw);
    pending += (pending ? ' ' : '') + (continued ? raw.replace(/\\\s*$/, '') : raw).trim();
    if (continued && i < lines.length - 1) return;
    const m = /^(\S+)\s*(.*)$/.exec(pending.trim());
    pending = '';
    if (!m) return;
    const cmd = m[1]!.toUpperCase();
    const args = m[2]!.trim();
    if (cmd === 'FROM') {
      const words = args.split(/\s+/).filter((w) => !w.startsWith('--'));
      const asIndex = words.findIndex((w) => w.toUpperCase() === 'AS');
      stages.push({
        index: stages.length,
        image: words[0] ?? '',
        name: asIndex >= 0 ? words[asIndex + 1] : undefined,
        instructions: [],
      });
    }
    const instruction: Instruction = { cmd, args, line: pendingLine, stage: stages.length - 1 };
    instructions.push(instruction);
    stages.at(-1)?.instructions.push(instruction);
  });
  return { instructions, stages };
}

function execForm(args: string): string[] | undefined {
  if (!args.trimStart().startsWith('[')) return undefined;
  try {
    const parsed: unknown = JSON.parse(args);
    return Array.isArray(parsed) && parsed.every((x) => typeof x === 'string') ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/** Splits on whitespace, keeping quoted parts together and removing the quotes. */
function shellWords(s: string): string[] {
  const words: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g;
  let m: RegExpExecArray | null;
  let current = '';
  let lastEnd = -1;
  while ((m = re.exec(s))) {
    const piece = m[1] ?? m[2] ?? m[3] ?? '';
    if (m.index === lastEnd) current += piece;
    else {
      if (lastEnd !== -1) words.push(current);
      current = piece;
    }
    lastEnd = re.lastIndex;
  }
  if (lastEnd !== -1) words.push(current);
  return words;
}

/** Keys and values set by an ENV instruction (both `K=V K2=V2` and legacy `K V`). */
function envPairs(args: string): Array<[string, string]> {
  const words = shellWords(args);
  if (words.length > 0 && !words[0]!.includes('=')) {
    return [[words[0]!, args.trim().slice(args.trim().indexOf(words[0]!) + words[0]!.length).trim()]];
  }
  return words.map((w): [string, string] => {
    const eq = w.indexOf('=');
    return eq < 0 ? [w, ''] : [w.slice(0, eq), w.slice(eq + 1)];
  });
}

function argPairs(args: string): Array<[string, string | undefined]> {
  return shellWords(args).map((w): [string, string | undefined] => {
    const eq = w.indexOf('=');
    return eq < 0 ? [w, undefined] : [w.slice(0, eq), w.slice(eq + 1)];
  });
}

function finalStage(df: Dockerfile): Stage | undefined {
  return df.stages.at(-1);
}

function stageEnv(stage: Stage): Map<string, string> {
  const env = new Map<string, string>();
  for (const i of stage.instructions) if (i.cmd === 'ENV') for (const [k, v] of envPairs(i.args)) env.set(k, v);
  return env;
}

/** COPY/ADD instructions as { from, sources, dest }. */
function copies(stage: Stage): Array<{ from: string | undefined; sources: string[]; dest: string; ins: Instruction }> {
  return stage.instructions
    .filter((i) => i.cmd === 'COPY' || i.cmd === 'ADD')
    .map((ins) => {
      const words = execForm(ins.args) ?? shellWords(ins.args);
      const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length);
      const paths = words.filter((w) => !w.startsWith('--'));
      return { from, sources: paths.slice(0, -1), dest: paths.at(-1) ?? '', ins };
    });
}

const normPath = (p: string): string => p.replace(/^\.\//, '').replace(/^\/app\//, '').replace(/\/+$/, '');

function installsProdOnly(command: string): boolean {
  return /\bnpm\s+(ci|install|i)\b[^&|;]*(--omit[= ]dev|--only[= ]prod(uction)?|--production)\b/.test(command);
}

// ---------------------------------------------------------------------------------------
// Dockerfile checks
// ---------------------------------------------------------------------------------------

type DockerContext = { buildIncludes: string[]; tscEntry: string; startScriptArgs: string[] | undefined };

const OFFICIAL_NODE20_SLIM = /^(docker\.io\/)?(library\/)?node:20(\.\d+){0,2}(-[a-z0-9]+)*-slim(@sha256:[0-9a-f]{64})?$/;

function dockerfileChecks(ctx: DockerContext): Array<Check<Dockerfile>> {
  return [
    {
      name: 'multi-stage build: at least two FROM',
      run: (df) => (df.stages.length >= 2 ? undefined : `found ${df.stages.length} FROM instruction(s)`),
    },
    {
      name: 'every stage is based on the official node:20 slim image',
      run: (df) => {
        const bad = df.stages.filter((s) => !OFFICIAL_NODE20_SLIM.test(s.image));
        return bad.length ? `not official node:20*-slim: ${bad.map((s) => s.image).join(', ')}` : undefined;
      },
    },
    {
      name: 'a build stage installs python3, make and g++ with apt (for better-sqlite3)',
      run: (df) => {
        const buildRuns = df.stages.slice(0, -1).flatMap((s) => s.instructions.filter((i) => i.cmd === 'RUN'));
        const ok = buildRuns.some(
          (i) => /apt-get\s+install/.test(i.args) && ['python3', 'make', 'g\\+\\+'].every((p) => new RegExp(`\\s${p}(\\s|$)`).test(i.args)),
        );
        return ok ? undefined : 'no RUN apt-get install ... python3 make g++ before the final stage';
      },
    },
    {
      name: 'the runtime stage installs no compiler toolchain',
      run: (df) => {
        const runs = finalStage(df)?.instructions.filter((i) => i.cmd === 'RUN') ?? [];
        const bad = runs.find((i) => /apt-get\s+install|apk\s+add|\bg\+\+|build-essential|python3|\bmake\b/.test(i.args));
        return bad ? `line ${bad.line}: ${bad.args}` : undefined;
      },
    },
    {
      name: 'the runtime stage gets production-only node_modules (npm prune/ci --omit=dev)',
      run: (df) => {
        const runtime = finalStage(df);
        if (!runtime) return 'no stages';
        const runtimeRuns = runtime.instructions.filter((i) => i.cmd === 'RUN');
        const fullInstall = runtimeRuns.find((i) => /\bnpm\s+(ci|install|i)\b/.test(i.args) && !installsProdOnly(i.args));
        if (fullInstall) return `line ${fullInstall.line} installs dev dependencies: ${fullInstall.args}`;
        if (runtimeRuns.some((i) => installsProdOnly(i.args))) return undefined;
        const nm = copies(runtime).find((c) => c.sources.some((s) => normPath(s) === 'node_modules'));
        if (!nm) return 'runtime stage neither installs nor copies node_modules';
        if (nm.from === undefined) return `line ${nm.ins.line} copies node_modules from the build context`;
        const source = df.stages.find((s) => s.name === nm.from || String(s.index) === nm.from);
        if (!source) return `node_modules copied from unknown stage ${nm.from}`;
        const runs = source.instructions.filter((i) => i.cmd === 'RUN').map((i) => i.args);
        const installAt = runs.findIndex((r) => /\bnpm\s+(ci|install|i)\b/.test(r));
        const pruneAt = runs.findLastIndex(
          (r) => /\bnpm\s+prune\b[^&|;]*(--omit[= ]dev|--production)/.test(r) || installsProdOnly(r),
        );
        if (pruneAt < 0) return `stage ${nm.from} never runs npm prune --omit=dev`;
        if (installAt > pruneAt) return `stage ${nm.from} installs again after pruning`;
        return undefined;
      },
    },
    {
      name: 'NODE_ENV=production in the runtime stage',
      run: (df) => {
        const stage = finalStage(df);
        const v = stage ? stageEnv(stage).get('NODE_ENV') : undefined;
        return v === 'production' ? undefined : `NODE_ENV is ${v ?? 'unset'}`;
      },
    },
    {
      name: 'the runtime stage copies only node_modules, dist and package.json from the build stage',
      run: (df) => {
        const stage = finalStage(df);
        if (!stage) return 'no stages';
        const cs = copies(stage);
        const fromContext = cs.find((c) => c.from === undefined);
        if (fromContext) return `line ${fromContext.ins.line} copies from the build context: ${fromContext.ins.args}`;
        const copied = new Set(cs.flatMap((c) => c.sources.map(normPath)));
        const allowed = new Set(['node_modules', 'dist', 'package.json']);
        const extra = [...copied].filter((p) => !allowed.has(p));
        const missing = [...allowed].filter((p) => !copied.has(p));
        if (extra.length) return `unexpected: ${extra.join(', ')}`;
        if (missing.length) return `missing: ${missing.join(', ')}`;
        return undefined;
      },
    },
    {
      name: 'the build stage copies every directory tsconfig.build.json compiles',
      run: (df) => {
        const copyingStages = df.stages.filter((s) => s.instructions.some((i) => i.cmd === 'RUN' && /npm\s+run\s+build/.test(i.args)));
        if (copyingStages.length === 0) return 'no stage runs npm run build';
        const sources = new Set(copyingStages.flatMap((s) => copies(s).flatMap((c) => c.sources.map(normPath))));
        if (sources.has('.') || sources.has('')) return undefined;
        const missing = ctx.buildIncludes.map(normPath).filter((dir) => !sources.has(dir));
        return missing.length ? `not copied: ${missing.join(', ')}` : undefined;
      },
    },
    {
      name: 'a non-root USER is set after the last FROM',
      run: (df) => {
        const stage = finalStage(df);
        const user = stage?.instructions.filter((i) => i.cmd === 'USER').at(-1);
        if (!user) return 'no USER in the final stage (the container would run as root)';
        const name = user.args.split(':')[0]!.trim();
        return name === 'root' || name === '0' || name === '' ? `USER ${user.args}` : undefined;
      },
    },
    {
      name: 'EXPOSE 3000',
      run: (df) => {
        const stage = finalStage(df);
        const ports = stage?.instructions.filter((i) => i.cmd === 'EXPOSE').flatMap((i) => i.args.split(/\s+/)) ?? [];
        return ports.some((p) => p === '3000' || p === '3000/tcp') ? undefined : `EXPOSE ${ports.join(' ') || 'missing'}`;
      },
    },
    {
      name: 'ENV HOST=0.0.0.0 and PORT=3000 in the runtime stage',
      run: (df) => {
        const stage = finalStage(df);
        const env = stage ? stageEnv(stage) : new Map<string, string>();
        return env.get('HOST') === '0.0.0.0' && env.get('PORT') === '3000'
          ? undefined
          : `HOST=${env.get('HOST') ?? 'unset'} PORT=${env.get('PORT') ?? 'unset'}`;
      },
    },
    {
      name: 'HEALTHCHECK probes /api/health/live with node fetch (no curl/wget) and exits non-zero on failure',
      run: (df) => {
        const hc = finalStage(df)?.instructions.filter((i) => i.cmd === 'HEALTHCHECK').at(-1);
        if (!hc) return 'no HEALTHCHECK in the final stage';
        const m = /^(?:--[a-z-]+=\S+\s+)*CMD\s+(.*)$/is.exec(hc.args);
        if (!m) return `HEALTHCHECK ${hc.args}`;
        const argv = execForm(m[1]!);
        const command = argv ? argv.join(' ') : m[1]!;
        const program = argv ? argv[0] : command.trim().split(/\s+/)[0];
        if (program !== 'node') return `runs ${program}, not node`;
        if (/\b(curl|wget)\b/.test(command)) return 'uses curl/wget';
        if (!/\bfetch\s*\(/.test(command)) return 'does not call fetch()';
        if (!command.includes('/api/health/live')) return 'does not probe /api/health/live';
        if (!/127\.0\.0\.1|localhost/.test(command)) return 'does not probe the local server';
        if (!/process\.exit\(\s*1\s*\)|process\.exitCode\s*=\s*1/.test(command)) return 'never exits non-zero';
        return undefined;
      },
    },
    {
      name: 'CMD is exec-form node on the compiled server (no npm, no shell)',
      run: (df) => {
        const stage = finalStage(df);
        const cmd = stage?.instructions.filter((i) => i.cmd === 'CMD').at(-1);
        if (!cmd) return 'no CMD in the final stage';
        const argv = execForm(cmd.args);
        if (!argv) return `shell form: CMD ${cmd.args}`;
        if (argv[0] !== 'node') return `CMD starts with ${argv[0]}`;
        if (argv.some((a) => /\bnpm\b/.test(a))) return 'CMD goes through npm';
        if (!argv.includes(ctx.tscEntry)) return `CMD does not run ${ctx.tscEntry} (tsc output of src/server.ts)`;
        const entrypoint = stage?.instructions.find((i) => i.cmd === 'ENTRYPOINT');
        if (entrypoint) return `ENTRYPOINT ${entrypoint.args} overrides the base image's`;
        return undefined;
      },
    },
    {
      name: 'CMD runs the package.json start script: the same node flags and file',
      run: (df) => {
        const argv = execForm(finalStage(df)?.instructions.filter((i) => i.cmd === 'CMD').at(-1)?.args ?? '');
        if (!ctx.startScriptArgs) return 'package.json start script is not `node [--flags] <file>`';
        const expected = ['node', ...ctx.startScriptArgs];
        return JSON.stringify(argv) === JSON.stringify(expected) ? undefined : `CMD ${JSON.stringify(argv)} vs start ${JSON.stringify(expected)}`;
      },
    },
    {
      name: 'VOLUME /app/data, DATABASE_PATH inside it, and the directory is owned by node',
      run: (df) => {
        const stage = finalStage(df);
        if (!stage) return 'no stages';
        const volumes = stage.instructions
          .filter((i) => i.cmd === 'VOLUME')
          .flatMap((i) => execForm(i.args) ?? i.args.split(/\s+/))
          .map((v) => v.replace(/\/+$/, ''));
        if (!volumes.includes('/app/data')) return `VOLUME ${volumes.join(' ') || 'missing'}`;
        const dbPath = stageEnv(stage).get('DATABASE_PATH');
        if (!dbPath?.startsWith('/app/data/')) return `DATABASE_PATH=${dbPath ?? 'unset'}`;
        const userAt = stage.instructions.findIndex((i) => i.cmd === 'USER');
        const chownAt = stage.instructions.findIndex(
          (i) => i.cmd === 'RUN' && /\bchown\s+(-R\s+)?node(:node)?\s+(\S+\s+)*\/app\/data\b/.test(i.args),
        );
        if (chownAt < 0) return '/app/data is not chowned to node';
        if (userAt >= 0 && chownAt > userAt) return 'chown runs after USER (it would fail)';
        return undefined;
      },
    },
    {
      name: 'no ENV/ARG sets a secret or a password, and no .env file is copied',
      run: (df) => {
        for (const i of df.instructions) {
          const pairs = i.cmd === 'ENV' ? envPairs(i.args) : i.cmd === 'ARG' ? argPairs(i.args) : [];
          for (const [k, v] of pairs) {
            if (SECRET_NAME.test(k)) return `line ${i.line}: ${i.cmd} ${k}`;
            if (v && URL_WITH_PASSWORD.test(v)) return `line ${i.line}: ${i.cmd} ${k} holds a URL with a password`;
          }
          if ((i.cmd === 'COPY' || i.cmd === 'ADD') && /(^|[\s/"])\.env\b/.test(i.args)) return `line ${i.line} copies .env`;
        }
        return undefined;
      },
    },
  ];
}

// ---------------------------------------------------------------------------------------
// .dockerignore checks
// ---------------------------------------------------------------------------------------

const dockerignorePatterns = (text: string): string[] =>
  text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => (l.startsWith('!') ? l : l.replace(/^\/+/, '').replace(/^\*\*\//, '').replace(/\/+(\*\*)?$/, '')));

const REQUIRED_IGNORES = ['node_modules', '.env', '.git', 'dist', 'data', 'coverage', '.tap', 'bench/results', 'test'];

const dockerignoreChecks: Array<Check<string>> = [
  ...REQUIRED_IGNORES.map(
    (entry): Check<string> => ({
      name: `.dockerignore excludes ${entry}`,
      run: (text) => (dockerignorePatterns(text).includes(entry) ? undefined : `${entry} is not listed`),
    }),
  ),
  {
    name: '.dockerignore does not re-include .env or node_modules',
    run: (text) => {
      const bad = dockerignorePatterns(text).find((p) => /^!.*(\.env|node_modules)/.test(p));
      return bad ? `re-included by ${bad}` : undefined;
    },
  },
];

// ---------------------------------------------------------------------------------------
// A small YAML reader for docker-compose.yml. It covers block mappings and sequences,
// quoted and plain scalars, JSON-style flow sequences and comments; anything else
// (anchors, block scalars, multi-line scalars) is rejected with an error, so the test
// fails loudly rather than checking something it misread.
// ---------------------------------------------------------------------------------------

type YamlValue = string | number | boolean | null | YamlValue[] | { [key: string]: YamlValue };
type YamlLine = { indent: number; text: string; no: number };

function stripYamlComment(s: string): string {
  let quote: string | undefined;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    const prev = i === 0 ? ' ' : s[i - 1]!;
    if (quote) {
      if (quote === '"' && c === '\\') i++;
      else if (c === quote) {
        if (quote === "'" && s[i + 1] === "'") i++;
        else quote = undefined;
      }
      continue;
    }
    if ((c === '"' || c === "'") && /[\s:[\]{},-]/.test(prev)) quote = c;
    else if (c === '#' && /\s/.test(prev)) return s.slice(0, i);
  }
  return s;
}

const YAML_KEY = /^("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s"'#:[\]{},][^:]*?)\s*:(?:\s+(.*))?$/;
const isSeqItem = (text: string): boolean => /^-(\s|$)/.test(text);

function parseYaml(text: string): YamlValue {
  const lines: YamlLine[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    if (/^(---|\.\.\.)\s*$/.test(raw)) return;
    if (/^\s*\t/.test(raw)) throw new Error(`YAML line ${i + 1}: tab indentation`);
    const body = stripYamlComment(raw).trimEnd();
    if (body.trim() === '') return;
    lines.push({ indent: body.length - body.trimStart().length, text: body.trimStart(), no: i + 1 });
  });
  let pos = 0;
  const fail = (l: YamlLine, why: string): never => {
    throw new Error(`YAML line ${l.no}: ${why}: ${l.text}`);
  };

  const scalar = (s: string, l: YamlLine): YamlValue => {
    if (/^[&*!|>%@`]/.test(s)) return fail(l, 'unsupported YAML construct');
    if (s.startsWith('"')) {
      if (!/^"(?:[^"\\]|\\.)*"$/.test(s)) return fail(l, 'unterminated or multi-line double-quoted scalar');
      return JSON.parse(s) as string;
    }
    if (s.startsWith("'")) {
      if (!/^'(?:[^']|'')*'$/.test(s)) return fail(l, 'unterminated or multi-line single-quoted scalar');
      return s.slice(1, -1).replace(/''/g, "'");
    }
    if (s.startsWith('[') || s.startsWith('{')) {
      try {
        return JSON.parse(s) as YamlValue;
      } catch {
        if (s.startsWith('[') && s.endsWith(']') && !/[[\]{}]/.test(s.slice(1, -1))) {
          const inner = s.slice(1, -1).trim();
          return inner === '' ? [] : inner.split(',').map((part) => scalar(part.trim(), l));
        }
        return fail(l, 'unsupported flow collection');
      }
    }
    if (s === '~' || s === 'null') return null;
    if (s === 'true' || s === 'false') return s === 'true';
    if (/^-?\d+(\.\d+)?$/.test(s)) return Number(s);
    return s;
  };

  const block = (indent: number): YamlValue => {
    const first = lines[pos];
    if (!first) return null;
    return isSeqItem(first.text) ? sequence(indent) : mapping(indent);
  };

  const sequence = (indent: number): YamlValue[] => {
    const out: YamlValue[] = [];
    while (pos < lines.length) {
      const l = lines[pos]!;
      if (l.indent < indent || (l.indent === indent && !isSeqItem(l.text))) break;
      if (l.indent > indent) fail(l, 'unexpected indentation');
      const rest = l.text.replace(/^-\s*/, '');
      if (rest === '') {
        pos++;
        const next = lines[pos];
        out.push(next && next.indent > indent ? block(next.indent) : null);
      } else if (YAML_KEY.test(rest) || isSeqItem(rest)) {
        // "- key: value" starts a mapping (or "- - x" a sequence) indented past the dash.
        const inner = indent + (l.text.length - rest.length);
        lines[pos] = { ...l, indent: inner, text: rest };
        out.push(block(inner));
      } else {
        pos++;
        out.push(scalar(rest, l));
      }
    }
    return out;
  };

  const mapping = (indent: number): { [key: string]: YamlValue } => {
    const out: { [key: string]: YamlValue } = {};
    while (pos < lines.length) {
      const l = lines[pos]!;
      if (l.indent < indent) break;
      if (l.indent > indent) fail(l, 'unexpected indentation');
      if (isSeqItem(l.text)) break;
      const m = YAML_KEY.exec(l.text);
      if (!m) return fail(l, 'expected "key: value"');
      const rawKey = m[1]!;
      const key = rawKey.startsWith('"') || rawKey.startsWith("'") ? String(scalar(rawKey, l)) : rawKey;
      if (key === '<<') fail(l, 'merge keys are not supported');
      if (Object.hasOwn(out, key)) fail(l, `duplicate key ${key}`);
      const rest = m[2]?.trim() ?? '';
      pos++;
      if (rest !== '') {
        out[key] = scalar(rest, l);
        continue;
      }
      const next = lines[pos];
      if (next && next.indent > indent) out[key] = block(next.indent);
      else if (next && next.indent === indent && isSeqItem(next.text)) out[key] = sequence(indent);
      else out[key] = null;
    }
    return out;
  };

  const doc = block(0);
  if (pos < lines.length) fail(lines[pos]!, 'unexpected content');
  return doc;
}

// ---------------------------------------------------------------------------------------
// docker-compose.yml checks
// ---------------------------------------------------------------------------------------

type YamlMap = { [key: string]: YamlValue };
const isMap = (v: YamlValue | undefined): v is YamlMap => typeof v === 'object' && v !== null && !Array.isArray(v);
const asMap = (v: YamlValue | undefined): YamlMap => (isMap(v) ? v : {});
const asList = (v: YamlValue | undefined): YamlValue[] => (Array.isArray(v) ? v : []);
const asText = (v: YamlValue | undefined): string =>
  Array.isArray(v) ? v.map((x) => String(x)).join(' ') : v === undefined || v === null ? '' : String(v);

const services = (doc: YamlValue): YamlMap => asMap(asMap(doc).services);
const service = (doc: YamlValue, name: string): YamlMap => asMap(services(doc)[name]);

function environment(svc: YamlMap): Map<string, string> {
  const env = new Map<string, string>();
  const raw = svc.environment;
  if (Array.isArray(raw)) {
    for (const item of raw) {
      const s = String(item);
      const eq = s.indexOf('=');
      env.set(eq < 0 ? s : s.slice(0, eq), eq < 0 ? '' : s.slice(eq + 1));
    }
  } else for (const [k, v] of Object.entries(asMap(raw))) env.set(k, asText(v));
  return env;
}

/** The value following `flag` in a command line (`--flag value` or `--flag=value`). */
function flagValue(command: string, flag: string): string | undefined {
  const words = shellWords(command);
  for (let i = 0; i < words.length; i++) {
    if (words[i] === flag) return words[i + 1];
    if (words[i]!.startsWith(`${flag}=`)) return words[i]!.slice(flag.length + 1);
  }
  return undefined;
}

const redisPassword = (doc: YamlValue): string | undefined =>
  flagValue(asText(service(doc, 'redis').command), '--requirepass');

/** The named volume mounted at `target`, if it is declared at the top level. */
function namedVolumeAt(doc: YamlValue, svc: YamlMap, target: string): string | undefined {
  const declared = asMap(asMap(doc).volumes);
  for (const v of asList(svc.volumes)) {
    const [source, dest] = isMap(v) ? [asText(v.source), asText(v.target)] : asText(v).split(':');
    if (dest?.replace(/\/+$/, '') === target && source && Object.hasOwn(declared, source)) return source;
  }
  return undefined;
}

const composeChecks: Array<Check<YamlValue>> = [
  {
    name: 'compose: redis service uses image redis:7',
    run: (doc) => {
      const image = asText(service(doc, 'redis').image);
      return /^(docker\.io\/)?(library\/)?redis:7(\.\d+){0,2}(-[a-z0-9.]+)?$/.test(image) ? undefined : `image ${image || 'missing'}`;
    },
  },
  {
    name: 'compose: redis requires a password and caps memory at 256mb with allkeys-lru',
    run: (doc) => {
      const command = asText(service(doc, 'redis').command);
      const password = redisPassword(doc);
      if (!password || password.startsWith('--')) return `no --requirepass value in: ${command || 'missing command'}`;
      if (flagValue(command, '--maxmemory') !== '256mb') return '--maxmemory is not 256mb';
      if (flagValue(command, '--maxmemory-policy') !== 'allkeys-lru') return '--maxmemory-policy is not allkeys-lru';
      return undefined;
    },
  },
  {
    name: 'compose: redis healthcheck pings with redis-cli -a <the same password>',
    run: (doc) => {
      const test = asText(asMap(service(doc, 'redis').healthcheck).test);
      if (!/\bredis-cli\b/.test(test) || !/\bping\b/i.test(test)) return `healthcheck test: ${test || 'missing'}`;
      const password = redisPassword(doc);
      const given = flagValue(test.replace(/^CMD(-SHELL)?\s+/, ''), '-a');
      return password && given === password ? undefined : `redis-cli -a ${given ?? '(none)'} vs --requirepass ${password ?? '(none)'}`;
    },
  },
  {
    name: 'compose: redis keeps its data in a named volume',
    run: (doc) => (namedVolumeAt(doc, service(doc, 'redis'), '/data') ? undefined : 'no declared named volume at /data'),
  },
  {
    name: 'compose: redis is not published on the host (it would clash with a host Redis on 6379)',
    run: (doc) => {
      const ports = asList(service(doc, 'redis').ports).map((p) => asText(isMap(p) ? p.published : p));
      return ports.length ? `redis publishes ${ports.join(', ')}` : undefined;
    },
  },
  {
    name: 'compose: app is built from . and publishes 3000:3000',
    run: (doc) => {
      const app = service(doc, 'app');
      const context = isMap(app.build) ? asText(app.build.context) : asText(app.build);
      if (!['.', './'].includes(context)) return `build ${context || 'missing'}`;
      const ports = asList(app.ports).map((p) => asText(p));
      return ports.includes('3000:3000') ? undefined : `ports ${ports.join(', ') || 'missing'}`;
    },
  },
  {
    name: "compose: app's REDIS_URL points at the redis service with redis' password",
    run: (doc) => {
      const url = environment(service(doc, 'app')).get('REDIS_URL') ?? '';
      const m = /^rediss?:\/\/(?:[^:@/]*:([^@/]+)@)?([^:/]+):(\d+)(\/\d*)?$/.exec(url);
      if (!m) return `REDIS_URL=${url || 'unset'}`;
      const [, password, host, port] = m;
      if (host !== 'redis' || !Object.hasOwn(services(doc), host)) return `host ${host} is not the redis service`;
      if (port !== '6379') return `port ${port}`;
      if (password !== redisPassword(doc)) return `password ${password ?? '(none)'} differs from --requirepass`;
      return undefined;
    },
  },
  {
    name: 'compose: app takes JWT_SECRET from the environment (required, no literal)',
    run: (doc) => {
      const v = environment(service(doc, 'app')).get('JWT_SECRET');
      return v !== undefined && /^\$\{JWT_SECRET:\?[^}]*\}$/.test(v) ? undefined : `JWT_SECRET=${v ?? 'unset'}`;
    },
  },
  {
    name: 'compose: app runs with NODE_ENV=production',
    run: (doc) => {
      const v = environment(service(doc, 'app')).get('NODE_ENV');
      return v === 'production' ? undefined : `NODE_ENV=${v ?? 'unset'}`;
    },
  },
  {
    name: 'compose: app keeps /app/data in a named volume',
    run: (doc) => (namedVolumeAt(doc, service(doc, 'app'), '/app/data') ? undefined : 'no declared named volume at /app/data'),
  },
  {
    name: 'compose: app waits for a healthy redis',
    run: (doc) => {
      const dep = asMap(asMap(service(doc, 'app').depends_on).redis);
      return dep.condition === 'service_healthy' ? undefined : `depends_on.redis.condition=${asText(dep.condition) || 'unset'}`;
    },
  },
  {
    name: 'compose: no literal secrets (passwords come from ${VAR} interpolation)',
    run: (doc) => {
      for (const [name, svc] of Object.entries(services(doc))) {
        for (const [k, v] of environment(asMap(svc))) {
          if (SECRET_NAME.test(k) && !/^\$\{[A-Z0-9_]+(:?[-?][^}]*)?\}$/.test(v)) return `${name}.${k} is a literal`;
        }
      }
      const password = redisPassword(doc) ?? '';
      return /^\$\{REDIS_PASSWORD(:?[-?][^}]*)?\}$/.test(password) ? undefined : `--requirepass ${password} is a literal`;
    },
  },
];

// ---------------------------------------------------------------------------------------
// Load the real files
// ---------------------------------------------------------------------------------------

function dockerContext(): DockerContext {
  const buildPath = join(root, 'tsconfig.build.json');
  const build = ts.readConfigFile(buildPath, ts.sys.readFile);
  if (build.error) throw new Error(ts.flattenDiagnosticMessageText(build.error.messageText, '\n'));
  const parsed = ts.parseJsonConfigFileContent(build.config, ts.sys, root, undefined, buildPath);
  let include = (build.config as { include?: string[] }).include;
  const extendsPath = (build.config as { extends?: string }).extends;
  if (!include && extendsPath) {
    const base = ts.readConfigFile(resolve(root, extendsPath), ts.sys.readFile);
    include = (base.config as { include?: string[] } | undefined)?.include;
  }
  const outDir = parsed.options.outDir ?? root;
  const rootDir = parsed.options.rootDir ?? root;
  const tscEntry = relative(root, join(outDir, relative(rootDir, join(root, 'src/server.ts')))).replace(/\.ts$/, '.js');
  const pkg = JSON.parse(readRepoFile('package.json')) as { scripts?: Record<string, string> };
  const start = /^node\s+((?:--\S+\s+)*)(\S+\.m?js)\s*$/.exec(pkg.scripts?.start ?? '');
  const startScriptEntry = start?.[2]?.replace(/^\.\//, '');
  return {
    buildIncludes: (include ?? []).map((p) => p.split('/')[0]!).filter((p) => p && !p.includes('*')),
    tscEntry,
    startScriptArgs: start && startScriptEntry ? [...(start[1] ?? '').split(/\s+/).filter(Boolean), startScriptEntry] : undefined,
  };
}

const ctx = dockerContext();
const dockerfileText = readRepoFile('Dockerfile');
const dockerignoreText = readRepoFile('.dockerignore');
const composeText = readRepoFile('docker-compose.yml');
const ciRunPath = join(root, '.ci/run');
const ciRunText = readFileSync(ciRunPath, 'utf8');

t.test('Dockerfile', async (tt) => {
  tt.equal(ctx.tscEntry, 'dist/src/server.js', 'tsc builds src/server.ts to dist/src/server.js');
  const df = parseDockerfile(dockerfileText);
  for (const check of dockerfileChecks(ctx)) tt.equal(check.run(df), undefined, check.name);
});

t.test('.dockerignore', async (tt) => {
  for (const check of dockerignoreChecks) tt.equal(check.run(dockerignoreText), undefined, check.name);
});

t.test('docker-compose.yml', async (tt) => {
  const doc = parseYaml(composeText);
  tt.ok(isMap(doc) && isMap(doc.services), 'has a services mapping');
  tt.same(Object.keys(services(doc)).sort(), ['app', 'redis'], 'services are app and redis');
  for (const check of composeChecks) tt.equal(check.run(doc), undefined, check.name);
});

// ---------------------------------------------------------------------------------------
// .ci/run
// ---------------------------------------------------------------------------------------

t.test('.ci/run: static checks', async (tt) => {
  const mode = statSync(ciRunPath).mode;
  tt.ok(mode & 0o100, 'is executable by its owner');
  const staged = spawnSync('git', ['ls-files', '--stage', '--', '.ci/run'], { cwd: root, encoding: 'utf8' });
  if (staged.status === 0 && staged.stdout.trim()) {
    tt.match(staged.stdout, /^100755 /, 'git records it as executable');
  }
  tt.match(ciRunText, /^#!\s*(\/usr\/bin\/env\s+bash|\/bin\/bash|\/usr\/bin\/bash)\b/, 'bash shebang');
  tt.match(ciRunText, /^\s*set -euo pipefail\s*$/m, 'set -euo pipefail');
  const syntax = spawnSync('bash', ['-n', ciRunPath], { encoding: 'utf8' });
  tt.equal(syntax.status, 0, `bash -n accepts it ${syntax.stderr}`);

  const code = ciRunText
    .split('\n')
    .filter((l) => !/^\s*#/.test(l))
    .join('\n');
  const at = (re: RegExp): number => code.search(re);
  const steps: Array<[string, RegExp]> = [
    ['npm ci', /\bnpm\s+ci\b/],
    ['npm run build', /\bnpm\s+run\s+build\b/],
    ['npm run typecheck', /\bnpm\s+run\s+typecheck\b/],
    ['npm run lint', /\bnpm\s+run\s+lint\b/],
    ['npm test', /\bnpm\s+(test|t|run\s+test)\b/],
  ];
  for (const [name, re] of steps) tt.ok(at(re) >= 0, `runs ${name}`);
  const positions = steps.map(([, re]) => at(re));
  tt.same([...positions].sort((a, b) => a - b), positions, 'in the order ci, build, typecheck, lint, test');
  tt.match(code, /command -v "\$cmd"/, 'looks for each tool on PATH');
  tt.match(code, /^ensure_tool redis-server redis-server /m, 'ensures redis-server (package redis-server)');
  tt.match(code, /^ensure_tool valgrind valgrind /m, 'ensures valgrind (package valgrind)');
  tt.match(code, /apt-get update/, 'runs apt-get update');
  tt.match(code, /apt-get install -y "\$pkg"/, 'installs a missing tool with apt-get');
  tt.match(code, /CI:?-?\}?"?\s*=+\s*"?true/, 'has a CI=true branch');
  tt.match(code, /exit 1/, 'has an exit 1 failure path');
  tt.notMatch(
    code,
    /redis-cli[^\n]*\bshutdown\b|\b(service|systemctl|invoke-rc\.d)\b[^\n]*redis|redis-server\s+(--|\S+\.conf)|\bpkill\b|\bkillall\b/i,
    'never starts or stops a Redis server itself',
  );
});

const scratch = mkdtempSync(join(tmpdir(), 'ci-run-test-'));
t.teardown(() => rmSync(scratch, { recursive: true, force: true }));

let systemToolsDir: string | undefined;
/** A directory of symlinks to every program on PATH except redis-server, valgrind, npm, apt-get and sudo. */
function systemTools(): string {
  if (systemToolsDir) return systemToolsDir;
  const sys = join(scratch, 'sys');
  mkdirSync(sys);
  const hidden = new Set(['redis-server', 'valgrind', 'npm', 'apt-get', 'sudo']);
  for (const p of (process.env.PATH ?? '').split(':')) {
    let names: string[];
    try {
      names = readdirSync(p);
    } catch {
      continue;
    }
    for (const name of names) {
      if (!hidden.has(name) && !existsSync(join(sys, name))) symlinkSync(join(p, name), join(sys, name));
    }
  }
  return (systemToolsDir = sys);
}

/**
 * Runs .ci/run with npm, apt-get and sudo replaced by stubs that log their arguments,
 * and with redis-server hidden unless the scenario provides it.
 */
function runCiScript(opts: {
  ci: boolean;
  redisPresent: boolean;
  aptProvidesRedis: boolean;
  /** valgrind on PATH (default true), and whether apt-get can install it. */
  valgrindPresent?: boolean;
  aptProvidesValgrind?: boolean;
  npmFailsOn?: string;
}): { status: number | null; output: string; npm: string[]; apt: string[]; npmCwd: string[] } {
  const dir = mkdtempSync(join(scratch, 'run-'));
  const stubs = join(dir, 'stubs');
  const log = join(dir, 'log');
  mkdirSync(stubs);
  writeFileSync(log, '');
  const stub = (name: string, body: string): void => {
    writeFileSync(join(stubs, name), `#!/bin/sh\n${body}\n`);
    chmodSync(join(stubs, name), 0o755);
  };
  const redisStub = 'echo "redis-server stub"';
  if (opts.redisPresent) stub('redis-server', redisStub);
  const valgrindStub = 'echo "valgrind stub"';
  if (opts.valgrindPresent ?? true) stub('valgrind', valgrindStub);
  stub('npm', `echo "npm $* @ $PWD" >> "${log}"\n[ "$*" = "${opts.npmFailsOn ?? '<none>'}" ] && exit 1\nexit 0`);
  stub(
    'apt-get',
    [
      `echo "apt-get $*" >> "${log}"`,
      'case "$*" in *install*redis-server*)',
      opts.aptProvidesRedis
        ? `  printf '#!/bin/sh\\n${redisStub}\\n' > "${stubs}/redis-server"; chmod 755 "${stubs}/redis-server"; exit 0;;`
        : '  echo "E: Unable to locate package redis-server" >&2; exit 100;;',
      'esac',
      'case "$*" in *install*valgrind*)',
      opts.aptProvidesValgrind
        ? `  printf '#!/bin/sh\\n${valgrindStub}\\n' > "${stubs}/valgrind"; chmod 755 "${stubs}/valgrind"; exit 0;;`
        : '  echo "E: Unable to locate package valgrind" >&2; exit 100;;',
      'esac',
      'exit 0',
    ].join('\n'),
  );
  stub('sudo', 'exec "$@"');

  const env: NodeJS.ProcessEnv = { PATH: `${stubs}:${systemTools()}`, HOME: dir, LANG: 'C' };
  if (opts.ci) env.CI = 'true';
  const res = spawnSync('bash', [ciRunPath], { cwd: dir, env, encoding: 'utf8', timeout: 30_000 });
  const lines = readFileSync(log, 'utf8').split('\n').filter(Boolean);
  const npmLines = lines.filter((l) => l.startsWith('npm '));
  return {
    status: res.status,
    output: `${res.stdout}${res.stderr}`,
    npm: npmLines.map((l) => l.replace(/^npm /, '').replace(/ @ .*$/, '')),
    npmCwd: [...new Set(npmLines.map((l) => l.replace(/^.* @ /, '')))],
    apt: lines.filter((l) => l.startsWith('apt-get ')).map((l) => l.replace(/^apt-get /, '')),
  };
}

const ALL_STEPS = ['ci', 'run build', 'run typecheck', 'run lint', 'test'];

t.test('.ci/run: behaviour with stubbed npm and apt-get', async (tt) => {
  tt.test('redis-server present: no apt-get, all steps in order from the repo root', async (t2) => {
    const r = runCiScript({ ci: true, redisPresent: true, aptProvidesRedis: false });
    t2.equal(r.status, 0, 'exits 0', { output: r.output });
    t2.same(r.apt, [], 'apt-get not called');
    t2.same(r.npm, ALL_STEPS, 'npm ci, build, typecheck, lint, test');
    t2.same(r.npmCwd, [root], 'npm runs in the repository root');
    for (const word of ['npm ci', 'build', 'typecheck', 'lint', 'test']) t2.match(r.output, word, `prints the ${word} step`);
  });

  tt.test('redis-server missing: apt-get update + install, then everything runs', async (t2) => {
    const r = runCiScript({ ci: true, redisPresent: false, aptProvidesRedis: true });
    t2.equal(r.status, 0, 'exits 0', { output: r.output });
    t2.same(r.apt.slice(0, 1), ['update'], 'apt-get update first');
    t2.match(r.apt[1] ?? '', /^install -y (\S+ )*redis-server$/, 'then apt-get install -y redis-server');
    t2.same(r.npm, ALL_STEPS, 'then npm ci, build, typecheck, lint, test');
  });

  tt.test('CI=true and redis-server still missing: exit 1 with a clear message, no tests', async (t2) => {
    const r = runCiScript({ ci: true, redisPresent: false, aptProvidesRedis: false });
    t2.equal(r.status, 1, 'exits 1', { output: r.output });
    t2.match(r.output, /redis-server/, 'says redis-server is missing');
    t2.notOk(r.npm.includes('test'), 'does not run the tests');
    t2.notOk(r.npm.includes('run build'), 'stops before the build');
  });

  tt.test('outside CI, a missing redis-server is only a warning', async (t2) => {
    const r = runCiScript({ ci: false, redisPresent: false, aptProvidesRedis: false });
    t2.equal(r.status, 0, 'exits 0', { output: r.output });
    t2.match(r.output, /warning: .*redis-server/, 'warns about redis-server');
    t2.same(r.npm, ALL_STEPS, 'still runs every step');
  });

  tt.test('valgrind missing: apt-get installs it, then everything runs', async (t2) => {
    const r = runCiScript({ ci: true, redisPresent: true, aptProvidesRedis: false, valgrindPresent: false, aptProvidesValgrind: true });
    t2.equal(r.status, 0, 'exits 0', { output: r.output });
    t2.same(r.apt.slice(0, 1), ['update'], 'apt-get update first');
    t2.match(r.apt[1] ?? '', /^install -y (\S+ )*valgrind$/, 'then apt-get install -y valgrind');
    t2.same(r.npm, ALL_STEPS, 'then npm ci, build, typecheck, lint, test');
  });

  tt.test('CI=true and valgrind still missing: exit 1 with a clear message, no tests', async (t2) => {
    const r = runCiScript({ ci: true, redisPresent: true, aptProvidesRedis: false, valgrindPresent: false, aptProvidesValgrind: false });
    t2.equal(r.status, 1, 'exits 1', { output: r.output });
    t2.match(r.output, /valgrind is still not on PATH/, 'says valgrind is missing');
    t2.notOk(r.npm.includes('test'), 'does not run the tests');
  });

  tt.test('a failing step fails the script and stops it', async (t2) => {
    const lint = runCiScript({ ci: true, redisPresent: true, aptProvidesRedis: false, npmFailsOn: 'run lint' });
    t2.not(lint.status, 0, 'lint failure -> non-zero exit');
    t2.notOk(lint.npm.includes('test'), 'tests are not run after a lint failure');
    const test = runCiScript({ ci: true, redisPresent: true, aptProvidesRedis: false, npmFailsOn: 'test' });
    t2.not(test.status, 0, 'test failure -> non-zero exit');
  });
});

// ---------------------------------------------------------------------------------------
// Each check must be able to fail: feed it a broken copy of the real file.
// ---------------------------------------------------------------------------------------

type Mutation = { check: string; mutate: (text: string) => string };

function replaceOrThrow(text: string, re: RegExp, by: string): string {
  const out = text.replace(re, by);
  if (out === text) throw new Error(`mutation pattern ${re} did not match`);
  return out;
}

t.test('checks catch broken variants of the real files', async (tt) => {
  const dfChecks = dockerfileChecks(ctx);
  const dfMutations: Mutation[] = [
    { check: 'multi-stage build: at least two FROM', mutate: (s) => replaceOrThrow(s, /^FROM .*AS runtime$/m, '') },
    { check: 'every stage is based on the official node:20 slim image', mutate: (s) => s.replace(/node:20-bookworm-slim/g, 'node:20') },
    { check: 'every stage is based on the official node:20 slim image', mutate: (s) => s.replace(/node:20-bookworm-slim/g, 'someone/node:20-slim') },
    {
      check: 'a build stage installs python3, make and g++ with apt (for better-sqlite3)',
      mutate: (s) => replaceOrThrow(s, / g\+\+/, ''),
    },
    {
      check: 'the runtime stage installs no compiler toolchain',
      mutate: (s) => replaceOrThrow(s, /^USER /m, 'RUN apt-get update && apt-get install -y g++\nUSER '),
    },
    { check: 'the runtime stage gets production-only node_modules (npm prune/ci --omit=dev)', mutate: (s) => replaceOrThrow(s, /npm prune --omit=dev/, 'true') },
    {
      check: 'the runtime stage gets production-only node_modules (npm prune/ci --omit=dev)',
      mutate: (s) => replaceOrThrow(s, /^USER /m, 'RUN npm ci\nUSER '),
    },
    { check: 'NODE_ENV=production in the runtime stage', mutate: (s) => replaceOrThrow(s, /NODE_ENV=production/, 'NODE_ENV=development') },
    {
      check: 'the runtime stage copies only node_modules, dist and package.json from the build stage',
      mutate: (s) => replaceOrThrow(s, /^USER /m, 'COPY src ./src\nUSER '),
    },
    { check: 'the build stage copies every directory tsconfig.build.json compiles', mutate: (s) => replaceOrThrow(s, /^COPY routes .*$/m, '') },
    { check: 'a non-root USER is set after the last FROM', mutate: (s) => replaceOrThrow(s, /^USER node$/m, '') },
    { check: 'a non-root USER is set after the last FROM', mutate: (s) => replaceOrThrow(s, /^USER node$/m, 'USER root') },
    {
      check: 'a non-root USER is set after the last FROM',
      // USER placed in the build stage only
      mutate: (s) => replaceOrThrow(replaceOrThrow(s, /^USER node$/m, ''), /^WORKDIR \/app$/m, 'WORKDIR /app\nUSER node'),
    },
    { check: 'EXPOSE 3000', mutate: (s) => replaceOrThrow(s, /^EXPOSE 3000$/m, 'EXPOSE 8080') },
    { check: 'ENV HOST=0.0.0.0 and PORT=3000 in the runtime stage', mutate: (s) => replaceOrThrow(s, /HOST=0\.0\.0\.0/, 'HOST=127.0.0.1') },
    {
      check: 'HEALTHCHECK probes /api/health/live with node fetch (no curl/wget) and exits non-zero on failure',
      mutate: (s) => replaceOrThrow(s, /^HEALTHCHECK[\s\S]*?\n(?=\S)/m, 'HEALTHCHECK CMD curl -f http://127.0.0.1:3000/api/health/live || exit 1\n'),
    },
    {
      check: 'HEALTHCHECK probes /api/health/live with node fetch (no curl/wget) and exits non-zero on failure',
      mutate: (s) => replaceOrThrow(s, /\/api\/health\/live/, '/'),
    },
    {
      check: 'HEALTHCHECK probes /api/health/live with node fetch (no curl/wget) and exits non-zero on failure',
      mutate: (s) => s.replace(/process\.exit\(1\)/g, 'process.exit(0)').replace(/r\.ok \? 0 : 1/, '0'),
    },
    {
      check: 'CMD is exec-form node on the compiled server (no npm, no shell)',
      mutate: (s) => replaceOrThrow(s, /^CMD \[.*\]$/m, 'CMD ["npm", "start"]'),
    },
    {
      check: 'CMD is exec-form node on the compiled server (no npm, no shell)',
      mutate: (s) => replaceOrThrow(s, /^CMD \[.*\]$/m, 'CMD node dist/src/server.js'),
    },
    {
      check: 'CMD is exec-form node on the compiled server (no npm, no shell)',
      mutate: (s) => replaceOrThrow(s, /^CMD \[.*\]$/m, 'CMD ["node", "dist/server.js"]'),
    },
    {
      check: 'CMD runs the package.json start script: the same node flags and file',
      mutate: (s) => replaceOrThrow(s, /^CMD \[.*\]$/m, 'CMD ["node", "dist/src/other.js"]'),
    },
    {
      check: 'CMD runs the package.json start script: the same node flags and file',
      mutate: (s) => replaceOrThrow(s, /^CMD \[.*\]$/m, 'CMD ["node", "--no-concurrent-marking", "dist/src/server.js"]'),
    },
    {
      check: 'VOLUME /app/data, DATABASE_PATH inside it, and the directory is owned by node',
      mutate: (s) => replaceOrThrow(s, /^VOLUME \/app\/data$/m, ''),
    },
    {
      check: 'VOLUME /app/data, DATABASE_PATH inside it, and the directory is owned by node',
      mutate: (s) => replaceOrThrow(s, /chown node:node \/app\/data/, 'true'),
    },
    {
      check: 'no ENV/ARG sets a secret or a password, and no .env file is copied',
      mutate: (s) => replaceOrThrow(s, /^USER /m, 'ENV JWT_SECRET=dev-secret\nUSER '),
    },
    {
      check: 'no ENV/ARG sets a secret or a password, and no .env file is copied',
      mutate: (s) => replaceOrThrow(s, /^USER /m, 'ARG REDIS_PASSWORD\nUSER '),
    },
    {
      check: 'no ENV/ARG sets a secret or a password, and no .env file is copied',
      mutate: (s) => replaceOrThrow(s, /^USER /m, 'ENV REDIS_URL=redis://:hunter2@redis:6379\nUSER '),
    },
  ];
  for (const { check, mutate } of dfMutations) {
    const c = dfChecks.find((x) => x.name === check);
    if (!c) {
      tt.fail(`unknown check ${check}`);
      continue;
    }
    const problem = c.run(parseDockerfile(mutate(dockerfileText)));
    tt.ok(problem, `Dockerfile check fails on a broken copy: ${check} -> ${problem}`);
  }
  tt.same(
    [...new Set(dfMutations.map((m) => m.check))].sort(),
    dfChecks.map((c) => c.name).sort(),
    'every Dockerfile check has a broken variant',
  );

  for (const c of dockerignoreChecks) {
    const broken = c.name.includes('re-include')
      ? `${dockerignoreText}\n!.env\n`
      : dockerignoreText
          .split('\n')
          .filter((l) => l.trim() !== c.name.replace('.dockerignore excludes ', ''))
          .join('\n');
    const problem = c.run(broken);
    tt.ok(problem, `.dockerignore check fails on a broken copy: ${c.name} -> ${problem}`);
  }

  const composeMutations: Mutation[] = [
    { check: 'compose: redis service uses image redis:7', mutate: (s) => replaceOrThrow(s, /image: redis:7/, 'image: redis:6') },
    {
      check: 'compose: redis requires a password and caps memory at 256mb with allkeys-lru',
      mutate: (s) => replaceOrThrow(s, /--requirepass \S+ /, ''),
    },
    {
      check: 'compose: redis requires a password and caps memory at 256mb with allkeys-lru',
      mutate: (s) => replaceOrThrow(s, /allkeys-lru/, 'noeviction'),
    },
    {
      check: 'compose: redis healthcheck pings with redis-cli -a <the same password>',
      mutate: (s) => replaceOrThrow(s, /redis-cli -a \\"[^"]*\\"/, 'redis-cli'),
    },
    { check: 'compose: redis keeps its data in a named volume', mutate: (s) => replaceOrThrow(s, /redis-data:\/data/, './redis:/data') },
    {
      check: 'compose: redis is not published on the host (it would clash with a host Redis on 6379)',
      mutate: (s) => replaceOrThrow(s, /^ {4}image: redis:7$/m, '    image: redis:7\n    ports:\n      - "6379:6379"'),
    },
    { check: 'compose: app is built from . and publishes 3000:3000', mutate: (s) => replaceOrThrow(s, /"3000:3000"/, '"8080:3000"') },
    {
      check: "compose: app's REDIS_URL points at the redis service with redis' password",
      mutate: (s) => replaceOrThrow(s, /@redis:6379/, '@localhost:6379'),
    },
    {
      check: "compose: app's REDIS_URL points at the redis service with redis' password",
      mutate: (s) => replaceOrThrow(s, /redis:\/\/:\$\{REDIS_PASSWORD:-change-me\}@/, 'redis://'),
    },
    {
      check: 'compose: app takes JWT_SECRET from the environment (required, no literal)',
      mutate: (s) => replaceOrThrow(s, /"\$\{JWT_SECRET:\?[^}]*\}"/, 'dev-secret'),
    },
    { check: 'compose: app runs with NODE_ENV=production', mutate: (s) => replaceOrThrow(s, /NODE_ENV: production/, 'NODE_ENV: development') },
    { check: 'compose: app keeps /app/data in a named volume', mutate: (s) => replaceOrThrow(s, /app-data:\/app\/data/, './data:/app/data') },
    { check: 'compose: app waits for a healthy redis', mutate: (s) => replaceOrThrow(s, /service_healthy/, 'service_started') },
    {
      check: 'compose: no literal secrets (passwords come from ${VAR} interpolation)',
      mutate: (s) => s.replace(/\$\{REDIS_PASSWORD:-change-me\}/g, 'hunter2'),
    },
  ];
  for (const { check, mutate } of composeMutations) {
    const c = composeChecks.find((x) => x.name === check);
    if (!c) {
      tt.fail(`unknown check ${check}`);
      continue;
    }
    const problem = c.run(parseYaml(mutate(composeText)));
    tt.ok(problem, `compose check fails on a broken copy: ${check} -> ${problem}`);
  }
  tt.same(
    [...new Set(composeMutations.map((m) => m.check))].sort(),
    composeChecks.map((c) => c.name).sort(),
    'every compose check has a broken variant',
  );

  tt.throws(() => parseYaml('a:\n  b: &anchor x\n'), /unsupported/, 'the YAML reader rejects what it cannot read');
  tt.throws(() => parseYaml('a: "unterminated\n  rest"\n'), /unterminated/, 'the YAML reader rejects multi-line scalars');
});
