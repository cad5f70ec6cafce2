// The Hodei dashboard: a small single-page app over the public REST API
// (/api/v1/...) and its Server-Sent Events. No build step, no dependencies.
'use strict';

const TOKEN_KEY = 'hodei.apiToken';
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled', 'timeout']);
// Label of a retried job naming the job it retries (set by the server).
const RETRY_OF_LABEL = 'hodei.retry_of';
const JOB_STATES = ['pending', 'scheduled', 'running', 'succeeded', 'failed', 'cancelled', 'timeout'];
const PAGE_SIZE = 25;
const REFRESH_MS = 2000;

// ---- small helpers ----------------------------------------------------------

const $ = (sel, root = document) => root.querySelector(sel);
const view = () => $('#view');

function esc(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  }[c]));
}

function badge(state) {
  return `<span class="badge s-${esc(state)}" data-state="${esc(state)}">${esc(state)}</span>`;
}

function shortId(id) {
  return id ? String(id).slice(0, 8) : '';
}

function fmtTime(t) {
  return t ? new Date(t).toLocaleString() : '—';
}

function fmtDuration(ms) {
  if (ms == null || ms < 0) return '—';
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} m ${Math.floor(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} m`;
}

function ago(t) {
  return t ? `${fmtDuration(Date.now() - new Date(t).getTime())} ago` : '—';
}

/** How long a job ran (or has been running / waiting). */
function jobDuration(j) {
  const start = j.started_at || j.created_at;
  const end = j.finished_at ? new Date(j.finished_at).getTime() : Date.now();
  return start ? end - new Date(start).getTime() : null;
}

function flash(msg, ok = false) {
  const f = $('#flash');
  if (!msg) { f.hidden = true; return; }
  f.textContent = msg;
  f.className = ok ? 'flash ok' : 'flash';
  f.hidden = false;
}

// ---- the API, with the stored token ----------------------------------------

function token() {
  return localStorage.getItem(TOKEN_KEY) || '';
}

function headers(extra = {}) {
  const h = { ...extra };
  if (token()) h.Authorization = `Bearer ${token()}`;
  return h;
}

class ApiError extends Error {
  constructor(status, body) {
    const detail = body && body.error ? body.error : null;
    super(detail ? `${detail.message}${detail.field ? ` (${detail.field})` : ''}` : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

async function api(path, opts = {}) {
  const res = await fetch(path, { ...opts, headers: headers(opts.headers) });
  if (res.status === 401 || res.status === 403) askToken(res.status);
  if (!res.ok) {
    let body = null;
    try { body = await res.json(); } catch (_) { /* not JSON */ }
    throw new ApiError(res.status, body);
  }
  const type = res.headers.get('content-type') || '';
  return type.includes('json') ? res.json() : res.text();
}

function askToken(status) {
  $('#token-why').textContent = status === 403
    ? 'The saved API token may not do this. Enter another one:'
    : 'This server asks for an API token. It is kept in this browser only.';
  $('#token-form').hidden = false;
  $('#token-input').focus();
}

function setupToken() {
  $('#token-button').addEventListener('click', () => {
    const f = $('#token-form');
    f.hidden = !f.hidden;
  });
  $('#token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    localStorage.setItem(TOKEN_KEY, $('#token-input').value.trim());
    $('#token-input').value = '';
    $('#token-form').hidden = true;
    route();
  });
  $('#token-clear').addEventListener('click', () => {
    localStorage.removeItem(TOKEN_KEY);
    $('#token-form').hidden = true;
  });
}

/** Provider names by id, for tables that only carry ids. */
let providerNames = {};
async function loadProviderNames() {
  try {
    const { providers } = await api('/api/v1/providers');
    providerNames = Object.fromEntries(providers.map((p) => [p.id, p.name]));
    return providers;
  } catch (_) {
    return [];
  }
}

// ---- routing ----------------------------------------------------------------

/** Cleanup of the current view (timers, open streams). */
let leave = () => {};

function route() {
  leave();
  leave = () => {};
  flash('');
  const hash = location.hash.replace(/^#/, '') || '/jobs';
  const parts = hash.split('?')[0].split('/').filter(Boolean);
  document.querySelectorAll('[data-nav]').forEach((a) => {
    a.classList.toggle('on', a.dataset.nav === parts[0] && parts.length === 1);
  });
  if (parts[0] === 'jobs' && parts[1]) return jobPage(decodeURIComponent(parts[1]));
  if (parts[0] === 'submit') return submitPage();
  if (parts[0] === 'workers') return workersPage();
  return jobsPage();
}

/** Runs `fn` now and every `ms` until the view is left. */
function every(ms, fn) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try { await fn(); } catch (e) { flash(e.message); }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

// ---- jobs list --------------------------------------------------------------

const listFilter = { state: '', name: '', label: '', page: 0 };

function jobsPage() {
  view().innerHTML = `
    <h1>Jobs</h1>
    <div class="toolbar">
      <select id="f-state" aria-label="State"><option value="">any state</option>
        ${JOB_STATES.map((s) => `<option value="${s}">${s}</option>`).join('')}</select>
      <input id="f-name" placeholder="name contains…" aria-label="Name">
      <input id="f-label" placeholder="label key=value" aria-label="Label">
      <span class="muted" id="jobs-count"></span>
      <span style="flex:1"></span>
      <a href="#/submit"><button type="button">Submit a job</button></a>
    </div>
    <table id="jobs"><thead><tr>
      <th>State</th><th>Name</th><th>Labels</th><th>Attempts</th><th>Duration</th>
      <th>Worker / provider</th><th>Created</th></tr></thead><tbody></tbody></table>
    <div class="pager">
      <button type="button" class="ghost" id="prev">← Newer</button>
      <span id="page-no"></span>
      <button type="button" class="ghost" id="next">Older →</button>
    </div>`;
  $('#f-state').value = listFilter.state;
  $('#f-name').value = listFilter.name;
  $('#f-label').value = listFilter.label;
  const refresh = () => load().catch((e) => flash(e.message));
  for (const [id, key] of [['#f-state', 'state'], ['#f-name', 'name'], ['#f-label', 'label']]) {
    const set = (e) => {
      if (listFilter[key] === e.target.value) return;
      listFilter[key] = e.target.value;
      listFilter.page = 0;
      refresh();
    };
    $(id).addEventListener('input', set);
    $(id).addEventListener('change', set);
  }
  $('#prev').addEventListener('click', () => { listFilter.page -= 1; refresh(); });
  $('#next').addEventListener('click', () => { listFilter.page += 1; refresh(); });
  $('#jobs tbody').addEventListener('click', (e) => {
    const tr = e.target.closest('tr[data-id]');
    if (tr && !e.target.closest('a')) location.hash = `#/jobs/${tr.dataset.id}`;
  });

  // The API pages by `limit` (newest first); name and label filters apply in the
  // page, so ask for enough rows to fill the page asked for.
  async function load() {
    const filtering = listFilter.name || listFilter.label;
    const want = filtering ? 10000 : (listFilter.page + 1) * PAGE_SIZE + 1;
    const q = new URLSearchParams({ limit: String(Math.min(want, 10000)) });
    if (listFilter.state) q.set('state', listFilter.state);
    const [{ jobs }] = await Promise.all([api(`/api/v1/jobs?${q}`), loadProviderNames()]);
    const name = listFilter.name.toLowerCase();
    const [lk, lv] = listFilter.label.split('=').map((s) => s.trim());
    const matching = jobs.filter((j) => (!name || j.name.toLowerCase().includes(name))
      && (!lk || (j.spec.labels && lk in j.spec.labels && (lv === undefined || lv === '' || j.spec.labels[lk] === lv))));
    const from = listFilter.page * PAGE_SIZE;
    const rows = matching.slice(from, from + PAGE_SIZE);
    $('#jobs tbody').innerHTML = rows.map(jobRow).join('')
      || '<tr><td colspan="7" class="muted">No jobs.</td></tr>';
    $('#prev').disabled = listFilter.page === 0;
    $('#next').disabled = matching.length <= from + PAGE_SIZE;
    $('#page-no').textContent = `page ${listFilter.page + 1}`;
    $('#jobs-count').textContent = `${matching.length}${matching.length >= want - 1 ? '+' : ''} jobs`;
  }

  leave = every(REFRESH_MS, load);
}

