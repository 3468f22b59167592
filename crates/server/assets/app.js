// adaptsched dashboard: a single page over the /v1 API (the CLI's API and bearer token).
// Views by URL hash: #/ cluster overview, #/jobs queue and running jobs, #/job/ID one job.
// Live updates: GET /v1/events (server-sent events, read with fetch so the token stays in
// a header). Charts are inline SVG drawn by lineChart() below. No dependencies.

const TOKEN_KEY = "adaptsched.token";
const main = document.getElementById("main");
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------- helpers

const esc = (value) =>
  String(value ?? "").replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

function fmt(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (typeof x !== "number") return esc(x);
  const a = Math.abs(x);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return x.toExponential(2);
  return String(Number(x.toPrecision(digits)));
}

const time = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "–");
const dateTime = (t) => (t ? new Date(t * 1000).toLocaleString() : "–");

function ago(t) {
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const response = await fetch(`/v1${path}`, {
    ...options,
    headers: { Authorization: `Bearer ${token}`, ...(options.headers || {}) },
  });
  if (response.status === 401) throw new Unauthorized("token refused");
  if (!response.ok) {
    let message = `${response.status}`;
    try {
      message = (await response.json()).error || message;
    } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

const getJson = async (path) => (await api(path)).json();

// Every job `query` matches (`state=running` ...), oldest first: the server pages its list, so
// ask for the next page after the last id until a page comes back short.
const JOB_PAGE = 1000;
async function getAllJobs(query = "") {
  const jobs = [];
  for (;;) {
    const after = jobs.length ? `&after=${jobs[jobs.length - 1].id}` : "";
    const page = await getJson(`/jobs?limit=${JOB_PAGE}${after}${query ? `&${query}` : ""}`);
    jobs.push(...page);
    if (page.length < JOB_PAGE) return jobs;
  }
}

// Queued and running jobs only: what the overview and the default jobs view show. Queued
// first: a job that starts between the two reads is then seen twice (the later read wins),
// never missed.
async function getActiveJobs() {
  const byId = new Map();
  for (const state of ["queued", "running"]) {
    for (const job of await getAllJobs(`state=${state}`)) byId.set(job.id, job);
  }
  return [...byId.values()];
}

// ----------------------------------------------------------------------------- charts

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];

function niceTicks(min, max, count = 5, minStep = 0) {
  if (!(max > min)) return [min];
  const raw = Math.max((max - min) / count, minStep);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) ticks.push(v);
  return ticks;
}

