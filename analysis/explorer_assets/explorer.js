// cg-train sample explorer: reads the JSON block of this page and renders it; no network, no libraries.
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("data").textContent);
  const R = D.rows, N = R.index.length, T = D.epochs.length, E = D.topk_epochs.length, K = D.k;
  const MISSING = 65535;
  const $ = (id) => document.getElementById(id);

  function u16(b64) {
    const s = atob(b64), bytes = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
    return new Uint16Array(bytes.buffer);
  }
  const series = u16(D.series), topClasses = u16(D.topk_classes), topProbs = u16(D.topk_probs);
  const prob = (v) => (v === MISSING ? NaN : v / (MISSING - 1));
  const pGiven = (i, t) => prob(series[(i * T + t) * 2]);
  const pTrue = (i, t) => prob(series[(i * T + t) * 2 + 1]);
  const className = (k) => (k >= 0 && k < D.classes.length ? D.classes[k] : k < 0 ? "" : String(k));
  const escape = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const fmt = (v) => (v === null || v === undefined || Number.isNaN(v) ? "" : Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(4));
  const tail = (p) => { const parts = p.split("/"); return parts.length > 2 ? "\u2026/" + parts.slice(-2).join("/") : p; };
  const status = (i) => (R.true[i] < 0 ? "unknown" : R.corrupt[i] ? "corrupt" : "clean");
  const knownTrue = R.true.some((v) => v >= 0);

  // ------------------------------------------------------------------ state (marks survive a reload)
  const storeKey = "cg-explore:" + D.run + ":" + D.scores_file;
  const marks = new Set(), relabel = new Map(); // row -> "truth" | "model"
  try {
    const saved = JSON.parse(localStorage.getItem(storeKey) || "{}");
    const rowOf = new Map(R.index.map((v, i) => [v, i]));
    (saved.marks || []).forEach((v) => rowOf.has(v) && marks.add(rowOf.get(v)));
    Object.entries(saved.relabel || {}).forEach(([v, s]) => rowOf.has(+v) && relabel.set(rowOf.get(+v), s));
  } catch (e) { /* storage unavailable: marks last for this visit */ }
  function save() {
    try {
      const rl = {};
      relabel.forEach((s, i) => { rl[R.index[i]] = s; });
      localStorage.setItem(storeKey, JSON.stringify({ marks: [...marks].map((i) => R.index[i]), relabel: rl }));
    } catch (e) { /* ignore */ }
  }
  const state = { key: D.by, desc: true, page: 0, size: 100, selected: -1, order: [] };

  // ------------------------------------------------------------------ columns
  const label = (arr) => (i) => arr[i];
  const columns = [
    { key: "mark", title: "\u2713", sort: (i) => (marks.has(i) ? 1 : 0), cell: (i) => `<td><input type="checkbox" class="mark"${marks.has(i) ? " checked" : ""}></td>` },
    { key: "thumb", title: "", cell: (i) => `<td class="thumb">${R.thumb[i] ? `<img src="${R.thumb[i]}" alt="">` : '<div class="noimg">no file</div>'}</td>` },
    { key: "index", title: "index", num: true, sort: label(R.index), cell: (i) => `<td class="num col-index">${R.index[i]}</td>` },
    { key: "path", title: "path", text: true, sort: label(R.path), cell: (i) => `<td class="path" title="${escape(R.path[i])}">${escape(tail(R.path[i]))}</td>` },
    { key: "given", title: "given", num: true, sort: label(R.given), cell: (i) => `<td class="col-given">${escape(className(R.given[i]))}</td>` },
    { key: "pred", title: "predicted", num: true, sort: label(R.pred), cell: (i) => `<td class="col-pred${R.pred[i] !== R.given[i] ? " diff" : ""}">${escape(className(R.pred[i]))}</td>` },
  ];
  if (knownTrue) {
    columns.push({ key: "true", title: "true", num: true, sort: label(R.true), cell: (i) => `<td class="col-true">${R.true[i] >= 0 ? escape(className(R.true[i])) : "?"}</td>` });
    columns.push({ key: "status", title: "noise", text: true, sort: status, cell: (i) => `<td><span class="badge ${status(i)}">${status(i)}</span></td>` });
  }
  columns.push({ key: "spark", title: "path: p(true) \u2014 p(given) \u2504", cell: (i) => `<td>${sparkline(i)}</td>` });
  D.detectors.forEach((name) => {
    const values = R.scores[name];
    columns.push({ key: name, title: name, num: true, score: true, sort: (i) => values[i], cell: (i) => `<td class="num col-score" data-detector="${escape(name)}">${fmt(values[i])}</td>` });
  });
  if (R.flagged) columns.push({ key: "flagged", title: "cleanlab", num: true, sort: label(R.flagged), cell: (i) => `<td>${R.flagged[i] ? "flagged" : ""}</td>` });
  columns.push({ key: "pool", title: "pool", text: true, sort: (i) => (R.top[i] ? "top" : "random"), cell: (i) => `<td>${R.top[i] ? "top" : "random"}</td>` });

  function line(values, w, h, x0, y0) {
    const pts = [];
    values.forEach((v, t) => {
      if (Number.isFinite(v)) pts.push(`${(x0 + (T > 1 ? (t * w) / (T - 1) : w / 2)).toFixed(1)},${(y0 + h - v * h).toFixed(1)}`);
    });
    return pts.join(" ");
  }
  function series2(i) {
    const g = [], t2 = [];
    for (let t = 0; t < T; t++) { g.push(pGiven(i, t)); t2.push(pTrue(i, t)); }
    return [g, t2];
  }
  function sparkline(i) {
    const [g, tr] = series2(i);
    return `<svg class="spark" width="84" height="26" viewBox="0 0 84 26"><rect x="1" y="1" width="82" height="24" fill="none" stroke="#eee"/>` +
      `<polyline class="true-line" points="${line(tr, 80, 22, 2, 2)}"/><polyline class="given-line" points="${line(g, 80, 22, 2, 2)}"/></svg>`;
  }

  // ------------------------------------------------------------------ filters and sorting
  const classSelect = $("class-filter");
  D.classes.forEach((name, k) => classSelect.insertAdjacentHTML("beforeend", `<option value="${k}">${escape(k + (name !== String(k) ? " " + name : ""))}</option>`));
  if (!knownTrue) { $("status-filter").disabled = true; $("class-of").querySelector('option[value="true"]').disabled = true; }

  function passes(i) {
    const cls = classSelect.value;
    if (cls !== "") {
      const of = $("class-of").value;
      if (R[of][i] !== +cls) return false;
    }
    if ($("mismatch").checked && R.given[i] === R.pred[i]) return false;
    const st = $("status-filter").value;
    if (st && status(i) !== st) return false;
    const pool = $("pool-filter").value;
    if (pool && (R.top[i] ? "top" : "random") !== pool) return false;
    if ($("marked-only").checked && !marks.has(i)) return false;
    const q = $("search").value.trim();
    if (q && String(R.index[i]) !== q && !R.path[i].includes(q)) return false;
    return true;
  }
  function compare(col, desc) {
    return (a, b) => {
      let x = col.sort(a), y = col.sort(b);
      const xm = x === null || x === undefined || Number.isNaN(x), ym = y === null || y === undefined || Number.isNaN(y);
      if (xm || ym) return xm && ym ? R.index[a] - R.index[b] : xm ? 1 : -1; // missing values last
      let c = col.text ? String(x).localeCompare(String(y)) : x - y;
      if (desc) c = -c;
      return c !== 0 ? c : R.index[a] - R.index[b];
    };
  }
  function refresh(keepPage) {
    const col = columns.find((c) => c.key === state.key) || columns.find((c) => c.key === "index");
    const rows = [];
    for (let i = 0; i < N; i++) if (passes(i)) rows.push(i);
    rows.sort(compare(col, state.desc));
    state.order = rows;
    if (!keepPage) state.page = 0;
    render();
  }

  // ------------------------------------------------------------------ table
  const thead = document.querySelector("#samples thead tr"), tbody = document.querySelector("#samples tbody");
  columns.forEach((c) => {
    const th = document.createElement("th");
    th.textContent = c.title;
    th.dataset.key = c.key;
    if (c.sort) {
      th.className = "sortable";
      th.title = "sort by " + (c.title || c.key);
      th.addEventListener("click", () => {
        if (state.key === c.key) state.desc = !state.desc;
        else { state.key = c.key; state.desc = !!c.score || c.key === "mark"; }
        refresh();
      });
    }
    thead.appendChild(th);
  });
  function render() {
    const pages = Math.max(1, Math.ceil(state.order.length / state.size));
    state.page = Math.min(state.page, pages - 1);
    const start = state.page * state.size, shown = state.order.slice(start, start + state.size);
    tbody.innerHTML = shown.map((i) => {
      const cls = [R.corrupt[i] ? "corrupt" : "", marks.has(i) ? "marked" : "", i === state.selected ? "selected" : ""].join(" ").trim();
      return `<tr data-row="${i}" data-index="${R.index[i]}" data-given="${R.given[i]}" data-pred="${R.pred[i]}" data-true="${R.true[i]}" class="${cls}">` +
        columns.map((c) => c.cell(i)).join("") + "</tr>";
    }).join("");
    thead.querySelectorAll("th").forEach((th) => {
      th.classList.toggle("sorted-desc", th.dataset.key === state.key && state.desc);
      th.classList.toggle("sorted-asc", th.dataset.key === state.key && !state.desc);
    });
    $("page-info").textContent = state.order.length
      ? `${start + 1}\u2013${start + shown.length} of ${state.order.length} shown (page ${state.page + 1}/${pages})`
      : "no sample passes the filters";
    $("mark-count").textContent = `${marks.size} marked`;
  }
  tbody.addEventListener("click", (ev) => {
    const tr = ev.target.closest("tr");
    if (!tr) return;
    const i = +tr.dataset.row;
    if (ev.target.classList.contains("mark")) { toggleMark(i, ev.target.checked); return; }
    select(i);
  });
  function toggleMark(i, on) {
    if (on) marks.add(i); else marks.delete(i);
    save();
    const tr = tbody.querySelector(`tr[data-row="${i}"]`);
    if (tr) { tr.classList.toggle("marked", on); tr.querySelector("input.mark").checked = on; }
    $("mark-count").textContent = `${marks.size} marked`;
    if (i === state.selected) detail(i);
  }
  function select(i) {
    state.selected = i;
    tbody.querySelectorAll("tr.selected").forEach((tr) => tr.classList.remove("selected"));
    const tr = tbody.querySelector(`tr[data-row="${i}"]`);
    if (tr) tr.classList.add("selected");
    detail(i);
  }
  document.addEventListener("keydown", (ev) => {
    if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT" || state.selected < 0) return;
    const at = state.order.indexOf(state.selected);
    if (ev.key === "m") toggleMark(state.selected, !marks.has(state.selected));
    else if ((ev.key === "ArrowDown" || ev.key === "ArrowUp") && at >= 0) {
      const next = state.order[Math.max(0, Math.min(state.order.length - 1, at + (ev.key === "ArrowDown" ? 1 : -1)))];
      const page = Math.floor(state.order.indexOf(next) / state.size);
      if (page !== state.page) { state.page = page; render(); }
      select(next);
      ev.preventDefault();
    }
  });

  // ------------------------------------------------------------------ detail: path plot and top-k per epoch
  function plot(i) {
    const [g, tr] = series2(i), w = 330, h = 150, x0 = 34, y0 = 8;
    let svg = `<svg width="${w + x0 + 10}" height="${h + y0 + 30}" id="path-plot">`;
    [0, 0.25, 0.5, 0.75, 1].forEach((v) => {
      const y = y0 + h - v * h;
      svg += `<line class="grid" x1="${x0}" x2="${x0 + w}" y1="${y}" y2="${y}"/><text x="${x0 - 4}" y="${y + 3}" text-anchor="end">${v}</text>`;
    });
    const ticks = T <= 10 ? D.epochs.map((_, t) => t) : [0, Math.round((T - 1) / 2), T - 1];
    ticks.forEach((t) => {
      const x = x0 + (T > 1 ? (t * w) / (T - 1) : w / 2);
      svg += `<text x="${x}" y="${y0 + h + 13}" text-anchor="middle">${D.epochs[t]}</text>`;
    });
    svg += `<line class="axis" x1="${x0}" x2="${x0}" y1="${y0}" y2="${y0 + h}"/><line class="axis" x1="${x0}" x2="${x0 + w}" y1="${y0 + h}" y2="${y0 + h}"/>`;
    svg += `<text x="${x0 + w / 2}" y="${y0 + h + 26}" text-anchor="middle">epoch (${D.source === "eval" ? "eval pass after it" : "training passes"})</text>`;
    svg += `<polyline class="true-line" fill="none" stroke-width="2" points="${line(tr, w, h, x0, y0)}"/>`;
    svg += `<polyline class="given-line" fill="none" stroke-width="2" points="${line(g, w, h, x0, y0)}"/>`;
    return svg + "</svg>";
  }
  function topk(i) {
    let html = `<table id="topk"><thead><tr><th>epoch</th>${Array.from({ length: K }, (_, r) => `<th>top ${r + 1}</th>`).join("")}</tr></thead><tbody>`;
    for (let e = 0; e < E; e++) {
      html += `<tr><td>${D.topk_epochs[e]}</td>`;
      for (let r = 0; r < K; r++) {
        const at = (i * E + e) * K + r, c = topClasses[at], p = prob(topProbs[at]);
        const cls = c === R.given[i] ? "cls-given" : c === R.true[i] ? "cls-true" : "";
        html += c === MISSING ? "<td></td>" : `<td class="${cls}">${escape(className(c))} <small>${(100 * p).toFixed(1)}%</small></td>`;
      }
      html += "</tr>";
    }
    return html + "</tbody></table>";
  }
  function detail(i) {
    const choice = relabel.get(i) || "model";
    const img = R.thumb[i] ? `<img class="big" src="${R.thumb[i]}" alt="">` : '<div class="noimg big">no image file</div>';
    const scores = D.detectors.map((d) => `<tr><td>${escape(d)}${d === D.by ? " (page ranked by it)" : ""}</td><td class="num">${fmt(R.scores[d][i])}</td></tr>`).join("");
    $("detail").innerHTML = `<h2>sample ${R.index[i]} <span class="badge ${status(i)}">${status(i)}</span></h2>` +
      `<div style="display:flex;gap:10px">${img}<table class="meta">` +
      `<tr><td>path</td><td style="white-space:normal;word-break:break-all">${escape(R.path[i])}</td></tr>` +
      `<tr><td>given</td><td class="cls-given">${escape(className(R.given[i]))}</td></tr>` +
      `<tr><td>predicted</td><td>${escape(className(R.pred[i]))} (epoch ${D.epochs[T - 1]})</td></tr>` +
      `<tr><td>true</td><td class="cls-true">${R.true[i] >= 0 ? escape(className(R.true[i])) : "unknown"}</td></tr>` +
      `<tr><td>pool</td><td>${R.top[i] ? "top " + D.n_top + " by " + escape(D.by) : "random sample of the rest"}</td></tr></table></div>` +
      `<table class="meta">${scores}</table>` +
      `<h2>learning path</h2><div><span class="cls-true">\u2014 p(true)</span> &nbsp; <span class="cls-given">\u2504 p(given)</span></div>${plot(i)}` +
      `<h2>top-${K} predictions per epoch</h2><p class="hint"><span class="cls-given">given</span>, <span class="cls-true">true</span> class` +
      (E < T ? `; ${E} of ${T} epochs kept` : "") + `</p>${topk(i)}` +
      `<h2>mark</h2><label><input type="checkbox" id="detail-mark"${marks.has(i) ? " checked" : ""}> marked (key m)</label>` +
      `<p>label table: new label = <label><input type="radio" name="newlabel" value="model"${choice === "model" ? " checked" : ""}> predicted (${escape(className(R.pred[i]))})</label>` +
      (R.true[i] >= 0 ? ` <label><input type="radio" name="newlabel" value="truth"${choice === "truth" ? " checked" : ""}> true (${escape(className(R.true[i]))})</label>` : "") + "</p>";
    $("detail-mark").addEventListener("change", (ev) => toggleMark(i, ev.target.checked));
    $("detail").querySelectorAll('input[name="newlabel"]').forEach((el) => el.addEventListener("change", () => { relabel.set(i, el.value); save(); }));
  }

  // ------------------------------------------------------------------ export
  function marked() { return [...marks].sort((a, b) => R.index[a] - R.index[b]); }
  function download(name, bytes, type) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([bytes], { type }));
    a.download = name;
    document.body.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }
  function labelRows() {
    return marked().map((i) => {
      const truth = relabel.get(i) === "truth" && R.true[i] >= 0;
      return { index: R.index[i], old_label: R.given[i], new_label: truth ? R.true[i] : R.pred[i], source: truth ? "truth" : "model", score: R.scores[D.by][i] };
    }).filter((r) => r.new_label >= 0);
  }
  function show(name, text) {
    $("export-text").value = text;
    $("export-note").textContent = `${name}: ${marks.size} marked sample(s)`;
  }
  $("export-exclude").addEventListener("click", () => {
    if (!marks.size) { show("exclude.txt", ""); $("export-note").textContent = "no sample is marked"; return; }
    const text = marked().map((i) => R.index[i]).join("\n") + "\n";
    show("exclude.txt (cg-train --exclude exclude.txt)", text);
    download("exclude.txt", text, "text/plain");
  });
  $("export-labels").addEventListener("click", () => {
    const rows = labelRows();
    const text = "index,old_label,new_label,source,score\n" + rows.map((r) => [r.index, r.old_label, r.new_label, r.source, r.score === null ? "" : r.score].join(",")).join("\n") + (rows.length ? "\n" : "");
    show("labels.csv (index, old_label, new_label, source, score)", text);
    if (rows.length) download("labels.csv", text, "text/csv");
  });
  $("export-labels-parquet").addEventListener("click", () => {
    const rows = labelRows();
    const bytes = parquet([
      { name: "index", type: "int64", values: rows.map((r) => r.index) },
      { name: "old_label", type: "int64", values: rows.map((r) => r.old_label) },
      { name: "new_label", type: "int64", values: rows.map((r) => r.new_label) },
      { name: "source", type: "string", values: rows.map((r) => r.source) },
      { name: "score", type: "double", values: rows.map((r) => (r.score === null ? NaN : r.score)) },
    ], rows.length);
    let b64 = "";
    for (let j = 0; j < bytes.length; j += 0x8000) b64 += String.fromCharCode.apply(null, bytes.subarray(j, j + 0x8000));
    show("labels.parquet (base64 below; cg-train --labels labels.parquet)", btoa(b64));
    if (rows.length) download("labels.parquet", bytes, "application/octet-stream");
  });

  // A minimal Parquet writer (format 1.0: one row group, one PLAIN-encoded uncompressed data page per required
  // column); metadata in Thrift's compact protocol, as parquet.thrift defines it.
  class Thrift {
    constructor() { this.b = []; this.last = [0]; }
    byte(x) { this.b.push(x & 255); }
    varint(v) { while (v >= 128) { this.b.push((v % 128) | 128); v = Math.floor(v / 128); } this.b.push(v); }
    zz(v) { this.varint(v >= 0 ? 2 * v : -2 * v - 1); }
    field(id, type) {
      const top = this.last.length - 1, delta = id - this.last[top];
      if (delta > 0 && delta <= 15) this.byte((delta << 4) | type); else { this.byte(type); this.zz(id); }
      this.last[top] = id;
    }
    i32(id, v) { this.field(id, 5); this.zz(v); }
    i64(id, v) { this.field(id, 6); this.zz(v); }
    bin(s) { const u = new TextEncoder().encode(s); this.varint(u.length); u.forEach((x) => this.b.push(x)); }
    str(id, s) { this.field(id, 8); this.bin(s); }
    list(id, type, n) { this.field(id, 9); if (n < 15) this.byte((n << 4) | type); else { this.byte(0xf0 | type); this.varint(n); } }
    struct(id) { this.field(id, 12); this.last.push(0); }
    element() { this.last.push(0); }
    end() { this.byte(0); this.last.pop(); }
  }
  const PARQUET_TYPE = { int64: 2, double: 5, string: 6 };
  function plain(column) {
    if (column.type === "string") {
      const parts = column.values.map((s) => new TextEncoder().encode(s));
      const out = new Uint8Array(parts.reduce((n, p) => n + 4 + p.length, 0)), view = new DataView(out.buffer);
      let at = 0;
      parts.forEach((p) => { view.setUint32(at, p.length, true); out.set(p, at + 4); at += 4 + p.length; });
      return out;
    }
    const out = new Uint8Array(8 * column.values.length), view = new DataView(out.buffer);
    column.values.forEach((v, j) => (column.type === "int64" ? view.setBigInt64(8 * j, BigInt(v), true) : view.setFloat64(8 * j, v, true)));
    return out;
  }
  function parquet(cols, rows) {
    const magic = new TextEncoder().encode("PAR1"), pieces = [magic], chunks = [];
    let offset = magic.length;
    cols.forEach((c) => {
      const data = plain(c), h = new Thrift();
      h.i32(1, 0); h.i32(2, data.length); h.i32(3, data.length); // DATA_PAGE, sizes
      h.struct(5); h.i32(1, rows); h.i32(2, 0); h.i32(3, 3); h.i32(4, 3); h.end(); // PLAIN values, RLE levels
      h.byte(0);
      const header = new Uint8Array(h.b);
      chunks.push({ c, offset, size: header.length + data.length });
      pieces.push(header, data);
      offset += header.length + data.length;
    });
    const m = new Thrift();
    m.i32(1, 1);
    m.list(2, 12, cols.length + 1);
    m.element(); m.str(4, "schema"); m.i32(5, cols.length); m.end();
    cols.forEach((c) => { m.element(); m.i32(1, PARQUET_TYPE[c.type]); m.i32(3, 0); m.str(4, c.name); if (c.type === "string") m.i32(6, 0); m.end(); });
    m.i64(3, rows);
    m.list(4, 12, 1);
    m.element();
    m.list(1, 12, chunks.length);
    chunks.forEach((k) => {
      m.element(); m.i64(2, k.offset); m.struct(3);
      m.i32(1, PARQUET_TYPE[k.c.type]); m.list(2, 5, 1); m.zz(0); m.list(3, 8, 1); m.bin(k.c.name); m.i32(4, 0);
      m.i64(5, rows); m.i64(6, k.size); m.i64(7, k.size); m.i64(9, k.offset);
      m.end(); m.end();
    });
    m.i64(2, chunks.reduce((n, k) => n + k.size, 0)); m.i64(3, rows);
    m.end();
    m.str(6, "cg-train explorer");
    m.byte(0);
    const meta = new Uint8Array(m.b), tail = new Uint8Array(4);
    new DataView(tail.buffer).setUint32(0, meta.length, true);
    pieces.push(meta, tail, magic);
    const out = new Uint8Array(pieces.reduce((n, p) => n + p.length, 0));
    let at = 0;
    pieces.forEach((p) => { out.set(p, at); at += p.length; });
    return out;
  }

  // ------------------------------------------------------------------ wiring
  ["class-filter", "class-of", "mismatch", "status-filter", "pool-filter", "marked-only"].forEach((id) => $(id).addEventListener("change", () => refresh()));
  $("search").addEventListener("input", () => refresh());
  $("page-size").addEventListener("change", (ev) => { state.size = +ev.target.value; refresh(); });
  $("prev").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); render(); });
  $("next").addEventListener("click", () => { state.page += 1; render(); });
  function markShown(on) { state.order.forEach((i) => (on ? marks.add(i) : marks.delete(i))); save(); render(); if (state.selected >= 0) detail(state.selected); }
  $("mark-shown").addEventListener("click", () => markShown(true));
  $("unmark-shown").addEventListener("click", () => markShown(false));
  $("summary").textContent = `${D.run} \u2014 ${N} of ${D.n_trained} trained samples on this page: the ${D.n_top} highest by ${D.by}` +
    (D.n_random ? ` and ${D.n_random} drawn at random from the rest (seed ${D.seed})` : "") +
    `; learning paths from ${D.source === "eval" ? "paths_eval/ (eval passes)" : "paths/ (training passes)"}, ${T} epochs; scores: ${D.scores_file}`;
  refresh();
  window.cgExplorer = { data: D, marks, state, refresh, parquet };
})();