function jobRow(j) {
  const labels = Object.entries(j.spec.labels || {})
    .map(([k, v]) => `<span class="label">${esc(k)}=${esc(v)}</span>`).join('');
  const provider = j.provider_id ? (providerNames[j.provider_id] || shortId(j.provider_id)) : '';
  return `<tr class="link" data-id="${esc(j.id)}">
    <td>${badge(j.state)}</td>
    <td><a href="#/jobs/${esc(j.id)}">${esc(j.name || shortId(j.id))}</a></td>
    <td>${labels}</td>
    <td>${j.attempts} / ${j.max_attempts}</td>
    <td>${fmtDuration(jobDuration(j))}</td>
    <td class="mono">${esc(shortId(j.worker_id))}${provider ? ` <span class="muted">on</span> ${esc(provider)}` : ''}</td>
    <td class="muted">${fmtTime(j.created_at)}</td></tr>`;
}

// ---- submit form ------------------------------------------------------------

/** Splits a command line into words, honouring single and double quotes. */
function splitWords(line) {
  const words = [];
  let cur = null;
  let quote = null;
  for (let i = 0; i < line.length; i += 1) {
    const c = line[i];
    if (quote) {
      if (c === quote) quote = null;
      else if (c === '\\' && quote === '"' && i + 1 < line.length) { cur += line[i + 1]; i += 1; }
      else cur += c;
    } else if (c === '"' || c === "'") { quote = c; cur = cur ?? ''; }
    else if (/\s/.test(c)) { if (cur !== null) { words.push(cur); cur = null; } }
    else if (c === '\\' && i + 1 < line.length) { cur = (cur ?? '') + line[i + 1]; i += 1; }
    else cur = (cur ?? '') + c;
  }
  if (quote) throw new Error('unclosed quote in the command');
  if (cur !== null) words.push(cur);
  return words;
}

