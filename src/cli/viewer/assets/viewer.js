// pglogsink's log viewer. Every logged text goes into the page with
// textContent or as an attribute value set by property: never as markup.
'use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  const FILTERS = ['level', 'since', 'until', 'grep', 'target', 'request_id', 'trace_id'];
  const PAGE = 100;          // rows per page
  const MAX_ROWS = 2000;     // rows kept in the page while tailing
  const BURST = 500;         // more new rows than this at once replace the table
  const form = $('filters');
  const tbody = $('rows').tBodies[0];
  const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  let fields = [];           // the `field` filters, "key=value"
  let next = null;           // `before` of the next older page
  let generation = 0;        // answers to an older view are dropped
  let source = null;         // the live tail's EventSource
  let queue = [];            // tailed rows not drawn yet
  let drawing = false;
  const shown = new Set();   // ids in the table

  // The view's filters, as the URL and the API name them.
  function filterParams() {
    const p = new URLSearchParams();
    for (const name of FILTERS) {
      const v = form.elements[name].value.trim();
      if (v) p.set(name, v);
    }
    for (const f of fields) p.append('field', f);
    return p;
  }

  function api(path, extra) {
    const p = filterParams();
    p.set('tz', tz);
    for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
    return path + '?' + p;
  }

  async function getJson(url) {
    const response = await fetch(url);
    const body = await response.json().catch(() => ({ error: response.statusText }));
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  function showError(e) {
    $('error').textContent = e ? String(e.message || e) : '';
    $('error').hidden = !e;
  }

  function readUrl() {
    const p = new URLSearchParams(location.search);
    for (const name of FILTERS) form.elements[name].value = p.get(name) || '';
    fields = p.getAll('field').filter((f) => f.includes('='));
    $('live').checked = p.get('live') === '1';
    drawChips();
  }

  function writeUrl() {
    const p = filterParams();
    if ($('live').checked) p.set('live', '1');
    const q = p.toString();
    history.replaceState(null, '', q ? '?' + q : location.pathname);
  }

  function drawChips() {
    const chips = $('chips');
    chips.replaceChildren();
    fields.forEach((f, i) => {
      const chip = document.createElement('span');
      chip.className = 'chip';
      chip.textContent = f;
      const remove = document.createElement('button');
      remove.type = 'button';
      remove.title = 'remove this filter';
      remove.textContent = '\u00d7';
      remove.addEventListener('click', () => { fields.splice(i, 1); reload(); });
      chip.append(remove);
      chips.append(chip);
    });
  }

  function pad(n, w) { return String(n).padStart(w || 2, '0'); }
  function localTime(micros) {
    const d = new Date(Math.floor(micros / 1000));
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()) + '.' +
      pad(d.getMilliseconds(), 3);
  }
  function scalar(v) {
    return v === null || ['string', 'number', 'boolean'].includes(typeof v);
  }
  function valueText(v) { return typeof v === 'string' ? v : JSON.stringify(v); }

  function cell(tr, text, cls) {
    const td = document.createElement('td');
    td.className = cls;
    td.textContent = text;
    tr.append(td);
    return td;
  }

  function rowElement(r) {
    const tr = document.createElement('tr');
    tr.className = 'row lv-' + r.level;
    tr.dataset.id = r.id;
    tr.row = r;
    cell(tr, localTime(r.micros), 'time').title = r.timestamp;
    cell(tr, r.level.toUpperCase(), 'level');
    cell(tr, r.target, 'target').title = r.target;
    cell(tr, r.message, 'msg');
    const td = cell(tr, '', 'fields');
    for (const [k, v] of Object.entries(r.fields || {})) {
      const key = document.createElement('span');
      key.className = 'k';
      key.textContent = k + '=';
      const value = document.createElement('span');
      value.className = 'v';
      value.textContent = valueText(v);
      if (scalar(v)) {
        value.dataset.field = k + '=' + valueText(v);
        value.title = 'filter on ' + k + '=' + valueText(v);
      }
      td.append(key, value);
    }
    return tr;
  }

  function clearRows() {
    tbody.replaceChildren();
    shown.clear();
    queue = [];
    next = null;
    $('more').hidden = true;
  }

  // Older rows go below.
  function appendRows(rows) {
    const fragment = document.createDocumentFragment();
    for (const r of rows) {
      if (shown.has(r.id)) continue;
      shown.add(r.id);
      fragment.append(rowElement(r));
    }
    tbody.append(fragment);
  }

  function status(text) {
    $('status').textContent = text;
  }

  function countRows() {
    const n = tbody.querySelectorAll('tr.row').length;
    document.body.dataset.rows = n;
    return n;
  }

  async function reload() {
    const mine = ++generation;
    writeUrl();
    drawChips();
    stopTail();
    clearRows();
    document.body.dataset.state = 'loading';
    try {
      const page = await getJson(api('api/logs', { limit: PAGE }));
      if (mine !== generation) return;
      appendRows(page.rows);
      next = page.next;
      $('more').hidden = !next;
      showError(null);
      const n = countRows();
      if (!window.__firstRender) window.__firstRender = performance.now();
      status(n ? n + ' rows' + (next ? ', more below' : '') : 'no matching rows');
    } catch (e) {
      if (mine !== generation) return;
      showError(e);
      status('');
      countRows();
    }
    if ($('live').checked) startTail(mine);
    document.body.dataset.state = 'ready';
    loadHistogram(mine);
  }

  async function loadMore() {
    const mine = generation;
    if (!next) return;
    $('more').disabled = true;
    try {
      const page = await getJson(api('api/logs', { limit: PAGE, before: next }));
      if (mine !== generation) return;
      appendRows(page.rows);
      next = page.next;
      $('more').hidden = !next;
      status(countRows() + ' rows' + (next ? ', more below' : ''));
    } catch (e) {
      showError(e);
    } finally {
      $('more').disabled = false;
    }
  }

  // Live tail: each `rows` event is a JSON array, oldest first. Rows are
  // drawn once per frame, newest on top, at most BURST a frame, and the
  // oldest are dropped beyond MAX_ROWS, so thousands of rows a second keep
  // the page responsive.
  function startTail(mine) {
    source = new EventSource(api('api/tail', { limit: PAGE }));
    source.addEventListener('rows', (event) => {
      if (mine !== generation) return;
      const rows = JSON.parse(event.data);
      for (const r of rows) queue.push(r);
      if (queue.length > BURST) queue.splice(0, queue.length - BURST);
      if (!drawing) { drawing = true; requestAnimationFrame(drawTail); }
    });
    source.addEventListener('failure', (event) => showError(event.data));
    source.addEventListener('open', () => showError(null));
    // A refused tail (a bad filter) is not retried by the browser: say so.
    source.addEventListener('error', () => {
      if (source && source.readyState === EventSource.CLOSED) showError('the live tail stopped');
    });
  }

  function stopTail() {
    if (source) source.close();
    source = null;
  }

  function drawTail() {
    drawing = false;
    const began = performance.now();
    const rows = queue;
    queue = [];
    if (rows.length >= BURST) {
      // A burst (thousands of rows a second): show its newest rows alone,
      // rather than draw and drop thousands a frame; "load more" goes on
      // below them, so no row is skipped, only not drawn until asked for.
      tbody.replaceChildren();
      shown.clear();
      const last = rows[0];
      next = last.micros + ':' + last.id;
    }
    const fragment = document.createDocumentFragment();
    for (let i = rows.length - 1; i >= 0; i--) {
      const r = rows[i];
      if (shown.has(r.id)) continue;
      shown.add(r.id);
      fragment.append(rowElement(r));
    }
    tbody.prepend(fragment);
    let n = tbody.rows.length;
    while (n > MAX_ROWS) {
      const last = tbody.lastElementChild;
      if (last.row) {
        shown.delete(last.row.id);
        const before = tbody.lastElementChild.previousElementSibling;
        if (before && before.row) next = before.row.micros + ':' + before.row.id;
      }
      last.remove();
      n--;
    }
    if (next) $('more').hidden = false;
    status(countRows() + ' rows, live');
    // The longest draw, layout included (the browser tests read it).
    const took = tbody.offsetHeight && performance.now() - began;
    window.__slowestDraw = Math.max(window.__slowestDraw || 0, took);
  }

  // The histogram: one column of stacked levels per bucket, as SVG
  // elements (no markup from data); a click narrows since/until to it.
  async function loadHistogram(mine) {
    const svg = $('histogram');
    let h;
    try {
      h = await getJson(api('api/histogram', { buckets: 60 }));
    } catch (e) {
      if (mine === generation) svg.replaceChildren();
      return;
    }
    if (mine !== generation) return;
    const NS = 'http://www.w3.org/2000/svg';
    const n = h.counts.length;
    const max = Math.max(1, ...h.counts.map((c) => c.reduce((a, b) => a + b, 0)));
    svg.setAttribute('viewBox', '0 0 ' + Math.max(1, n * 10) + ' 100');
    svg.replaceChildren();
    h.counts.forEach((counts, i) => {
      const from = h.start + i * h.bucket;
      const to = from + h.bucket;
      const group = document.createElementNS(NS, 'g');
      let y = 100;
      counts.forEach((count, level) => {
        if (!count) return;
        const height = (count / max) * 96;
        y -= height;
        const bar = document.createElementNS(NS, 'rect');
        bar.setAttribute('x', i * 10 + 1);
        bar.setAttribute('y', y);
        bar.setAttribute('width', 8);
        bar.setAttribute('height', height);
        bar.setAttribute('class', 'fill-' + h.levels[level]);
        group.append(bar);
      });
      const slot = document.createElementNS(NS, 'rect');
      slot.setAttribute('class', 'slot');
      slot.setAttribute('x', i * 10);
      slot.setAttribute('y', 0);
      slot.setAttribute('width', 10);
      slot.setAttribute('height', 100);
      const title = document.createElementNS(NS, 'title');
      const parts = counts.map((c, l) => c ? h.levels[l] + ' ' + c : '').filter(Boolean);
      title.textContent = localTime(from) + ' \u2013 ' + localTime(to) + ': ' + (parts.join(', ') || 'no rows');
      slot.append(title);
      slot.addEventListener('click', () => {
        form.elements.since.value = new Date(Math.floor(from / 1000)).toISOString();
        form.elements.until.value = new Date(Math.floor(to / 1000)).toISOString();
        $('live').checked = false;
        reload();
      });
      group.append(slot);
      svg.append(group);
    });
    $('axis-from').textContent = localTime(h.since);
    $('axis-to').textContent = localTime(h.until) + ' \u00b7 ' + h.total + ' rows';
  }

  function toggleDetail(tr) {
    const open = tr.nextElementSibling;
    if (open && open.classList.contains('detail')) { open.remove(); return; }
    const r = tr.row;
    const detail = document.createElement('tr');
    detail.className = 'detail';
    const td = document.createElement('td');
    td.colSpan = 5;
    const pre = document.createElement('pre');
    pre.textContent = JSON.stringify({
      id: r.id, timestamp: r.timestamp, level: r.level, target: r.target,
      thread_id: r.thread_id, message: r.message, fields: r.fields,
    }, null, 2);
    td.append(pre);
    detail.append(td);
    tr.after(detail);
  }

  tbody.addEventListener('click', (event) => {
    const value = event.target.closest('.v');
    if (value && value.dataset.field) {
      if (!fields.includes(value.dataset.field)) fields.push(value.dataset.field);
      reload();
      return;
    }
    if (window.getSelection().toString()) return; // selecting text, not clicking
    const tr = event.target.closest('tr.row');
    if (tr) toggleDetail(tr);
  });

  let typing = null;
  form.addEventListener('input', (event) => {
    // A field is added on Enter / Apply; the live toggle has its own handler.
    if (event.target.name === 'field' || event.target.id === 'live') return;
    clearTimeout(typing);
    typing = setTimeout(reload, 400);
  });
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    clearTimeout(typing);
    const f = form.elements.field.value.trim();
    if (f) {
      if (!f.includes('=') || f.startsWith('=')) { showError('field: expected key=value'); return; }
      if (!fields.includes(f)) fields.push(f);
      form.elements.field.value = '';
    }
    reload();
  });
  for (const button of form.querySelectorAll('[data-since]')) {
    button.addEventListener('click', () => {
      form.elements.since.value = button.dataset.since;
      form.elements.until.value = '';
      reload();
    });
  }
  $('clear').addEventListener('click', () => {
    for (const name of FILTERS) form.elements[name].value = '';
    fields = [];
    reload();
  });
  $('live').addEventListener('change', () => {
    if ($('live').checked && form.elements.until.value) form.elements.until.value = '';
    reload();
  });
  $('more').addEventListener('click', loadMore);

  readUrl();
  reload();
}());
