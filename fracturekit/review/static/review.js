// fracturekit review page: one list of films at a time, the selected film (and its duplicate cluster) drawn at
// full resolution on canvases, decisions sent to the server one key press at a time. No framework, no CDN.
"use strict";

const KEYS = { "1": "fracture", "0": "no_fracture", x: "exclude", b: "box_wrong" };
const $ = (id) => document.getElementById(id);
const state = {
  data: null, list: "", rows: [], shown: [], current: 0, sort: { col: "", dir: 1 },
  group: "", window: { brightness: 1, contrast: 1 }, views: [],
};

function setStatus(text, error = false) {
  const s = $("status");
  s.textContent = text;
  s.className = error ? "error" : "";
}

async function load() {
  const r = await fetch("api/data");
  if (!r.ok) { setStatus(`cannot load: ${r.status} ${await r.text()}`, true); return; }
  state.data = await r.json();
  const d = state.data;
  $("kind").textContent = `${d.kind} ${d.root} · reviewer ${d.reviewer}`;
  const lists = Object.keys(d.lists);
  $("list").innerHTML = lists.map((n) => `<option>${esc(n)}</option>`).join("");
  const groups = [];
  for (const col of d.subgroups) {
    const values = [...new Set(Object.values(d.films).map((f) => f[col]))].sort();
    for (const v of values) groups.push(`<option value="${esc(col)}=${esc(v)}">${esc(col)} = ${esc(v || "(none)")}</option>`);
  }
  $("group").innerHTML = `<option value="">all</option>` + groups.join("");
  const saved = sessionStorage.getItem("fk-list");
  selectList(lists.includes(saved) ? saved : lists[0]);
}