/** `KEY=value` lines into an object (blank lines and # comments skipped). */
function pairs(text, what) {
  const out = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const at = line.indexOf('=');
    if (at < 1) throw new Error(`${what}: "${line}" is not KEY=value`);
    out[line.slice(0, at).trim()] = line.slice(at + 1);
  }
  return out;
}

async function submitPage() {
  view().innerHTML = `
    <h1>Submit a job</h1>
    <form id="submit-form" class="panel">
      <div class="form-row"><label for="s-name">Name</label><input id="s-name" name="name" size="40" placeholder="my-job"></div>
      <div class="form-row"><label>What to run</label>
        <div class="inline">
          <label><input type="radio" name="kind" value="command" checked> Command</label>
          <label><input type="radio" name="kind" value="script"> Script</label>
        </div></div>
      <div class="form-row" id="row-command"><input id="s-command" name="command" style="width:100%" class="mono"
        placeholder="echo hello world">
        <div class="hint">A program and its arguments, run without a shell (quotes group words).</div></div>
      <div class="form-row" id="row-script" hidden>
        <div class="inline" style="margin-bottom:6px"><label>Interpreter <input id="s-interpreter" name="interpreter" value="bash" size="10"></label></div>
        <textarea id="s-script" name="script" rows="8" placeholder="echo hello"></textarea></div>
      <div class="form-row"><label for="s-env">Environment</label>
        <textarea id="s-env" name="env" rows="3" placeholder="KEY=value, one a line"></textarea></div>
      <div class="form-row"><label for="s-labels">Labels</label>
        <textarea id="s-labels" name="labels" rows="2" placeholder="team=build, one a line"></textarea></div>
      <div class="inline form-row">
        <label>Timeout (seconds) <input id="s-timeout" name="timeout" type="number" min="1" value="3600" size="8"></label>
        <label>Attempts <input id="s-attempts" name="attempts" type="number" min="1" max="100" value="1" size="4"></label>
        <label>Provider <select id="s-provider" name="provider"><option value="">any</option></select></label>
      </div>
      <button type="submit" id="s-submit">Submit</button>
    </form>`;
  const form = $('#submit-form');
  form.addEventListener('change', () => {
    const script = form.kind.value === 'script';
    $('#row-command').hidden = script;
    $('#row-script').hidden = !script;
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const spec = { name: form.name.value.trim(), command: null };
      if (form.kind.value === 'script') {
        spec.command = { type: 'script', interpreter: form.interpreter.value.trim(), content: form.script.value };
      } else {
        const words = splitWords(form.command.value);
        spec.command = { type: 'shell', cmd: words[0] || '', args: words.slice(1) };
      }
      spec.env = pairs(form.env.value, 'environment');
      spec.labels = pairs(form.labels.value, 'labels');
      const timeout = Number(form.timeout.value);
      if (form.timeout.value !== '') spec.timeout_ms = Math.round(timeout * 1000);
      if (form.attempts.value !== '') spec.max_attempts = Number(form.attempts.value);
      if (form.provider.value) spec.preferences = { preferred_provider: form.provider.value };
      const job = await api('/api/v1/jobs', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(spec),
      });
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      flash(`Not submitted: ${err.message}`);
    }
  });
  const providers = await loadProviderNames();
  $('#s-provider').insertAdjacentHTML('beforeend',
    providers.map((p) => `<option value="${esc(p.name)}">${esc(p.name)} (${esc(p.type)})</option>`).join(''));
}

