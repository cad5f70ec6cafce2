// The job page's log viewer: a virtual list over a job's whole log that
// holds only the pages it shows. Pages are loaded by line range from
// GET /api/v1/jobs/{id}/logs/lines as the view scrolls or jumps to a search
// hit; the tail follows over Server-Sent Events. Loaded after app.js's
// helpers (esc, headers, api, ApiError, askToken, flash) and before it runs.
'use strict';

/** Lines per page fetched from the server. */
const LOG_PAGE = 1000;
/** Pages kept in memory; the least recently shown go first. */
const LOG_PAGES_KEPT = 40;
/** Search hits asked for at once. */
const LOG_HITS = 10000;

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

/**
 * What a terminal finally shows of a line: the text after its last carriage
 * return (progress bars redraw with `\r`; SSE turns each into a line break).
 */
function shownText(text) {
  const t = text.endsWith('\r') ? text.slice(0, -1) : text;
  const at = Math.max(t.lastIndexOf('\r'), t.lastIndexOf('\n'));
  return at < 0 ? t : t.slice(at + 1);
}

const STREAM_KIND = { stdout: 0, stderr: 1 };

// ---- the virtual log view ---------------------------------------------------

/** Browsers cap an element's height; past this the scrollbar is scaled. */
const MAX_SCROLL_PX = 8000000;

/**
 * Rows are the job's log lines, attempt after attempt (a `── attempt N ──`
 * row between two), then rows the viewer adds (`── log ended ──`). Row i's
 * line is found by (attempt, line number); its text lives in a page of
 * LOG_PAGE lines that is fetched when a row of it is in view.
 */
class LogView {
  constructor(el, opened, jobId) {
    this.el = el;
    this.jobId = jobId;
    /** Attempts with lines, in order: { attempt, start (row of line 1), count }. */
    this.segs = [];
    /** Rows after every line: [text, kind]. */
    this.tail = [];
    /** Loaded pages (LOG_PAGE lines each) by `attempt:page`: { lines: [[text, kind]], used, loading, tried }. */
    this.pages = new Map();
    this.tick = 0;
    this.follow = true;
    this.hits = [];
    this.hit = -1;
    this.term = '';
    this.searchGen = 0;
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
    this.ctl = new AbortController();
  }

  destroy() {
    window.removeEventListener('resize', this.onResize);
    this.ctl.abort();
    this.destroyed = true;
  }

  /** Every row: lines, separators and the viewer's own rows. */
  get total() {
    const s = this.segs[this.segs.length - 1];
    return (s ? s.start + s.count : 0) + this.tail.length;
  }

  /** Lines held in memory now (a bounded number, however long the log). */
  loadedLines() {
    let n = 0;
    for (const p of this.pages.values()) n += p.lines.length;
    return n;
  }

  setFollow(on, fromScroll = false) {
    this.follow = on;
    const box = document.getElementById('log-follow');
    if (box) box.checked = on;
    if (on && !fromScroll) this.schedule();
  }

  /** Lines known to exist in `attempt` (from the server's counts or the stream). */
  grow(attempt, count) {
    let s = this.segs[this.segs.length - 1];
    if (!s || attempt > s.attempt) {
      if (count <= 0) return;
      // A separator row before every attempt but the first.
      const start = s ? s.start + s.count + 1 : 0;
      s = { attempt, start, count: 0 };
      this.segs.push(s);
    }
    if (attempt === s.attempt && count > s.count) {
      s.count = count;
      this.schedule();
    }
  }

  seg(attempt) {
    return this.segs.find((s) => s.attempt === attempt) || null;
  }

  /** The row of a line, or null when it is not known yet. */
  rowOf(attempt, seq) {
    const s = this.seg(attempt);
    return s && seq >= 1 && seq <= s.count ? s.start + seq - 1 : null;
  }

  /** [text, kind] of row i, or null while its page is loading. */
  rowAt(i) {
    for (let k = this.segs.length - 1; k >= 0; k -= 1) {
      const s = this.segs[k];
      if (i >= s.start + s.count) {
        if (k === this.segs.length - 1) return this.tail[i - s.start - s.count] || null;
        continue;
      }
      if (i >= s.start) return this.line(s.attempt, i - s.start + 1);
      if (i === s.start - 1 && k > 0) return [`── attempt ${s.attempt} ──`, 2];
    }
    return this.segs.length ? null : this.tail[i] || null;
  }