// A line chart as an SVG string. series: [{name, points: [[x, y], ...]}]; options: title,
// x ("time" formats x as clock time), y label, yMin/yMax, step (draw as steps). Every series
// is a <path class="series" data-series=NAME data-points=N>.
export function lineChart(series, options = {}) {
  const W = options.width || 560, H = options.height || 220;
  const L = 56, R = 12, T = 26, B = 34;
  const all = series.flatMap((s) => s.points.filter((p) => Number.isFinite(p[1])));
  const head = `<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(options.title)}"` +
    ` data-chart="${esc(options.id || options.title)}" xmlns="http://www.w3.org/2000/svg">` +
    `<text class="title" x="${L}" y="16">${esc(options.title)}</text>`;
  if (all.length === 0) {
    return `${head}<text class="empty" x="${W / 2}" y="${H / 2}" text-anchor="middle">no data yet</text></svg>`;
  }
  let x0 = Math.min(...all.map((p) => p[0])), x1 = Math.max(...all.map((p) => p[0]));
  let y0 = options.yMin ?? Math.min(...all.map((p) => p[1]));
  let y1 = options.yMax ?? Math.max(...all.map((p) => p[1]));
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 = y0 === 0 ? 0 : y0 * 0.9; y1 = y1 === 0 ? 1 : y1 * 1.1; }
  if (options.yMin === undefined && y0 > 0 && y0 < (y1 - y0) * 0.5) y0 = 0;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const xFormat = options.x === "time"
    ? (v) => new Date(v * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : (v) => fmt(v);
  let out = head + '<g class="grid">';
  for (const v of niceTicks(y0, y1)) {
    out += `<line x1="${L}" x2="${W - R}" y1="${sy(v)}" y2="${sy(v)}"/>` +
      `<text x="${L - 6}" y="${sy(v) + 4}" text-anchor="end">${fmt(v)}</text>`;
  }
  const xTicks = options.x === "time" ? niceTicks(x0, x1, 4, 1) : niceTicks(x0, x1, 6);
  for (const v of xTicks) {
    out += `<text x="${sx(v)}" y="${H - B + 16}" text-anchor="middle">${esc(xFormat(v))}</text>`;
  }
  out += `</g><text x="${W - R}" y="${H - 4}" text-anchor="end">${esc(options.xLabel || "")}</text>`;
  series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    let d = "", n = 0, prev = null;
    for (const [x, y] of s.points) {
      if (!Number.isFinite(y)) { prev = null; continue; }
      const X = sx(x).toFixed(1), Y = sy(y).toFixed(1);
      if (prev && options.step) d += `L${X},${prev}`;
      d += `${prev === null ? "M" : "L"}${X},${Y}`;
      prev = Y;
      n++;
    }
    out += `<path class="series" data-series="${esc(s.name)}" data-points="${n}" stroke="${color}" d="${d}"/>`;
    if (n === 1) {
      const [x, y] = s.points.find((p) => Number.isFinite(p[1]));
      out += `<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="3" fill="${color}"/>`;
    }
    if (series.length > 1 || s.name) {
      const lx = W - R - 150 * (series.length - i);
      out += `<rect x="${lx}" y="8" width="12" height="3" fill="${color}"/>` +
        `<text x="${lx + 16}" y="13">${esc(s.name)}</text>`;
    }
  });
  return out + "</svg>";
}

// ----------------------------------------------------------------------- live events

let refreshTimer = null;
function scheduleRefresh(kind) {
  pendingKinds.add(kind);
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    const kinds = new Set(pendingKinds);
    pendingKinds.clear();
    const view = current;
    view?.update?.(kinds).catch((error) => view === current && showError(error));
  }, 250);
}
const pendingKinds = new Set();
let liveAbort = null;

async function follow() {
  const live = $("live");
  while (sessionStorage.getItem(TOKEN_KEY)) {
    liveAbort = new AbortController();
    try {
      const response = await api("/events", { signal: liveAbort.signal });
      live.textContent = "live";
      live.classList.add("on");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let kind = "message";
          let data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) kind = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (kind === "telemetry") telemetryArrived(JSON.parse(data));
          if (kind !== "hello" && !block.startsWith(":")) scheduleRefresh(kind);
        }
      }
    } catch (error) {
      if (error instanceof Unauthorized) return logout("Your token was refused.");
      if (error.name === "AbortError") return;
    }
    live.textContent = "reconnecting";
    live.classList.remove("on");
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

// Telemetry history per node, kept across views: {name: [NodeTelemetry]}
const telemetry = {};
const TELEMETRY_KEEP = 720;

function telemetryArrived(sample) {
  // On Ray the event only says that new reports exist (no sample): the refresh loads them.
  if (typeof sample.cpu_percent !== "number") return;
  for (const name of Object.keys(telemetry)) {
    const list = telemetry[name];
    if (!list.length || list[list.length - 1].at < sample.at) list.push(sample);
    if (list.length > TELEMETRY_KEEP) list.splice(0, list.length - TELEMETRY_KEEP);
  }
}

