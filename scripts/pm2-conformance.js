#!/usr/bin/env node
// Runs each ecosystem file twice against the real PM2 — once as `pm2 start <file>`, once published through
// `ferry-controller publish` and applied by a `ferry-agent once` driving PM2 — and prints, per app, the fields whose
// effective values differ. Called by scripts/pm2-conformance (which builds Ferry and finds PM2); see its header.
//
// A file may carry directives in comments:   conformance: env=production        (pm2 start --env / publish --env-name)
//                                           conformance: no-stand-ins          (generate no missing script)
// and an app's files are generated as stand-ins (an idle node, bash or python program) unless a directory
// `<file name>.d/` next to the file provides them.
'use strict';
const fs = require('fs'), path = require('path'), os = require('os'), cp = require('child_process'), net = require('net');

const pm2 = process.env.PM2;
const bin = process.env.FERRY_BIN;
if (!pm2 || !bin) { console.error('pm2-conformance.js: run it through scripts/pm2-conformance'); process.exit(2); }
const pm2Root = path.resolve(path.dirname(fs.realpathSync(pm2)), '..');
const yaml = require(path.join(pm2Root, 'node_modules', 'js-yaml'));
const basePath = [path.dirname(process.execPath), '/usr/local/bin', '/usr/bin', '/bin'].join(':');
const verbose = process.argv.includes('--verbose');

// Fields compared per instance, with PM2's effective default where the field may be absent.
const compared = {
  exec_mode: undefined, status: undefined, exec_interpreter: undefined, pm_exec_path: undefined, pm_cwd: undefined,
  args: [], node_args: [], instances: undefined, autorestart: true, max_restarts: 16, min_uptime: 1000, kill_timeout: 1600,
  restart_delay: 0, exp_backoff_restart_delay: undefined, max_memory_restart: undefined, cron_restart: undefined,
  instance_var: 'NODE_APP_INSTANCE', increment_var: undefined, wait_ready: false, listen_timeout: undefined,
  shutdown_with_message: false, source_map_support: undefined, disable_source_map_support: undefined, vizion: true,
  treekill: true, pmx: true, automation: true, stop_exit_codes: undefined, log_date_format: undefined, log_type: undefined,
  disable_logs: undefined, filter_env: undefined, time: undefined, force: undefined, trace: undefined, v8: undefined,
  event_loop_inspector: undefined, deep_monitoring: undefined, windowsHide: true, kill_retry_time: 100, write: undefined,
  post_update: undefined, autostart: true, merge_logs: undefined,
};
// Fields Ferry owns on the instance: shown, never counted as a difference.
const owned = ['namespace', 'pm_out_log_path', 'pm_err_log_path', 'pm_log_path', 'pm_pid_path', 'watch', 'ignore_watch',
  'watch_options', 'watch_delay', 'username'];
// Environment variables every PM2 process gets from its own CLI, not from the file.
const processEnv = new Set(['PATH', 'HOME', 'PM2_HOME', 'NO_COLOR', 'PM2_USAGE', 'PM2_JSON_PROCESSING', 'unique_id', 'PWD',
  'PM2_INTERACTOR_PROCESSING', 'PM2_DISCRETE_MODE']);

function run(command, args, options = {}) {
  const result = cp.spawnSync(command, args, { encoding: 'utf8', timeout: 120000, ...options });
  return { status: result.status, stdout: result.stdout || '', stderr: result.stderr || '', error: result.error };
}

function which(name) {
  if (!name || name === 'none') return name;
  if (name.includes('/')) return fs.existsSync(name) ? fs.realpathSync(name) : name;
  for (const dir of basePath.split(':')) {
    const candidate = path.join(dir, name);
    try { fs.accessSync(candidate, fs.constants.X_OK); return fs.realpathSync(candidate); } catch (_) { /* next */ }
  }
  return name;
}

function freePort() {
  return new Promise((resolve) => { const s = net.createServer(); s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); }); });
}

function evaluate(file) {
  const text = fs.readFileSync(file, 'utf8');
  if (/\.ya?ml$/.test(file)) return yaml.load(text);
  if (/\.json$/.test(file)) return require('vm').runInNewContext('(' + text + ')', {}, { timeout: 1000 });
  const value = require(path.resolve(file));
  return typeof value === 'function' ? value() : value;
}