function esc(s) {
  return String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

function lastDecision(film) {
  const rows = (state.data.decisions[film] || []).filter((r) => r.decision !== "note");
  const notes = (state.data.decisions[film] || []).filter((r) => r.note);
  const d = rows.length ? rows[rows.length - 1].decision : "";
  return notes.length ? `${d} (${notes[notes.length - 1].note})` : d;
}

function selectList(name) {
  state.list = name;
  $("list").value = name;
  sessionStorage.setItem("fk-list", name);
  const l = state.data.lists[name];
  state.rows = l.rows;
  state.sort = l.sort ? { col: l.sort, dir: -1 } : { col: "", dir: 1 };
  state.current = 0;
  render();
}

function columns() {
  return ["film", "decision", ...state.data.lists[state.list].columns, ...state.data.subgroups];
}

function cell(row, col) {
  if (col === "decision") return lastDecision(row.film);
  if (col in row) return row[col];
  return (state.data.films[row.film] || {})[col] ?? "";
}

function render() {
  const cols = columns();
  let rows = state.rows.map((r, i) => ({ ...r, _i: i }));
  if (state.group) {
    const [col, value] = state.group.split(/=(.*)/s);
    rows = rows.filter((r) => String(cell(r, col)) === value);
  }
  if (state.sort.col) {
    const c = state.sort.col;
    rows.sort((a, b) => {
      const x = cell(a, c), y = cell(b, c);
      const nx = parseFloat(x), ny = parseFloat(y);
      const cmp = !isNaN(nx) && !isNaN(ny) ? nx - ny : String(x).localeCompare(String(y));
      return state.sort.dir * cmp || a._i - b._i;
    });
  }
  state.shown = rows;
  $("rows").tHead.innerHTML = "<tr>" + cols.map((c) => {
    const cls = state.sort.col === c ? (state.sort.dir > 0 ? "asc" : "desc") : "";
    return `<th data-col="${esc(c)}" class="${cls}">${esc(c)}</th>`;
  }).join("") + "</tr>";
  $("rows").tBodies[0].innerHTML = rows.map((r, k) =>
    `<tr data-k="${k}">` + cols.map((c) => `<td class="${c === "film" ? "film" : c === "decision" ? "decision" : ""}" ` +
      `title="${esc(cell(r, c))}">${esc(c === "film" ? r.film.split("/").pop() : cell(r, c))}</td>`).join("") +
    "</tr>").join("");
  state.current = Math.min(state.current, Math.max(0, rows.length - 1));
  show();
}

function clusterOf(row) {
  // the films shown side by side: the row's duplicate cluster when it has one, else the film alone
  if (!row.cluster) return [row.film];
  const dups = state.data.lists["duplicate clusters"];
  const members = dups ? dups.rows.filter((r) => r.cluster === row.cluster).map((r) => r.film) : [];
  return [row.film, ...members.filter((f) => f !== row.film)].slice(0, 4);
}

function show() {
  const body = $("rows").tBodies[0];
  for (const tr of body.rows) tr.classList.toggle("selected", Number(tr.dataset.k) === state.current);
  const tr = body.rows[state.current];
  if (tr) tr.scrollIntoView({ block: "nearest" });
  const row = state.shown[state.current];
  $("films").innerHTML = "";
  state.views = [];
  if (!row) { $("info").textContent = "no films in this list"; return; }
  const details = state.data.lists[state.list].columns.filter((c) => row[c] !== "" && row[c] !== undefined)
    .map((c) => `${c} ${row[c]}`).join(" · ");
  $("info").innerHTML = `<b>${state.current + 1} / ${state.shown.length}</b> ${esc(row.film)}<br>${esc(details)}`;
  const films = clusterOf(row);
  $("films").style.gridTemplateColumns = `repeat(${Math.min(films.length, 2)}, 1fr)`;  // 3-4 films: a 2 x 2 grid
  for (const film of films) addView(film, film === row.film);
}

function addView(film, current) {
  const info = state.data.films[film] || { gt: [], pred: [] };
  const fig = document.createElement("figure");
  if (current) fig.className = "current";
  const canvas = document.createElement("canvas");
  const cap = document.createElement("figcaption");
  cap.textContent = `${film} · ${info.label || ""} ${info.split || ""} ${lastDecision(film)}`;
  cap.title = cap.textContent;
  fig.append(canvas, cap);
  $("films").append(fig);
  const view = { film, info, canvas, img: new Image(), scale: 1, x: 0, y: 0, fitted: false };
  state.views.push(view);
  view.img.onload = () => { fit(view); draw(view); };
  view.img.onerror = () => setStatus(`cannot load ${film}`, true);
  view.img.src = "api/image?path=" + encodeURIComponent(film);
  attachMouse(view);
}

function fit(view) {
  const c = view.canvas;
  c.width = c.clientWidth * devicePixelRatio;
  c.height = c.clientHeight * devicePixelRatio;
  view.scale = Math.min(c.width / view.img.width, c.height / view.img.height);
  view.x = (c.width - view.img.width * view.scale) / 2;
  view.y = (c.height - view.img.height * view.scale) / 2;
}

function draw(view) {
  const c = view.canvas, ctx = c.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, c.width, c.height);
  if (!view.img.complete || !view.img.width) return;
  ctx.setTransform(view.scale, 0, 0, view.scale, view.x, view.y);
  ctx.imageSmoothingEnabled = view.scale < 1;
  ctx.filter = `brightness(${state.window.brightness}) contrast(${state.window.contrast})`;
  ctx.drawImage(view.img, 0, 0);
  ctx.filter = "none";
  const lw = 2 / view.scale;
  ctx.font = `${13 / view.scale}px sans-serif`;
  if ($("show-gt").checked) boxes(ctx, view.info.gt, "#3ddc84", lw);
  if ($("show-pred").checked) boxes(ctx, view.info.pred, "#ffb000", lw);
}

function boxes(ctx, list, color, lw) {
  ctx.strokeStyle = ctx.fillStyle = color;
  ctx.lineWidth = lw;
  for (const b of list || []) {
    ctx.strokeRect(b[1], b[2], b[3] - b[1], b[4] - b[2]);
    const text = b.length > 5 ? `${b[0]} ${Number(b[5]).toFixed(2)}` : String(b[0]);
    ctx.fillText(text, b[1], b[2] - 3 * lw);
  }
}