async function loadTelemetry(name) {
  const list = telemetry[name] || (telemetry[name] = []);
  const since = list.length ? list[list.length - 1].at : 0;
  const fresh = await getJson(`/nodes/${encodeURIComponent(name)}/telemetry?since=${since}`);
  for (const s of fresh) if (!list.length || list[list.length - 1].at < s.at) list.push(s);
  if (list.length > TELEMETRY_KEEP) list.splice(0, list.length - TELEMETRY_KEEP);
  return list;
}

// ----------------------------------------------------------------------------- views

let current = null;

function stateCell(state) {
  return `<span class="state state-${esc(state)}">${esc(state)}</span>`;
}

function jobRows(jobs) {
  if (!jobs.length) return '<tr><td colspan="9" class="muted">no jobs</td></tr>';
  return jobs.map((j) => `<tr class="job" data-job="${j.id}">
    <td class="num"><a href="#/job/${j.id}">${j.id}</a></td>
    <td><a href="#/job/${j.id}">${esc(j.name)}</a></td><td>${esc(j.user)}</td>
    <td>${stateCell(j.state)}</td>
    <td class="num">${j.gpus} <span class="muted">(${j.min_gpus}–${j.max_gpus})</span></td>
    <td class="num">${j.priority}</td><td class="num">${j.restarts}</td>
    <td title="${esc(dateTime(j.submitted_at))}">${esc(ago(j.submitted_at))}</td>
    <td class="why">${esc(j.waiting_reason || (j.exit_code !== null ? `exit ${j.exit_code}` : ""))}</td>
  </tr>`).join("");
}

function jobTable(jobs, id = "jobs") {
  return `<table id="${id}"><thead><tr><th class="num">id</th><th>name</th><th>owner</th>
    <th>state</th><th class="num">devices (min–max)</th><th class="num">priority</th>
    <th class="num">restarts</th><th>submitted</th><th>why waiting / exit</th></tr></thead>
    <tbody>${jobRows(jobs)}</tbody></table>`;
}

const ACTIVE = (j) => j.state === "running" || j.state === "queued";
function orderJobs(jobs) {
  const rank = { running: 0, queued: 1 };
  return [...jobs].sort((a, b) => (rank[a.state] ?? 2) - (rank[b.state] ?? 2) ||
    (ACTIVE(a) ? a.id - b.id : b.id - a.id));
}