// ---- job page ---------------------------------------------------------------

function jobPage(id) {
  const opened = performance.now();
  view().innerHTML = `
    <h1><span id="j-name"></span> <span id="j-state"></span>
      <span style="flex:1"></span>
      <button type="button" id="j-retry" hidden>Retry</button>
      <button type="button" class="danger" id="j-cancel" hidden>Cancel</button></h1>
    <div class="panel"><div class="grid" id="j-facts"></div></div>
    <div class="panel"><b>Timeline</b><ul class="timeline" id="j-timeline"></ul></div>
    <div class="panel" id="j-error-panel" hidden><b>Error</b><div class="error-text" id="j-error"></div></div>
    <details class="panel"><summary><b>Spec</b></summary><pre class="spec mono" id="j-spec"></pre></details>
    <div class="log-tools">
      <b>Log</b> <span class="muted" id="log-count">0 lines</span>
      <span style="flex:1"></span>
      <input id="log-search" placeholder="search the whole log…" aria-label="Search the log">
      <span class="muted" id="log-hits"></span>
      <button type="button" class="ghost" id="log-prev">↑</button>
      <button type="button" class="ghost" id="log-next">↓</button>
      <label><input type="checkbox" id="log-follow" checked> follow</label>
      <button type="button" class="ghost" id="log-download">Download raw</button>
    </div>
    <div class="log" id="log"></div>`;
  let job = null;
  const log = new LogView($('#log'), opened);
  window.hodeiLog = log; // for tests and timings
  const stream = followLog(id, log);

  $('#j-cancel').addEventListener('click', async () => {
    $('#j-cancel').disabled = true;
    try {
      job = await api(`/api/v1/jobs/${id}/cancel`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ reason: 'cancelled from the dashboard' }),
      });
      show(job);
    } catch (e) {
      flash(`Not cancelled: ${e.message}`);
      $('#j-cancel').disabled = false;
    }
  });
  // A retry is a new job (same spec, labelled with this one's id): go to it.
  $('#j-retry').addEventListener('click', async () => {
    $('#j-retry').disabled = true;
    try {
      const retried = await api(`/api/v1/jobs/${id}/retry`, { method: 'POST' });
      location.hash = `#/jobs/${retried.id}`;
    } catch (e) {
      flash(`Not retried: ${e.message}`);
      $('#j-retry').disabled = false;
    }
  });
  $('#log-download').addEventListener('click', () => download(id));
  $('#log-follow').addEventListener('change', (e) => log.setFollow(e.target.checked));
  let searchTimer = null;
  $('#log-search').addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { log.search($('#log-search').value); }, 200);
  });
  $('#log-search').addEventListener('keydown', (e) => {
    if (e.key === 'Enter') { e.preventDefault(); log.search($('#log-search').value); log.jump(e.shiftKey ? -1 : 1); }
  });
  $('#log-next').addEventListener('click', () => log.jump(1));
  $('#log-prev').addEventListener('click', () => log.jump(-1));
  log.onHits = (cur, n, capped) => {
    $('#log-hits').textContent = n ? `${cur + 1} / ${n}${capped ? '+' : ''}` : ($('#log-search').value ? 'no match' : '');
  };
  log.onCount = (n) => { $('#log-count').textContent = `${n.toLocaleString()} lines`; };

  function show(j) {
    job = j;
    $('#j-name').textContent = j.name || shortId(j.id);
    $('#j-state').innerHTML = badge(j.state);
    $('#j-cancel').hidden = TERMINAL.has(j.state);
    $('#j-retry').hidden = !TERMINAL.has(j.state);
    const retryOf = (j.spec.labels || {})[RETRY_OF_LABEL];
    const provider = j.provider_id ? (providerNames[j.provider_id] || j.provider_id) : '—';
    const facts = [
      ['Job id', `<span class="mono">${esc(j.id)}</span>`],
      ['Attempts', `${j.attempts} of ${j.max_attempts}`],
      ['Exit code', j.exit_code ?? '—'],
      ['Duration', fmtDuration(jobDuration(j))],
      ['Worker', j.worker_id ? `<span class="mono">${esc(shortId(j.worker_id))}</span>` : '—'],
      ['Provider', esc(provider)],
      ['Priority', j.priority],
      ['Labels', Object.entries(j.spec.labels || {}).map(([k, v]) => `<span class="label">${esc(k)}=${esc(v)}</span>`).join('') || '—'],
      ['Secrets', j.secret_names.length ? esc(j.secret_names.join(', ')) : '—'],
      ['Correlation id', `<span class="mono">${esc(shortId(j.correlation_id))}</span>`],
    ];
    if (retryOf) facts.push(['Retry of', `<a class="mono" href="#/jobs/${esc(retryOf)}">${esc(shortId(retryOf))}</a>`]);
    $('#j-facts').innerHTML = facts.map(([k, v]) => `<div><b>${k}</b><span data-fact="${k}">${v}</span></div>`).join('');
    // The API exposes these three instants; per-attempt history is not in it.
    const steps = [['Submitted', j.created_at], ['Started', j.started_at],
      [j.finished_at ? `Finished (${j.state})` : 'Finished', j.finished_at]];
    $('#j-timeline').innerHTML = steps.map(([k, t]) => `<li class="${t ? '' : 'none'}"><b>${esc(k)}</b><br>${fmtTime(t)}</li>`).join('');
    $('#j-error-panel').hidden = !j.error;
    $('#j-error').textContent = j.error || '';
    const spec = JSON.stringify(j.spec, null, 2);
    if ($('#j-spec').textContent !== spec) $('#j-spec').textContent = spec;
  }

  const stopPolling = every(1000, async () => {
    if (job && TERMINAL.has(job.state)) return;
    await loadProviderNames();
    show(await api(`/api/v1/jobs/${id}`));
  });
  leave = () => { stopPolling(); stream.abort(); log.destroy(); };
}