function appsOf(document) {
  const apps = document && (document.apps || document.pm2) ? (document.apps || document.pm2) : document;
  return [].concat(apps || []).filter((app) => app && typeof app === 'object');
}

// Writes an idle stand-in for every script of the file that is not a program on PATH and not provided.
function standIns(tree, apps) {
  for (const app of apps) {
    const script = app.script || app.cmd || app.command || app.exec;
    if (typeof script !== 'string' || script.includes(' ')) continue;
    const cwd = typeof app.cwd === 'string' && !path.isAbsolute(app.cwd) ? path.join(tree, app.cwd) : tree;
    const file = path.resolve(cwd, script);
    if (fs.existsSync(file) || (!script.includes('/') && !path.extname(script) && which(script) !== script)) continue;
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const ext = path.extname(file);
    if (ext === '.sh') fs.writeFileSync(file, 'while true; do sleep 1; done\n');
    else if (ext === '.py') fs.writeFileSync(file, 'import time\nwhile True:\n    time.sleep(1)\n');
    else fs.writeFileSync(file, "const port = Number(process.env.PORT || 0);\n" +
      "if (port) require('http').createServer((q, s) => s.end('ok')).listen(port, '127.0.0.1');\n" +
      "if (process.send) process.send('ready');\nsetInterval(() => {}, 1000);\n");
  }
}

function copyTree(from, to) {
  fs.mkdirSync(to, { recursive: true });
  for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name), target = path.join(to, entry.name);
    if (entry.isDirectory()) copyTree(source, target);
    else if (entry.isSymbolicLink()) fs.symlinkSync(fs.readlinkSync(source), target);
    else { fs.copyFileSync(source, target); fs.chmodSync(target, fs.statSync(source).mode & 0o777); }
  }
}

function jlist(home) {
  const out = run(pm2, ['jlist'], { env: { PATH: basePath, HOME: os.homedir(), PM2_HOME: home, NO_COLOR: '1' } });
  const line = out.stdout.split('\n').reverse().find((l) => l.trim().startsWith('['));
  return line ? JSON.parse(line) : [];
}

function kill(home) { run(pm2, ['kill'], { env: { PATH: basePath, HOME: os.homedir(), PM2_HOME: home, NO_COLOR: '1' } }); }

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The effective value of every compared field of one instance, with paths relative to the app root.
function effective(proc, root, declaredEnv) {
  const env = proc.pm2_env || {};
  const result = {};
  const relative = (p) => {
    if (typeof p !== 'string') return p;
    if (p === root) return '.';
    if (p.startsWith(root + '/')) return p.slice(root.length + 1);
    return which(p);
  };
  for (const [key, fallback] of Object.entries(compared)) {
    let value = env[key];
    if (value === undefined || value === null) value = fallback;
    if (key === 'pm_exec_path' || key === 'pm_cwd') value = relative(value);
    if (key === 'exec_interpreter') value = value && value.startsWith(root + '/') ? relative(value) : which(value);
    result[key] = JSON.stringify(value);
  }
  const appEnv = env.env || {};
  for (const key of Object.keys(appEnv).sort()) {
    if (processEnv.has(key) || key === env.name || key.startsWith('PM2_') || key === 'pm_id' || key === 'io') continue;
    if (declaredEnv && !declaredEnv.has(key) && !['PORT', 'PYTHONUNBUFFERED', 'NODE_APP_INSTANCE'].includes(key)) continue;
    // What the process sees: spawn turns every value into text.
    result['env.' + key] = JSON.stringify(String(appEnv[key]));
  }
  return result;
}

function byName(table, namespace) {
  const apps = new Map();
  for (const proc of table.filter((p) => !namespace || (p.pm2_env && p.pm2_env.namespace === namespace))) {
    if (!apps.has(proc.name)) apps.set(proc.name, []);
    apps.get(proc.name).push(proc);
  }
  for (const list of apps.values()) list.sort((a, b) => (a.pm2_env.NODE_APP_INSTANCE || 0) - (b.pm2_env.NODE_APP_INSTANCE || 0));
  return apps;
}

function ownedSummary(list) {
  const env = (list[0] && list[0].pm2_env) || {};
  return owned.filter((key) => env[key] !== undefined && env[key] !== false).map((key) => key).join(', ');
}