function overview() {
  main.innerHTML = `<h1>Cluster</h1><div id="stats" class="grid"></div>
    <h2>Nodes</h2><div id="nodes"></div>
    <h2>Utilization</h2><div id="util" class="charts"></div>
    <h2>Queue and running jobs</h2><div id="active"></div>`;
  async function update(kinds) {
    const [cluster, nodes, jobs] = await Promise.all([
      getJson("/cluster"), getJson("/nodes"), getActiveJobs(),
    ]);
    const by = cluster.jobs_by_state;
    $("stats").innerHTML = [
      [`${cluster.gpus_allocated} / ${cluster.gpus_total}`, "devices allocated"],
      [by.running ?? 0, "running"], [by.queued ?? 0, "queued"],
      [`${by.succeeded ?? 0} / ${by.failed ?? 0} / ${by.cancelled ?? 0}`, "succeeded / failed / cancelled"],
      [esc(cluster.policy), `policy, every ${fmt(cluster.interval_s)} s`],
      [fmt(cluster.last_round_ms), `ms last decide (${cluster.rounds} rounds)`],
    ].map(([v, l]) => `<div class="stat"><b>${v}</b><span>${l}</span></div>`).join("");
    $("nodes").innerHTML = `<table id="node-table"><thead><tr><th>node</th><th>device type</th>
      <th class="num">devices used / total</th><th class="num">CPU cores</th><th class="num">memory GB</th>
      <th class="num">CPU %</th><th class="num">memory used GB</th><th class="num">GPUs</th>
      <th class="num">balance p<sub>i</sub></th></tr></thead><tbody>${nodes.map((n) => {
        const t = n.telemetry;
        const gpus = t?.gpus ? t.gpus.map((g) => `${fmt(g.utilization_percent)}%`).join(" ") : `<span class="muted" title="${esc(t?.gpu_note)}">none</span>`;
        return `<tr><td>${esc(n.name)}</td><td>${esc(n.gpu_type)}</td>
          <td class="num">${n.gpus_allocated} / ${n.gpus}</td><td class="num">${fmt(n.cpu_cores)}</td>
          <td class="num">${fmt(n.memory_gb)}</td><td class="num">${fmt(t?.cpu_percent)}</td>
          <td class="num">${fmt(t?.memory_used_gb)}</td><td class="num">${gpus}</td>
          <td class="num">${fmt(n.balance_ratio)}</td></tr>`;
      }).join("")}</tbody></table>`;
    if (!kinds || kinds.has("telemetry") || kinds.has("jobs")) {
      let charts = "";
      for (const n of nodes) {
        const list = await loadTelemetry(n.name);
        const series = [
          { name: "CPU %", points: list.map((s) => [s.at, s.cpu_percent]) },
          { name: "memory %", points: list.map((s) => [s.at, (100 * s.memory_used_gb) / (s.memory_total_gb || 1)]) },
        ];
        charts += lineChart(series, { title: `${n.name}: CPU and memory`, id: `node-${n.name}`, x: "time", yMin: 0, yMax: 100 });
        const gpuCount = list.reduce((m, s) => Math.max(m, s.gpus?.length || 0), 0);
        if (gpuCount) {
          const gpuSeries = [];
          for (let g = 0; g < gpuCount; g++) {
            gpuSeries.push({ name: `GPU ${g} %`, points: list.map((s) => [s.at, s.gpus?.[g]?.utilization_percent ?? NaN]) });
          }
          charts += lineChart(gpuSeries, { title: `${n.name}: GPU utilization`, id: `gpu-${n.name}`, x: "time", yMin: 0, yMax: 100 });
        }
      }
      $("util").innerHTML = charts;
    }
    $("active").innerHTML = jobTable(orderJobs(jobs));
  }
  return { update };
}

function jobsView() {
  main.innerHTML = `<h1>Jobs</h1><div class="filters">
      <label><input type="radio" name="show" value="active" checked> queued and running</label>
      <label><input type="radio" name="show" value="all"> all</label></div>
    <div id="list"></div>`;
  let show = "active";
  main.querySelectorAll("input[name=show]").forEach((input) =>
    input.addEventListener("change", () => { show = input.value; update().catch(showError); }));
  async function update() {
    const jobs = show === "all" ? await getAllJobs() : await getActiveJobs();
    $("list").innerHTML = jobTable(orderJobs(jobs));
  }
  return { update };
}