async function download(id) {
  try {
    const res = await fetch(`/api/v1/jobs/${id}/logs`, { headers: headers() });
    if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
    const url = URL.createObjectURL(await res.blob());
    const a = document.createElement('a');
    a.href = url;
    a.download = `job-${id}.log`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (e) {
    flash(`Download failed: ${e.message}`);
  }
}

/**
 * Follows a job's log over SSE (`Accept: text/event-stream`), read with fetch so
 * the API token travels in a header. Resumes with `Last-Event-ID` when the
 * connection drops before the `end` event.
 */
function followLog(id, log) {
  const ctl = new AbortController();
  let lastId = null;
  let attempt = null;
  let ended = false;

  function onEvent(type, data, evId) {
    if (type === 'end' || type === 'error') {
      ended = type === 'end';
      log.append(type === 'end' ? `── log ended: ${JSON.parse(data).state} ──` : `── log error: ${data} ──`, 2);
      return;
    }
    if (evId) {
      lastId = evId;
      const a = evId.split(':')[0];
      if (attempt !== null && a !== attempt) log.append(`── attempt ${a} ──`, 2);
      attempt = a;
    }
    const kind = type === 'stderr' ? 1 : type === 'stdout' ? 0 : 2;
    // One event may carry several lines (the agent groups lines read together).
    for (const line of data.split('\n')) log.append(line, kind);
  }

  async function run() {
    while (!ended && !ctl.signal.aborted) {
      try {
        const h = headers({ Accept: 'text/event-stream' });
        if (lastId) h['Last-Event-ID'] = lastId;
        const res = await fetch(`/api/v1/jobs/${id}/logs`, { headers: h, signal: ctl.signal });
        if (!res.ok) {
          if (res.status === 401 || res.status === 403) askToken(res.status);
          throw new ApiError(res.status, await res.json().catch(() => null));
        }
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        let slice = performance.now();
        for (;;) {
          // A fast server fills the stream faster than it is read; then reads
          // resolve without ever leaving the task. Yield every few ms so the
          // first lines paint and the tab stays responsive.
          if (performance.now() - slice > 12) {
            await new Promise((r) => setTimeout(r, 0));
            slice = performance.now();
          }
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let start = 0;
          let at;
          while ((at = buf.indexOf('\n\n', start)) >= 0) {
            parseEvent(buf.slice(start, at));
            start = at + 2;
          }
          buf = buf.slice(start);
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
        if (e instanceof ApiError && e.status < 500) { flash(`Log: ${e.message}`); return; }
      }
      if (!ended) await new Promise((r) => setTimeout(r, 1000));
    }
  }

  function parseEvent(block) {
    let type = 'message';
    let evId = null;
    const data = [];
    for (const line of block.split('\n')) {
      if (!line || line[0] === ':') continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'event') type = value;
      else if (field === 'data') data.push(value);
      else if (field === 'id') evId = value;
    }
    if (data.length || type === 'end') onEvent(type, data.join('\n'), evId);
  }

  run();
  return ctl;
}

// ---- ANSI colours -----------------------------------------------------------

const ANSI16 = [
  '#000000', '#cd3131', '#0dbc79', '#e5e510', '#2472c8', '#bc3fbc', '#11a8cd', '#e5e5e5',
  '#666666', '#f14c4c', '#23d18b', '#f5f543', '#3b8eea', '#d670d6', '#29b8db', '#ffffff',
];

function color256(n) {
  if (n < 16) return ANSI16[n];
  if (n < 232) {
    const v = [0, 95, 135, 175, 215, 255];
    const i = n - 16;
    return `rgb(${v[Math.floor(i / 36)]},${v[Math.floor(i / 6) % 6]},${v[i % 6]})`;
  }
  const g = 8 + (n - 232) * 10;
  return `rgb(${g},${g},${g})`;
}

// eslint-disable-next-line no-control-regex
const ESCAPES = /\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[()][A-Za-z0-9]|\x1b./g;

/** A line with ANSI SGR sequences as HTML spans; other escapes are dropped. */
function ansiToHtml(line) {
  if (line.indexOf('\x1b') < 0) return esc(line);
  let out = '';
  let last = 0;
  const st = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false };
  const open = () => {
    const css = [];
    if (st.fg) css.push(`color:${st.fg}`);
    if (st.bg) css.push(`background:${st.bg}`);
    if (st.bold) css.push('font-weight:bold');
    if (st.dim) css.push('opacity:.7');
    if (st.italic) css.push('font-style:italic');
    if (st.underline) css.push('text-decoration:underline');
    return css.length ? `<span class="ansi" style="${css.join(';')}">` : '';
  };
  let span = '';
  const text = (s) => { if (s) out += span + esc(s) + (span ? '</span>' : ''); };
  ESCAPES.lastIndex = 0;
  let m;
  while ((m = ESCAPES.exec(line)) !== null) {
    text(line.slice(last, m.index));
    last = ESCAPES.lastIndex;
    if (m[2] !== 'm') continue;
    const codes = m[1] === '' ? [0] : m[1].split(';').map((c) => Number(c || 0));
    for (let i = 0; i < codes.length; i += 1) {
      const c = codes[i];
      if (c === 0) Object.assign(st, { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false });
      else if (c === 1) st.bold = true;
      else if (c === 2) st.dim = true;
      else if (c === 3) st.italic = true;
      else if (c === 4) st.underline = true;
      else if (c === 22) { st.bold = false; st.dim = false; }
      else if (c === 23) st.italic = false;
      else if (c === 24) st.underline = false;
      else if (c >= 30 && c <= 37) st.fg = ANSI16[c - 30];
      else if (c >= 90 && c <= 97) st.fg = ANSI16[c - 90 + 8];
      else if (c === 39) st.fg = null;
      else if (c >= 40 && c <= 47) st.bg = ANSI16[c - 40];
      else if (c >= 100 && c <= 107) st.bg = ANSI16[c - 100 + 8];
      else if (c === 49) st.bg = null;
      else if (c === 38 || c === 48) {
        let col = null;
        if (codes[i + 1] === 5) { col = color256(codes[i + 2] & 255); i += 2; }
        else if (codes[i + 1] === 2) { col = `rgb(${codes[i + 2] & 255},${codes[i + 3] & 255},${codes[i + 4] & 255})`; i += 4; }
        if (c === 38) st.fg = col; else st.bg = col;
      }
    }
    span = open();
  }
  text(line.slice(last));
  return out;
}