  line(attempt, seq) {
    const key = `${attempt}:${Math.floor((seq - 1) / LOG_PAGE)}`;
    const page = this.pages.get(key);
    const got = page && page.lines[(seq - 1) % LOG_PAGE];
    if (page) page.used = this.tick;
    if (got) return got;
    this.fetchPage(attempt, Math.floor((seq - 1) / LOG_PAGE));
    return null;
  }

  page(attempt, n) {
    const key = `${attempt}:${n}`;
    let p = this.pages.get(key);
    if (!p) {
      p = { lines: [], used: this.tick, loading: false, tried: 0 };
      this.pages.set(key, p);
    }
    return p;
  }

  /** Stores a line where its page holds it. */
  put(attempt, seq, text, kind) {
    const p = this.page(attempt, Math.floor((seq - 1) / LOG_PAGE));
    p.lines[(seq - 1) % LOG_PAGE] = [text, kind];
  }

  /** Fetches one page (again after a second, if lines are still missing). */
  async fetchPage(attempt, n) {
    const p = this.page(attempt, n);
    if (p.loading || Date.now() - p.tried < 1000 || this.destroyed) return;
    p.loading = true;
    p.tried = Date.now();
    try {
      const q = new URLSearchParams({ attempt: String(attempt), from_line: String(n * LOG_PAGE + 1), limit: String(LOG_PAGE) });
      const res = await api(`/api/v1/jobs/${this.jobId}/logs/lines?${q}`, { signal: this.ctl.signal });
      this.take(res);
    } catch (e) {
      if (!this.ctl.signal.aborted) flash(`Log: ${e.message}`);
    } finally {
      p.loading = false;
    }
    this.evict();
    this.schedule();
  }

  /** Takes a page of the API: its counts and its lines. */
  take(res) {
    for (const a of res.attempts) this.grow(a.attempt, a.lines);
    for (const l of res.lines) {
      if (this.rowOf(l.attempt, l.line) === null) this.grow(l.attempt, l.line);
      this.put(l.attempt, l.line, l.text, STREAM_KIND[l.stream] ?? 2);
    }
  }

  /** Drops the least recently shown pages past LOG_PAGES_KEPT. */
  evict() {
    if (this.pages.size <= LOG_PAGES_KEPT) return;
    const old = [...this.pages.entries()].filter(([, p]) => !p.loading && p.used < this.tick)
      .sort((a, b) => a[1].used - b[1].used);
    for (const [key] of old.slice(0, this.pages.size - LOG_PAGES_KEPT)) this.pages.delete(key);
  }

  /** A line from the live stream: line `seq` of `attempt`. */
  appendLive(attempt, seq, text, kind) {
    const known = this.rowOf(attempt, seq) !== null;
    this.grow(attempt, seq);
    this.put(attempt, seq, text, kind);
    if (!known && this.term && this.hits.length < LOG_HITS && shownText(text).toLowerCase().includes(this.term)) {
      this.hits.push(this.rowOf(attempt, seq));
      this.onHits(this.hit, this.hits.length, false);
    }
    this.schedule();
  }

  /** A row of the viewer's own after the lines (end of log, errors). */
  note(text) {
    this.tail.push([text, 2]);
    this.schedule();
  }