function attachMouse(view) {
  const c = view.canvas;
  c.addEventListener("wheel", (e) => {
    e.preventDefault();
    const k = Math.exp(-e.deltaY * 0.0015), px = e.offsetX * devicePixelRatio, py = e.offsetY * devicePixelRatio;
    view.x = px - (px - view.x) * k;
    view.y = py - (py - view.y) * k;
    view.scale *= k;
    draw(view);
  }, { passive: false });
  c.addEventListener("contextmenu", (e) => e.preventDefault());
  c.addEventListener("dblclick", () => { state.window = { brightness: 1, contrast: 1 }; fit(view); redraw(); });
  c.addEventListener("mousedown", (e) => {
    const windowing = e.shiftKey || e.button === 2;
    let lx = e.clientX, ly = e.clientY;
    const move = (m) => {
      const dx = m.clientX - lx, dy = m.clientY - ly;
      lx = m.clientX; ly = m.clientY;
      if (windowing) {  // as on a radiology workstation: one drag sets the window, for every film shown
        state.window.contrast = Math.max(0.1, state.window.contrast * Math.exp(dx * 0.005));
        state.window.brightness = Math.max(0.1, state.window.brightness * Math.exp(-dy * 0.005));
        redraw();
      } else {
        view.x += dx * devicePixelRatio; view.y += dy * devicePixelRatio;
        draw(view);
      }
    };
    const up = () => { removeEventListener("mousemove", move); removeEventListener("mouseup", up); };
    addEventListener("mousemove", move);
    addEventListener("mouseup", up);
  });
}

function redraw() { for (const v of state.views) draw(v); }

async function decide(decision, note = "") {
  // the film is taken and the page moves on at once: keys pressed faster than the server answers stay in order
  const row = state.shown[state.current], tr = $("rows").tBodies[0].rows[state.current];
  if (!row) return;
  if (decision !== "note") move(1);
  const r = await fetch("api/decision", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ path: row.film, decision, note }),
  });
  if (!r.ok) { setStatus(`not saved (${row.film}): ${r.status} ${await r.text()}`, true); return; }
  const saved = await r.json();
  (state.data.decisions[saved.film] ||= []).push(saved);
  setStatus(`saved ${saved.path}: ${decision}${note ? " (" + note + ")" : ""}`);
  tr.querySelector("td.decision").textContent = lastDecision(row.film);
  if (decision === "note") show();
}

function move(step) {
  if (!state.shown.length) return;
  state.current = Math.max(0, Math.min(state.shown.length - 1, state.current + step));
  show();
}

document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "SELECT" || e.target.tagName === "INPUT" || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "j" || e.key === "ArrowDown") move(1);
  else if (e.key === "k" || e.key === "ArrowUp") move(-1);
  else if (e.key in KEYS) decide(KEYS[e.key]);
  else if (e.key === "n") {
    const note = prompt("note for this film");
    if (note) decide("note", note);
  } else return;
  e.preventDefault();
});

$("rows").addEventListener("click", (e) => {
  const th = e.target.closest("th");
  if (th) {
    const col = th.dataset.col;
    state.sort = { col, dir: state.sort.col === col ? -state.sort.dir : 1 };
    render();
    return;
  }
  const tr = e.target.closest("tr[data-k]");
  if (tr) { state.current = Number(tr.dataset.k); show(); }
});
$("list").addEventListener("change", (e) => { selectList(e.target.value); e.target.blur(); });
$("group").addEventListener("change", (e) => { state.group = e.target.value; state.current = 0; render(); e.target.blur(); });
for (const id of ["show-gt", "show-pred"]) $(id).addEventListener("change", (e) => { redraw(); e.target.blur(); });
addEventListener("resize", () => { for (const v of state.views) fit(v); redraw(); });
load();