function jobView(id) {
  main.innerHTML = `<h1 id="job-title">Job ${esc(id)}</h1>
    <div class="card" id="job-facts"></div>
    <div class="charts" id="job-charts"></div>
    <h2>Allocation history</h2><div id="job-allocations"></div>
    <h2>Fitted model</h2><div class="card" id="job-model"></div>
    <h2>Events</h2><div id="job-events"></div>
    <h2>Log (tail)</h2><pre id="job-log-stdout"></pre>
    <h2>stderr (tail)</h2><pre id="job-log-stderr"></pre>`;
  const steps = [];
  const logs = { stdout: { offset: 0, text: "" }, stderr: { offset: 0, text: "" } };
  const LOG_KEEP = 64 * 1024;

  async function tail(stream) {
    const log = logs[stream];
    for (let i = 0; i < 8; i++) {
      const response = await api(`/jobs/${id}/logs?stream=${stream}&offset=${log.offset}&limit=262144`);
      const text = await response.text();
      log.offset = Number(response.headers.get("x-log-offset") || log.offset);
      log.text = (log.text + text).slice(-LOG_KEEP);
      if (!text.length) break;
    }
    const el = $(`job-log-${stream}`);
    const lines = log.text.split("\n");
    el.textContent = lines.slice(-200).join("\n") || "(empty)";
    el.scrollTop = el.scrollHeight;
  }

  async function update() {
    const since = steps.length ? `?since_step=${steps[steps.length - 1].step}` : "";
    const [job, fresh] = await Promise.all([getJson(`/jobs/${id}`), getJson(`/jobs/${id}/metrics${since}`)]);
    steps.push(...fresh);
    document.title = `${job.name} · adaptsched`;
    $("job-title").innerHTML = `Job ${job.id}: ${esc(job.name)} ${stateCell(job.state)}`;
    const batch = job.batch ? `${job.batch.global_batch_size} (local ${job.batch.local_batch_size} × ${job.batch.accumulation_steps + 1} steps, lr ×${fmt(job.batch.lr_scale)})` : "–";
    const mayCancel = ACTIVE(job);
    $("job-facts").innerHTML = `<dl class="kv">
      <dt>owner</dt><dd>${esc(job.user)}</dd>
      <dt>command</dt><dd><code>${esc(job.request.command.join(" "))}</code></dd>
      <dt>allocation</dt><dd>${job.allocation.map((p) => `${p.gpus} on ${esc(p.node)}`).join(", ") || "none"} <span class="muted">(min ${job.min_gpus}, max ${job.max_gpus})</span></dd>
      <dt>batch</dt><dd>${batch}</dd>
      <dt>priority</dt><dd>${job.priority}</dd><dt>restarts</dt><dd>${job.restarts}</dd>
      <dt>submitted</dt><dd>${esc(dateTime(job.submitted_at))}</dd>
      ${job.waiting_reason ? `<dt>why waiting</dt><dd>${esc(job.waiting_reason)}</dd>` : ""}
      ${job.exit_code !== null ? `<dt>exit code</dt><dd>${job.exit_code}</dd>` : ""}
      <dt>last step</dt><dd>${job.last_report ? `${job.last_report.step} (loss ${fmt(job.last_report.loss)})` : "–"}</dd>
      </dl>${mayCancel ? '<p><button id="cancel" type="button">Cancel job</button></p>' : ""}`;
    $("cancel")?.addEventListener("click", async () => {
      if (!confirm(`Cancel job ${job.id}?`)) return;
      await api(`/jobs/${id}/cancel`, { method: "POST" }).catch(showError);
      scheduleRefresh("jobs");
    });
    const end = ACTIVE(job) ? Date.now() / 1000 : job.updated_at;
    const alloc = job.allocation_history.map((c) => [c.at, c.allocation.reduce((s, p) => s + p.gpus, 0)]);
    if (alloc.length) alloc.push([end, alloc[alloc.length - 1][1]]);
    const batches = job.allocation_history.filter((c) => c.batch).map((c) => [c.at, c.batch.global_batch_size]);
    if (batches.length) batches.push([end, batches[batches.length - 1][1]]);
    $("job-charts").innerHTML =
      lineChart([{ name: "loss", points: steps.map((s) => [s.step, s.loss ?? NaN]) }], { title: "Loss", id: "loss", xLabel: "step" }) +
      lineChart([{ name: "samples/s", points: steps.map((s) => [s.step, s.step_time > 0 ? s.samples / s.step_time : NaN]) }], { title: "Throughput (samples/s)", id: "throughput", xLabel: "step" }) +
      lineChart([{ name: "devices", points: alloc }], { title: "Allocation (devices)", id: "allocation", x: "time", step: true, yMin: 0 }) +
      lineChart([{ name: "batch (reported)", points: steps.map((s) => [s.step, s.samples]) }], { title: "Batch size per step", id: "batch", xLabel: "step", step: true }) +
      (batches.length ? lineChart([{ name: "global batch", points: batches }], { title: "Batch decisions", id: "batch-decisions", x: "time", step: true }) : "");
    const m = job.model;
    $("job-model").innerHTML = m ? `<dl class="kv">${Object.entries(m.params).map(([k, v]) => `<dt>${esc(k)}</dt><dd>${fmt(v, 4)}</dd>`).join("")}
      <dt>grad sqr / var</dt><dd>${fmt(m.grad_sqr)} / ${fmt(m.grad_var)}</dd>
      <dt>noise scale</dt><dd>${fmt(m.noise_scale)}</dd><dt>observations</dt><dd>${m.observations}</dd></dl>
      ${Object.keys(m.params).length ? "" : '<p class="muted">throughput parameters are fitted for jobs with batch limits</p>'}` : '<span class="muted">no reports yet</span>';
    $("job-events").innerHTML = `<table><thead><tr><th>time</th><th>kind</th><th>message</th></tr></thead><tbody>${
      [...job.events].reverse().slice(0, 100).map((e) => `<tr><td>${esc(time(e.at))}</td><td>${esc(e.kind)}</td><td>${esc(e.message)}</td></tr>`).join("")}</tbody></table>`;
    $("job-allocations").innerHTML = `<table><thead><tr><th>time</th><th class="num">devices</th><th class="num">global batch</th><th>reason</th></tr></thead><tbody>${
      [...job.allocation_history].reverse().map((c) => `<tr><td>${esc(time(c.at))}</td><td class="num">${c.allocation.reduce((s, p) => s + p.gpus, 0)}</td><td class="num">${c.batch ? c.batch.global_batch_size : "–"}</td><td>${esc(c.reason)}</td></tr>`).join("")}</tbody></table>`;
    await Promise.all([tail("stdout"), tail("stderr")]).catch(() => { /* logs are the owner's */ });
  }
  return { update };
}