// ---- the virtual log view ---------------------------------------------------

/** Browsers cap an element's height; past this the scrollbar is scaled. */
const MAX_SCROLL_PX = 8000000;

/**
 * Holds every line as a string and renders only the rows in view, so a
 * multi-million-line log costs one array, not one DOM node per line.
 */
class LogView {
  constructor(el, opened) {
    this.el = el;
    this.opened = opened;
    this.lines = [];
    this.kinds = [];
    this.follow = true;
    this.hits = [];
    this.hit = -1;
    this.term = '';
    this.rowH = 18;
    this.timings = { opened, firstLine: null, lines: 0 };
    this.onHits = () => {};
    this.onCount = () => {};
    el.innerHTML = '<div class="spacer"></div><div class="rows"></div>';
    this.spacer = el.firstChild;
    this.rows = el.lastChild;
    this.pending = false;
    this.onScroll = () => {
      // Scrolling up stops following; reaching the bottom resumes it.
      const atBottom = el.scrollTop + el.clientHeight >= el.scrollHeight - 2;
      if (!this.programmatic) this.setFollow(atBottom, true);
      this.programmatic = false;
      this.schedule();
    };
    el.addEventListener('scroll', this.onScroll);
    this.onResize = () => this.schedule();
    window.addEventListener('resize', this.onResize);
    this.schedule();
  }

