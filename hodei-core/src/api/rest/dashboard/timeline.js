// The job page's timeline: every state change of the job (from
// GET /api/v1/jobs/{id}/events) with its time, the time since the change
// before, its attempt and reason. Uses app.js's helpers (esc, badge, fmtTime,
// fmtDuration, shortId).
'use strict';

/** The timeline's items as HTML. */
function timelineHtml(events) {
  if (!events.length) return '<li class="none">No state changes recorded.</li>';
  let prev = null;
  return events.map((e) => {
    const at = new Date(e.at).getTime();
    const delta = prev === null ? '' : `<span class="muted" data-delta>+${fmtDuration(at - prev)}</span>`;
    prev = at;
    const what = e.from ? `${esc(e.from)} → ${esc(e.to)}` : 'submitted';
    const attempt = e.attempt ? `<span class="muted">attempt ${e.attempt}</span>` : '';
    const worker = e.worker_id ? `<span class="muted mono">on ${esc(shortId(e.worker_id))}</span>` : '';
    const reason = e.reason ? `<div class="reason" title="${esc(e.reason)}">${esc(e.reason)}</div>` : '';
    return `<li data-to="${esc(e.to)}" data-at="${esc(e.at)}">${badge(e.to)}
      <div class="when"><span title="${esc(e.at)}">${fmtTime(e.at)}</span> ${delta}</div>
      <div class="what">${what} ${attempt} ${worker}</div>${reason}</li>`;
  }).join('');
}
