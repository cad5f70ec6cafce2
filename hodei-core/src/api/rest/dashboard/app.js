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
    <div class="panel"><b>Timeline</b><ol class="timeline" id="j-timeline"></ol></div>
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
  const log = new LogView($('#log'), opened, id);
  window.hodeiLog = log; // for tests and timings
  log.start();

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
    searchTimer = setTimeout(() => { log.search($('#log-search').value); }, 300);
  });
  $('#log-search').addEventListener('keydown', async (e) => {
    if (e.key !== 'Enter') return;
    e.preventDefault();
    clearTimeout(searchTimer);
    if (log.term !== $('#log-search').value.toLowerCase()) await log.search($('#log-search').value);
    log.jump(e.shiftKey ? -1 : 1);
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
      // Reported by the job (`::progress <percent> [message]` on its stdout).
      ['Progress', j.progress
        ? `<progress max="100" value="${j.progress.percent}"></progress> ${j.progress.percent} %${j.progress.message ? ` · ${esc(j.progress.message)}` : ''}`
        : '—'],
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
    $('#j-error-panel').hidden = !j.error;
    $('#j-error').textContent = j.error || '';
    const spec = JSON.stringify(j.spec, null, 2);
    if ($('#j-spec').textContent !== spec) $('#j-spec').textContent = spec;
  }

  // Polled until the job and its history both show the end (the history's
  // last change is recorded just after the job's).
  let historyDone = false;
  const stopPolling = every(1000, async () => {
    if (job && TERMINAL.has(job.state) && historyDone) return;
    await loadProviderNames();
    const [j, history] = await Promise.all([api(`/api/v1/jobs/${id}`), api(`/api/v1/jobs/${id}/events`)]);
    show(j);
    const last = history.events[history.events.length - 1];
    historyDone = Boolean(last && TERMINAL.has(last.to));
    $('#j-timeline').innerHTML = timelineHtml(history.events);
  });
  leave = () => { stopPolling(); log.destroy(); };
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

// ---- workers, providers and the queue ----------------------------------------

/** One gauge from the Prometheus text of /metrics. */
function gauge(text, name) {
  const m = text.match(new RegExp(`^${name} ([0-9.eE+-]+)$`, 'm'));
  return m ? Number(m[1]) : null;
}

function fmtBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`;
}

/** Memory in use, and of its limit when the agent knows one. */
function fmtMemory(st) {
  return st.memory_limit_bytes
    ? `${fmtBytes(st.memory_bytes)} / ${fmtBytes(st.memory_limit_bytes)}`
    : fmtBytes(st.memory_bytes);
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
      <th>CPU</th><th>Memory</th><th>Jobs run</th><th>Last heartbeat</th><th>Created</th></tr></thead><tbody></tbody></table>`;
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
      <td data-col="cpu">${w.stats ? `${w.stats.cpu_percent.toFixed(1)} %` : '—'}</td>
      <td data-col="memory">${w.stats ? fmtMemory(w.stats) : '—'}</td>
      <td>${w.jobs_run}</td><td>${ago(w.last_heartbeat)}</td><td class="muted">${fmtTime(w.created_at)}</td></tr>`).join('')
      || '<tr><td colspan="9" class="muted">No workers.</td></tr>';
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