  schedule() {
    if (this.pending || this.destroyed) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.render(); });
  }

  /** First row shown for the current scroll position. */
  firstVisible() {
    const n = this.total;
    const view = Math.max(1, Math.floor(this.el.clientHeight / this.rowH));
    if (n * this.rowH <= MAX_SCROLL_PX) return Math.floor(this.el.scrollTop / this.rowH);
    const max = MAX_SCROLL_PX - this.el.clientHeight;
    return Math.round((this.el.scrollTop / Math.max(1, max)) * Math.max(0, n - view));
  }

  scrollToLine(i) {
    const n = this.total;
    const view = Math.max(1, Math.floor(this.el.clientHeight / this.rowH));
    const target = Math.max(0, i - Math.floor(view / 2));
    this.programmatic = true;
    if (n * this.rowH <= MAX_SCROLL_PX) this.el.scrollTop = target * this.rowH;
    else this.el.scrollTop = (target / Math.max(1, n - view)) * (MAX_SCROLL_PX - this.el.clientHeight);
    this.schedule();
  }

  render() {
    if (this.destroyed) return;
    this.tick += 1;
    const n = this.total;
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
    let painted = false;
    for (let i = first; i < last; i += 1) {
      const row = this.rowAt(i);
      if (!row) {
        html += `<div class="ln loading" data-line="${i + 1}"><span class="no">${i + 1}</span><span class="tx">…</span></div>`;
        continue;
      }
      const text = shownText(row[0]);
      const k = row[1];
      painted = true;
      let cls = k === 1 ? 'ln err' : k === 2 ? 'ln sys' : 'ln';
      if (this.term && text.toLowerCase().includes(this.term)) cls += i === cur ? ' hit cur' : ' hit';
      html += `<div class="${cls}" data-line="${i + 1}"><span class="no">${i + 1}</span><span class="tx">${ansiToHtml(text)}</span></div>`;
    }
    if (!n) html = '<div class="empty">Waiting for output…</div>';
    this.rows.innerHTML = html;
    this.onCount(n);
    if (painted && this.timings.firstLine === null) {
      // Measured once the frame holding the first line has been painted.
      requestAnimationFrame(() => setTimeout(() => {
        if (this.timings.firstLine === null) this.timings.firstLine = performance.now();
      }, 0));
    }
    this.timings.lines = n;
    this.evict();
  }

  /** Finds `term` (case-insensitive) in the whole log on the server, then in new lines. */
  async search(term) {
    this.term = term.toLowerCase();
    this.hits = [];
    this.hit = -1;
    const gen = ++this.searchGen;
    let capped = false;
    if (this.term) {
      const q = new URLSearchParams({ contains: term, limit: String(LOG_HITS) });
      try {
        const res = await api(`/api/v1/jobs/${this.jobId}/logs/lines?${q}`, { signal: this.ctl.signal });
        if (gen !== this.searchGen) return;
        for (const a of res.attempts) this.grow(a.attempt, a.lines);
        for (const l of res.lines) {
          this.grow(l.attempt, l.line);
          const row = this.rowOf(l.attempt, l.line);
          if (row !== null) this.hits.push(row);
        }
        capped = res.more;
      } catch (e) {
        if (!this.ctl.signal.aborted) flash(`Search: ${e.message}`);
      }
    }
    if (gen !== this.searchGen) return;
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

  /**
   * Loads the line counts (and the first page), then follows new lines over
   * SSE (`Accept: text/event-stream`, read with fetch so the API token travels
   * in a header) from the last entry counted. Resumes with `Last-Event-ID`
   * when the connection drops before the `end` event.
   */
  async start() {
    let lastId = null;
    /** Lines counted so far per attempt: an SSE event's lines come next. */
    const counted = {};
    try {
      const q = new URLSearchParams({ from_line: '1', limit: String(LOG_PAGE) });
      const res = await api(`/api/v1/jobs/${this.jobId}/logs/lines?${q}`, { signal: this.ctl.signal });
      this.take(res);
      for (const a of res.attempts) {
        counted[a.attempt] = a.lines;
        if (a.entries) lastId = `${a.attempt}:${a.entries}`;
      }
    } catch (e) {
      if (this.ctl.signal.aborted) return;
      flash(`Log: ${e.message}`);
    }
    this.schedule();
    this.followFrom(lastId, counted);
  }

  async followFrom(lastId, counted) {
    const ctl = this.ctl;
    let ended = false;
    const onEvent = (type, data, evId) => {
      if (type === 'end' || type === 'error') {
        ended = type === 'end';
        this.note(type === 'end' ? `── log ended: ${JSON.parse(data).state} ──` : `── log error: ${data} ──`);
        return;
      }
      if (!evId) return;
      lastId = evId;
      const a = Number(evId.split(':')[0]);
      // One entry may hold several lines (the agent batches output).
      for (const line of data.split('\n')) {
        counted[a] = (counted[a] || 0) + 1;
        this.appendLive(a, counted[a], line, STREAM_KIND[type] ?? 2);
      }
    };
    const parseEvent = (block) => {
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
    };
    while (!ended && !ctl.signal.aborted) {
      try {
        const h = headers({ Accept: 'text/event-stream' });
        if (lastId) h['Last-Event-ID'] = lastId;
        const res = await fetch(`/api/v1/jobs/${this.jobId}/logs`, { headers: h, signal: ctl.signal });
        if (!res.ok) {
          if (res.status === 401 || res.status === 403) askToken(res.status);
          throw new ApiError(res.status, await res.json().catch(() => null));
        }
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        let slice = performance.now();
        for (;;) {
          // A fast server fills the stream faster than it is read; then reads
          // resolve without ever leaving the task. Yield every few ms so lines
          // paint and the tab stays responsive.
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
}