  destroy() {
    window.removeEventListener('resize', this.onResize);
    this.destroyed = true;
  }

  setFollow(on, fromScroll = false) {
    this.follow = on;
    const box = document.getElementById('log-follow');
    if (box) box.checked = on;
    if (on && !fromScroll) this.schedule();
  }

  append(line, kind) {
    this.lines.push(line);
    this.kinds.push(kind);
    if (this.term && this.hits.length < 100000 && line.toLowerCase().includes(this.term)) {
      this.hits.push(this.lines.length - 1);
      this.onHits(this.hit, this.hits.length, false);
    }
    this.schedule();
  }

  schedule() {
    if (this.pending || this.destroyed) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.render(); });
  }

  /** First line shown for the current scroll position. */
  firstVisible() {
    const n = this.lines.length;
    const view = Math.max(1, Math.floor(this.el.clientHeight / this.rowH));
    if (n * this.rowH <= MAX_SCROLL_PX) return Math.floor(this.el.scrollTop / this.rowH);
    const max = MAX_SCROLL_PX - this.el.clientHeight;
    return Math.round((this.el.scrollTop / Math.max(1, max)) * Math.max(0, n - view));
  }

  scrollToLine(i) {
    const n = this.lines.length;
    const view = Math.max(1, Math.floor(this.el.clientHeight / this.rowH));
    const target = Math.max(0, i - Math.floor(view / 2));
    this.programmatic = true;
    if (n * this.rowH <= MAX_SCROLL_PX) this.el.scrollTop = target * this.rowH;
    else this.el.scrollTop = (target / Math.max(1, n - view)) * (MAX_SCROLL_PX - this.el.clientHeight);
  }

  render() {
    if (this.destroyed) return;
    const n = this.lines.length;
    const total = n * this.rowH;
    const scaled = total > MAX_SCROLL_PX;
    const height = `${Math.min(total, MAX_SCROLL_PX)}px`;
    if (this.spacer.style.height !== height) this.spacer.style.height = height;
    if (this.follow && n) {
      const bottom = this.el.scrollHeight - this.el.clientHeight;
      if (Math.abs(this.el.scrollTop - bottom) > 1) { this.programmatic = true; this.el.scrollTop = bottom; }
    }
    // Scaled, the rows sit at the scroll position and must fit in the view
    // (or they would stretch the scroll height).
    const count = scaled ? Math.floor(this.el.clientHeight / this.rowH)
      : Math.ceil(this.el.clientHeight / this.rowH) + 2;
    const first = Math.max(0, Math.min(this.firstVisible(), n - 1));
    const last = Math.min(n, first + count);
    const top = scaled ? this.el.scrollTop : first * this.rowH;
    this.rows.style.transform = `translateY(${top}px)`;
    const cur = this.hits[this.hit];
    let html = '';
    for (let i = first; i < last; i += 1) {
      const k = this.kinds[i];
      let cls = k === 1 ? 'ln err' : k === 2 ? 'ln sys' : 'ln';
      if (this.term && this.lines[i].toLowerCase().includes(this.term)) cls += i === cur ? ' hit cur' : ' hit';
      html += `<div class="${cls}" data-line="${i + 1}"><span class="no">${i + 1}</span><span class="tx">${ansiToHtml(this.lines[i])}</span></div>`;
    }
    if (!n) html = '<div class="empty">Waiting for output…</div>';
    this.rows.innerHTML = html;
    this.onCount(n);
    if (n && this.timings.firstLine === null) {
      // Measured once the frame holding the first line has been painted.
      requestAnimationFrame(() => setTimeout(() => {
        if (this.timings.firstLine === null) this.timings.firstLine = performance.now();
      }, 0));
    }
    this.timings.lines = n;
  }

  /** Finds `term` (case-insensitive) in every line, so far and as lines arrive. */
  search(term) {
    this.term = term.toLowerCase();
    this.hits = [];
    this.hit = -1;
    let capped = false;
    if (this.term) {
      for (let i = 0; i < this.lines.length; i += 1) {
        if (this.lines[i].toLowerCase().includes(this.term)) {
          this.hits.push(i);
          if (this.hits.length >= 100000) { capped = true; break; }
        }
      }
    }
    this.onHits(this.hit, this.hits.length, capped);
    this.schedule();
  }

  jump(dir) {
    if (!this.hits.length) return;
    this.hit = (this.hit + dir + this.hits.length) % this.hits.length;
    if (this.hit < 0) this.hit = 0;
    this.setFollow(false);
    this.scrollToLine(this.hits[this.hit]);
    this.onHits(this.hit, this.hits.length, false);
    this.schedule();
  }
}