// ------------------------------------------------------------------------ navigation

function showError(error) {
  if (error instanceof Unauthorized) return logout("Your token was refused.");
  let box = $("error");
  if (!box) {
    box = document.createElement("p");
    box.id = "error";
    box.className = "error";
    main.prepend(box);
  }
  box.textContent = `Error: ${error.message}`;
}

function route() {
  if (!sessionStorage.getItem(TOKEN_KEY)) return loginView();
  const hash = location.hash.replace(/^#/, "") || "/";
  const job = hash.match(/^\/job\/(\d+)$/);
  const view = job ? jobView(job[1]) : hash === "/jobs" ? jobsView() : overview();
  current = view;
  const started = performance.now();
  // A view left meanwhile may still finish a request: only the current one reports errors.
  view.update().then(() => {
    main.dataset.loaded = hash;
    main.dataset.loadMs = String(Math.round(performance.now() - started));
  }).catch((error) => view === current && showError(error));
}

main.addEventListener("click", (event) => {
  const row = event.target.closest("tr.job");
  if (row && !event.target.closest("a")) location.hash = `#/job/${row.dataset.job}`;
});

function loginView(message = "") {
  current = null;
  $("nav").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  main.replaceChildren($("login-template").content.cloneNode(true));
  $("login-error").textContent = message;
  $("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    try {
      await signedIn();
    } catch (error) {
      sessionStorage.removeItem(TOKEN_KEY);
      loginView(error instanceof Unauthorized ? "That token is not valid." : error.message);
    }
  });
  $("token").focus();
}

async function signedIn() {
  const me = await getJson("/whoami");
  $("who").textContent = `${me.user}${me.admin ? " (admin)" : ""}`;
  $("nav").hidden = false;
  $("logout").hidden = false;
  route();
  follow();
}

function logout(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  liveAbort?.abort();
  $("live").textContent = "offline";
  $("live").classList.remove("on");
  loginView(message);
}

$("logout").addEventListener("click", () => logout());
window.addEventListener("hashchange", route);

if (sessionStorage.getItem(TOKEN_KEY)) signedIn().catch((error) => logout(error.message));
else loginView();