async function main() {
  const inputs = process.argv.slice(2).filter((a) => a !== '--verbose');
  const files = [];
  for (const input of inputs) {
    if (fs.statSync(input).isDirectory()) {
      for (const name of fs.readdirSync(input).sort()) {
        if (/(\.config\.(c|m)?js|\.json|\.ya?ml)$/.test(name) && !name.startsWith('_')) files.push(path.join(input, name));
      }
    } else files.push(input);
  }
  if (files.length === 0) { console.error('pm2-conformance: no ecosystem files given'); process.exit(2); }

  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-conformance-'));
  const cleanup = [];
  let failures = 0;
  try {
    // One controller for every file; each file is a service with an agent of its own.
    run(path.join(bin, 'ferry-controller'), ['keygen', '--out', path.join(work, 'operator')]);
    const port = await freePort();
    const controllerLog = fs.openSync(path.join(work, 'controller.log'), 'w');
    const controller = cp.spawn(path.join(bin, 'ferry-controller'), ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir',
      path.join(work, 'controller'), '--trusted-key', path.join(work, 'operator.pub')], { stdio: ['ignore', controllerLog, controllerLog] });
    cleanup.push(() => controller.kill('SIGTERM'));
    for (let i = 0; i < 100 && !fs.readFileSync(path.join(work, 'controller.log'), 'utf8').includes('listening on'); i++) await sleep(100);
    // Enroll tokens are scoped: each agent gets one for its own service, usable once.
    const token = (role, scope = []) => run(path.join(bin, 'ferry-controller'), ['token', 'create', '--data-dir', path.join(work, 'controller'),
      '--role', role].concat(scope)).stdout.trim();
    const operatorToken = token('operator');
    const url = `http://127.0.0.1:${port}`;

    for (const [index, file] of files.entries()) {
      const label = path.basename(file);
      const text = fs.readFileSync(file, 'utf8');
      const envName = (text.match(/conformance:\s*env=(\S+)/) || [])[1];
      const tree = path.join(work, `tree-${index}`);
      const provided = file + '.d';
      if (fs.existsSync(provided)) copyTree(provided, tree); else fs.mkdirSync(tree, { recursive: true });
      const ecosystem = path.join(tree, path.basename(file));
      fs.copyFileSync(file, ecosystem);
      let apps = [];
      try { apps = appsOf(evaluate(ecosystem)); } catch (error) { /* both sides will say why */ }
      // `conformance: no-stand-ins` keeps the tree as provided (a file about a missing script).
      if (!/conformance:\s*no-stand-ins/.test(text)) standIns(tree, apps);
      const declared = new Map();
      for (const app of apps) {
        const keys = new Set(Object.keys(app.env || {}));
        if (envName && app['env_' + envName]) Object.keys(app['env_' + envName]).forEach((k) => keys.add(k));
        declared.set(app.name, keys);
      }

      // A: pm2 start <file>, from the app's root, with a minimal environment.
      const homeA = path.join(work, `pm2-a-${index}`);
      cleanup.push(() => kill(homeA));
      const started = run(pm2, ['start', ecosystem].concat(envName ? ['--env', envName] : []),
        { cwd: tree, env: { PATH: basePath, HOME: os.homedir(), PM2_HOME: homeA, NO_COLOR: '1' } });
      await sleep(2500);
      const tableA = started.status === 0 ? jlist(homeA) : [];
      const pm2Failure = (started.stdout + started.stderr).split('\n').filter((l) => /\[PM2\]\[(ERROR|WARN)\]|Error:/.test(l)).join(' | ');
      kill(homeA);

      // B: publish through Ferry, applied by an agent driving the same PM2.
      const artifact = path.join(work, `artifact-${index}.tgz`);
      run('tar', ['czf', artifact, '-C', tree, '.']);
      const service = `conformance-${index}`;
      const publish = run(path.join(bin, 'ferry-controller'), ['publish', '--controller', url, '--token', operatorToken,
        '--key', path.join(work, 'operator.key'), '--service', service, '--version', '1.0.0', '--artifact', artifact,
        '--ecosystem', ecosystem, '--stable-seconds', '1'].concat(envName ? ['--env-name', envName] : []),
        { env: { PATH: basePath, HOME: os.homedir() } });
      const refusal = publish.status === 0 ? null : publish.stderr.trim();
      let tableB = [];
      const homeB = path.join(work, `pm2-b-${index}`);
      const stateB = path.join(work, `agent-${index}`);
      if (!refusal) {
        cleanup.push(() => kill(homeB));
        const config = path.join(stateB, 'agent.json');
        fs.mkdirSync(stateB, { recursive: true });
        const enrolled = run(path.join(bin, 'ferry-agent'), ['enroll', '--controller', url, '--token', token('enroll', ['--service', service, '--max-uses', '1']), '--service', service,
          '--config', config, '--trusted-key', path.join(work, 'operator.pub'), '--name', `agent-${index}`, '--state-dir',
          path.join(stateB, 'state'), '--process-manager', 'pm2', '--pm2', pm2, '--pm2-home', homeB], { env: { PATH: basePath, HOME: os.homedir() } });
        if (enrolled.status !== 0) throw new Error(`enroll failed: ${enrolled.stderr}`);
        const once = run(path.join(bin, 'ferry-agent'), ['once', '--config', config], { env: { PATH: basePath, HOME: os.homedir() } });
        if (verbose || once.status !== 0) console.log(`  [${label}] ferry-agent once exited ${once.status}: ${once.stdout.trim().split('\n').slice(-3).join(' | ')}`);
        tableB = jlist(homeB);
        kill(homeB);
      }

      // Compare.
      const root = fs.realpathSync(tree);
      const a = byName(tableA), b = byName(tableB, 'ferry');
      const lines = [];
      if (refusal) {
        const why = refusal.split('\n').filter((l) => !l.startsWith('warning:')).join(' ').slice(0, 600);
        if (started.status === 0 && tableA.length > 0) {
          lines.push(`REFUSED by Ferry although PM2 runs it: ${why}`);
          failures++;
        } else {
          lines.push(`REFUSED, and PM2 fails on it too — Ferry: ${why} — PM2: ${pm2Failure.slice(0, 300) || 'exit ' + started.status}`);
        }
      } else if (tableA.length === 0) {
        lines.push(`DIFFERENT: PM2 runs nothing (${pm2Failure.slice(0, 300) || 'exit ' + started.status}) but Ferry published it`);
        failures++;
      } else {
        const names = [...new Set([...a.keys(), ...b.keys()])].sort();
        let same = true;
        for (const name of names) {
          const listA = a.get(name) || [], listB = b.get(name) || [];
          const diffs = [];
          if (listA.length !== listB.length) diffs.push(`instances: pm2 ${listA.length}, ferry ${listB.length}`);
          const currentB = path.join(stateB, 'state', 'services', service, 'current');
          for (let i = 0; i < Math.min(listA.length, listB.length); i++) {
            const fa = effective(listA[i], root, declared.get(name)), fb = effective(listB[i], currentB, declared.get(name));
            for (const key of [...new Set([...Object.keys(fa), ...Object.keys(fb)])].sort()) {
              if (fa[key] !== fb[key]) diffs.push(`[${i}] ${key}: pm2 ${fa[key]}, ferry ${fb[key]}`);
            }
          }
          const ownedFields = ownedSummary(listA);
          if (diffs.length) { same = false; lines.push(`app ${JSON.stringify(name)}: ${diffs.join('; ')}`); }
          else if (verbose || ownedFields) lines.push(`app ${JSON.stringify(name)}: same${ownedFields ? ` (owned by Ferry, not compared: ${ownedFields})` : ''}`);
        }
        if (same) lines.unshift('SAME'); else { lines.unshift('DIFFERENT'); failures++; }
      }
      console.log(`${label}: ${lines[0]}`);
      for (const line of lines.slice(1)) console.log(`  ${line}`);
      if (verbose && publish.stderr.trim()) console.log(`  publish said: ${publish.stderr.trim().replace(/\n/g, '\n    ')}`);
    }
  } finally {
    for (const step of cleanup.reverse()) { try { step(); } catch (_) { /* keep cleaning */ } }
    if (!process.env.FERRY_KEEP_TEST_DIRS) fs.rmSync(work, { recursive: true, force: true }); else console.log(`kept ${work}`);
  }
  console.log(failures === 0 ? `pm2-conformance: ${files.length} file(s): every one SAME, or refused where PM2 fails too`
    : `pm2-conformance: ${failures} of ${files.length} file(s) differ`);
  process.exit(failures === 0 ? 0 : 1);
}

main().catch((error) => { console.error(error && error.stack || error); process.exit(2); });