// ---- workers, providers and the queue ----------------------------------------

/** One gauge from the Prometheus text of /metrics. */
function gauge(text, name) {
  const m = text.match(new RegExp(`^${name} ([0-9.eE+-]+)$`, 'm'));
  return m ? Number(m[1]) : null;
}

function workersPage() {
  view().innerHTML = `
    <h1>Workers &amp; providers</h1>
    <div class="panel"><div class="grid">
      <div><b>Queue depth</b><span id="q-depth">—</span></div>
      <div><b>Oldest waiting</b><span id="q-age">—</span></div>
      <div><b>Oldest waiting job</b><span id="q-oldest">—</span></div>
      <div><b>Live workers</b><span id="w-live">—</span></div>
    </div></div>
    <h2>Providers</h2>
    <table id="providers"><thead><tr><th>Name</th><th>Type</th><th>Status</th><th>Health</th>
      <th>Workers</th><th>Active jobs</th><th>Last health check</th><th>Last error</th></tr></thead><tbody></tbody></table>
    <h2>Workers</h2>
    <table id="workers"><thead><tr><th>Worker</th><th>State</th><th>Provider</th><th>Current job</th>
      <th>Jobs run</th><th>Last heartbeat</th><th>Created</th></tr></thead><tbody></tbody></table>`;
  leave = every(REFRESH_MS, async () => {
    const [{ workers }, { providers }, metrics, pending] = await Promise.all([
      api('/api/v1/workers'), api('/api/v1/providers'), api('/metrics'),
      api('/api/v1/jobs?state=pending&limit=10000'),
    ]);
    const depth = gauge(metrics, 'hodei_queue_depth');
    const age = gauge(metrics, 'hodei_queue_oldest_pending_age_seconds');
    $('#q-depth').textContent = depth ?? '—';
    $('#q-age').textContent = age ? fmtDuration(age * 1000) : '—';
    // Newest first, so the oldest waiting job is the last one.
    const oldest = pending.jobs[pending.jobs.length - 1];
    $('#q-oldest').innerHTML = oldest
      ? `<a href="#/jobs/${esc(oldest.id)}">${esc(oldest.name || shortId(oldest.id))}</a>` : '—';
    $('#w-live').textContent = workers.filter((w) => w.state !== 'terminated').length;
    $('#providers tbody').innerHTML = providers.map((p) => `<tr>
      <td>${esc(p.name)}</td><td>${esc(p.type)}</td><td>${badge(p.status)}</td>
      <td>${p.healthy ? badge('healthy') : badge('unhealthy')}</td>
      <td>${p.workers}</td><td>${p.active_jobs}</td><td>${ago(p.last_health_check)}</td>
      <td class="error-text">${esc(p.last_error || '')}</td></tr>`).join('')
      || '<tr><td colspan="8" class="muted">No providers.</td></tr>';
    const shown = workers.slice().sort((a, b) => (a.state === 'terminated') - (b.state === 'terminated')
      || b.created_at.localeCompare(a.created_at));
    $('#workers tbody').innerHTML = shown.map((w) => `<tr>
      <td class="mono">${esc(shortId(w.id))}</td><td>${badge(w.state)}</td>
      <td>${esc(w.provider_name || shortId(w.provider_id))}</td>
      <td>${w.current_jobs.map((j) => `<a class="mono" href="#/jobs/${esc(j)}">${esc(shortId(j))}</a>`).join(' ') || '—'}</td>
      <td>${w.jobs_run}</td><td>${ago(w.last_heartbeat)}</td><td class="muted">${fmtTime(w.created_at)}</td></tr>`).join('')
      || '<tr><td colspan="7" class="muted">No workers.</td></tr>';
  });
}

// ---- start ------------------------------------------------------------------

/** The longest main-thread task seen, in ms (a frozen tab shows here). */
window.hodeiLongestTaskMs = 0;
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      window.hodeiLongestTaskMs = Math.max(window.hodeiLongestTaskMs, e.duration);
    }
  }).observe({ type: 'longtask', buffered: true });
} catch (_) { /* not every browser reports long tasks */ }

setupToken();
window.addEventListener('hashchange', route);
route();
