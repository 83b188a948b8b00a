// vidgate dashboard: vanilla JS, no build step.
// Every piece of data reaches the DOM through textContent or attributes, never parsed as
// HTML, so a prompt or an error message can never become markup.
"use strict";

const KEY_STORAGE = "vidgate.apiKey";
const JOBS_EVERY_MS = 1000;
const SUMMARY_EVERY_MS = 3000;
const HIDDEN_EVERY_MS = 5000; // slower refresh while the tab is in the background
const TERMINAL = new Set(["succeeded", "failed", "canceled", "expired", "needs_reconciliation"]);
const FAILED = ["failed", "canceled", "expired", "needs_reconciliation"];

const state = {
  key: localStorage.getItem(KEY_STORAGE) || "",
  jobs: new Map(), // id -> job (as the API returns it)
  rows: new Map(), // id -> {tr, cells}
  selected: null, // job id
  follow: null, // AbortController of the selected job's event stream
  video: { jobId: null, url: null, loading: null },
  summary: null,
  timers: [],
  optionsLoaded: false,
};

// ---- small helpers --------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function setText(node, text) {
  const t = text === null || text === undefined ? "" : String(text);
  if (node.textContent !== t) node.textContent = t;
}

function money(v, digits = 2) {
  if (v === null || v === undefined) return "—";
  const d = Math.abs(v) > 0 && Math.abs(v) < 0.01 ? 4 : digits;
  return "$" + Number(v).toFixed(d);
}

function seconds(v) {
  if (v === null || v === undefined) return "—";
  return v < 10 ? v.toFixed(1) + " s" : Math.round(v) + " s";
}

function ago(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "";
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 60) return s + "s ago";
  if (s < 3600) return Math.floor(s / 60) + "m ago";
  if (s < 86400) return Math.floor(s / 3600) + "h ago";
  return new Date(t).toLocaleDateString();
}

function bytes(n) {
  if (!n && n !== 0) return "—";
  if (n < 1024) return n + " B";
  if (n < 1024 * 1024) return (n / 1024).toFixed(0) + " KiB";
  return (n / 1024 / 1024).toFixed(1) + " MiB";
}

function truncate(s, n) {
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}

function stateLabel(s) {
  return s.replace(/_/g, " ");
}

function pill(s) {
  return el("span", { class: "pill s-" + s, text: stateLabel(s) });
}

function show(node, on) {
  node.hidden = !on;
}

// ---- the API --------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, opts = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + state.key }, opts.headers || {});
  let body = opts.body;
  if (body !== undefined && typeof body !== "string") {
    body = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  const res = await fetch(path, { method: opts.method || "GET", headers, body, signal: opts.signal });
  if (!res.ok) {
    let message = res.status + " " + res.statusText;
    try {
      const data = await res.json();
      message = data.detail || (data.error && data.error.message) || message;
      if (typeof message !== "string") message = JSON.stringify(message);
    } catch (_) {
      /* not JSON: keep the status line */
    }
    if (res.status === 401) signOut(message);
    throw new ApiError(res.status, message);
  }
  return opts.raw ? res : res.json();
}

function setLive(ok, text) {
  $("conn").classList.toggle("down", !ok);
  setText($("conn-text"), text);
}

// ---- sign in --------------------------------------------------------------------------

async function signIn(key) {
  state.key = key;
  const summary = await api("/v1/dashboard/summary"); // throws on a bad key
  localStorage.setItem(KEY_STORAGE, key);
  show($("signin"), false);
  show($("app"), true);
  show($("who"), true);
  fillForm(summary);
  renderSummary(summary);
  startPolling();
}

function signOut(message) {
  stopPolling();
  stopFollow();
  localStorage.removeItem(KEY_STORAGE);
  state.key = "";
  state.jobs.clear();
  state.rows.clear();
  $("jobs").tBodies[0].replaceChildren();
  selectJob(null);
  show($("app"), false);
  show($("who"), false);
  show($("signin"), true);
  const err = $("key-error");
  setText(err, message || "");
  show(err, Boolean(message));
  $("api-key").value = "";
  $("api-key").focus();
}

// ---- the submit form -------------------------------------------------------------------

function options(select, values, selected, label = (v) => v) {
  const keep = Array.from(select.options).filter((o) => o.value === "");
  select.replaceChildren(...keep);
  for (const v of values) {
    select.append(el("option", { value: v, selected: v === selected, text: label(v) }));
  }
}

function fillForm(summary) {
  if (state.optionsLoaded) return;
  const f = summary.form;
  options($("resolution"), f.resolutions, "720p");
  options($("aspect"), f.aspect_ratios, "16:9");
  options($("quality"), f.qualities, null, (q) => q[0].toUpperCase() + q.slice(1));
  options($("policy"), f.policies, "cheapest");
  const select = $("offering");
  const byModel = new Map();
  for (const o of summary.offerings) {
    if (!byModel.has(o.model_name)) byModel.set(o.model_name, []);
    byModel.get(o.model_name).push(o);
  }
  for (const [name, offs] of byModel) {
    const group = el("optgroup", { label: name });
    for (const o of offs) group.append(el("option", { value: o.id, text: o.id + " · " + o.provider }));
    select.append(group);
  }
  state.optionsLoaded = true;
}

async function submitJob(ev) {
  ev.preventDefault();
  const err = $("form-error");
  show(err, false);
  const prompt = $("prompt").value.trim();
  const duration = Number($("duration").value);
  if (!prompt) return formError("Describe the video to generate.");
  if (!(duration > 0 && duration <= 120)) return formError("Duration is 1 to 120 seconds.");
  const request = {
    prompt,
    duration_s: duration,
    resolution: $("resolution").value,
    aspect_ratio: $("aspect").value,
    audio: $("audio").checked ? "required" : "none",
  };
  if ($("quality").value) request.quality = $("quality").value;
  const body = { request, policy: $("policy").value };
  if ($("offering").value) body.offerings = [$("offering").value];
  const button = $("submit-job");
  button.disabled = true;
  setText(button, "Submitting…");
  try {
    const job = await api("/v1/jobs", {
      method: "POST",
      body,
      headers: { "Idempotency-Key": crypto.randomUUID ? crypto.randomUUID() : String(Math.random()) },
    });
    state.jobs.set(job.id, job);
    renderJobs([job, ...Array.from(state.jobs.values()).filter((j) => j.id !== job.id)]);
    selectJob(job.id);
    refreshSummary();
  } catch (e) {
    formError(e.message);
  } finally {
    button.disabled = false;
    setText(button, "Generate");
  }
}

function formError(message) {
  setText($("form-error"), message);
  show($("form-error"), true);
}

// ---- polling --------------------------------------------------------------------------

function loop(fn, everyMs) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try {
      await fn();
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) setLive(false, "reconnecting");
    }
    if (!stopped) timer = setTimeout(tick, document.hidden ? Math.max(everyMs, HIDDEN_EVERY_MS) : everyMs);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function startPolling() {
  stopPolling();
  state.timers.push(loop(refreshJobs, JOBS_EVERY_MS), loop(refreshSummary, SUMMARY_EVERY_MS));
}

function stopPolling() {
  for (const stop of state.timers) stop();
  state.timers = [];
}

async function refreshJobs() {
  const data = await api("/v1/jobs?limit=50");
  setLive(true, "live");
  renderJobs(data.data);
}

async function refreshSummary() {
  const summary = await api("/v1/dashboard/summary?offerings=false");
  renderSummary(summary);
}

// ---- the jobs table --------------------------------------------------------------------

function renderJobs(jobs) {
  const tbody = $("jobs").tBodies[0];
  const seen = new Set();
  let previous = null;
  for (const job of jobs) {
    seen.add(job.id);
    const before = state.jobs.get(job.id);
    // the selected job's stream may be ahead of the poll: keep the newer one
    const current = before && before.updated_at > job.updated_at ? before : job;
    state.jobs.set(job.id, current);
    const row = state.rows.get(job.id) || makeRow(job.id);
    updateRow(row, current);
    const want = previous ? previous.nextSibling : tbody.firstChild;
    if (want !== row.tr) tbody.insertBefore(row.tr, want);
    previous = row.tr;
    if (job.id === state.selected) renderDetails(current);
  }
  for (const [id, row] of state.rows) {
    if (!seen.has(id)) {
      row.tr.remove();
      state.rows.delete(id);
      state.jobs.delete(id);
    }
  }
  show($("jobs-empty"), jobs.length === 0);
  show($("jobs"), jobs.length > 0);
  const n = jobs.length;
  setText($("jobs-meta"), n === 0 ? "" : n >= 50 ? n + " most recent" : n === 1 ? "1 job" : n + " jobs");
}

function makeRow(id) {
  const cells = {
    job: el("td", { class: "job-cell" }),
    state: el("td"),
    progress: el("td", { class: "progress-col" }),
    offering: el("td", { class: "mono small offering" }),
    cost: el("td", { class: "num" }),
    attempts: el("td", { class: "num" }),
    created: el("td", { class: "num muted small" }),
  };
  const tr = el("tr", { tabindex: 0, role: "button", dataset: { jobId: id } }, ...Object.values(cells));
  tr.addEventListener("click", () => selectJob(id));
  tr.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      selectJob(id);
    }
  });
  cells.job.append(el("span", { class: "mono small id" }), el("span", { class: "prompt-cell" }));
  cells.state.append(el("span", { class: "pill" }));
  cells.progress.append(el("div", { class: "bar" }, el("span")));
  const row = { tr, cells, key: "" };
  state.rows.set(id, row);
  return row;
}

function progressOf(job) {
  if (job.state === "succeeded") return 1;
  if (typeof job.progress === "number") return Math.max(0, Math.min(1, job.progress));
  return null;
}

function updateRow(row, job) {
  const key = [job.state, job.progress, job.cost_usd, job.attempts.length, job.offering_id, job.created_at].join("|");
  setText(row.cells.created, ago(job.created_at)); // ages every refresh
  row.tr.classList.toggle("selected", job.id === state.selected);
  if (row.key === key) return;
  row.key = key;
  row.tr.dataset.state = job.state;
  const [idSpan, promptSpan] = row.cells.job.children;
  setText(idSpan, job.id.replace(/^job_/, "").slice(0, 8));
  setText(promptSpan, truncate(job.request.prompt, 80));
  promptSpan.title = job.request.prompt;
  const p = row.cells.state.firstChild;
  p.className = "pill s-" + job.state;
  setText(p, stateLabel(job.state));
  const bar = row.cells.progress.firstChild;
  const frac = progressOf(job);
  bar.className = "bar" + (frac === null && !TERMINAL.has(job.state) ? " indeterminate" : "") +
    (FAILED.includes(job.state) ? " bad" : job.state === "succeeded" ? " ok" : "");
  bar.firstChild.style.width = frac === null ? (TERMINAL.has(job.state) ? "100%" : "") : frac * 100 + "%";
  bar.title = frac === null ? stateLabel(job.state) : Math.round(frac * 100) + "%";
  setText(row.cells.offering, job.offering_id || "—");
  const cost = row.cells.cost;
  if (job.cost_usd !== null && job.cost_usd !== undefined) {
    setText(cost, money(job.cost_usd));
    cost.title = "billed";
    cost.classList.remove("muted");
  } else if (TERMINAL.has(job.state)) {
    setText(cost, "—");
    cost.title = "not billed";
    cost.classList.add("muted");
  } else {
    setText(cost, job.estimated_cost_usd !== null ? "~" + money(job.estimated_cost_usd) : "—");
    cost.title = "estimate";
    cost.classList.add("muted");
  }
  setText(row.cells.attempts, job.attempts.length);
}

// ---- the selected job ------------------------------------------------------------------

function selectJob(id) {
  if (state.selected === id && id !== null) return;
  state.selected = id;
  for (const [rid, row] of state.rows) row.tr.classList.toggle("selected", rid === id);
  stopFollow();
  clearVideo();
  if (id === null) {
    show($("details"), false);
    return;
  }
  const job = state.jobs.get(id);
  if (job) renderDetails(job);
  show($("details"), true);
  if (!job || !TERMINAL.has(job.state)) followJob(id);
}

function stopFollow() {
  if (state.follow) state.follow.abort();
  state.follow = null;
}

// Server-sent events through fetch: EventSource cannot send the Authorization header.
async function followJob(id) {
  const ctl = new AbortController();
  state.follow = ctl;
  try {
    const res = await api("/v1/jobs/" + encodeURIComponent(id) + "/events", { raw: true, signal: ctl.signal });
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value.replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const data = block
          .split("\n")
          .filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) onJobEvent(JSON.parse(data));
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") console.warn("event stream ended", e);
  } finally {
    if (state.follow === ctl) state.follow = null;
  }
}

function onJobEvent(job) {
  state.jobs.set(job.id, job);
  const row = state.rows.get(job.id);
  if (row) updateRow(row, job);
  if (job.id === state.selected) renderDetails(job);
}

// Why a job was billed other than as estimated: a delivered clip that differs from what was
// priced, or a provider-reported cost (flagged above the reservation). Data, shown as text.
function billingFlag(billing) {
  const d = billing && billing.delivery;
  if (!d) return null;
  const parts = [];
  if (d.delivered && d.priced) {
    parts.push(`delivered ${seconds(d.delivered.duration_s)} ${d.delivered.resolution}, priced ` +
      `${seconds(d.priced.duration_s)} ${d.priced.resolution}: charged ${money(d.charged_usd)}` +
      (d.uncovered_usd ? ` (${money(d.uncovered_usd)} over the reservation)` : ""));
  }
  if (d.reported) {
    parts.push(`provider reported ${d.reported.amount} ${d.reported.unit}` +
      (d.reported.usd !== null && d.reported.usd !== undefined ? ` (${money(d.reported.usd)})` : "") +
      (d.over_reservation ? ", above the reservation" : ""));
  }
  const inner = d.delivery;
  if (inner && inner.delivered) parts.push(`delivered ${seconds(inner.delivered.duration_s)} ${inner.delivered.resolution}`);
  return parts.length ? { text: parts.join("; "), title: d.reason || "" } : null;
}

function fact(dl, name, value, opts = {}) {
  const cls = [opts.mono ? "mono" : "", opts.warn ? "warn" : ""].join(" ").trim();
  dl.append(el("dt", { text: name }), el("dd", { class: cls || null, title: opts.title }, value));
}

function renderDetails(job) {
  setText($("d-id"), job.id);
  const p = $("d-state");
  p.className = "pill s-" + job.state;
  setText(p, stateLabel(job.state));
  setText($("d-prompt"), job.request.prompt);
  show($("d-cancel"), !TERMINAL.has(job.state));

  const r = job.request;
  const asset = job.assets[0];
  const dl = $("d-facts");
  const facts = el("dl");
  fact(facts, "Offering", job.offering_id || "—", { mono: true });
  fact(facts, "Policy", job.policy);
  fact(facts, "Requested", `${r.duration_s}s · ${r.resolution} · ${r.aspect_ratio}` + (r.audio === "required" ? " · audio" : ""));
  fact(facts, "Estimated", money(job.estimated_cost_usd));
  fact(facts, "Billed", money(job.cost_usd));
  const billingNote = billingFlag(job.billing);
  if (billingNote) fact(facts, "Billing", billingNote.text, { title: billingNote.title, warn: true });
  if (job.finished_at) fact(facts, "Latency", seconds((Date.parse(job.finished_at) - Date.parse(job.created_at)) / 1000));
  if (asset) {
    fact(facts, "Output", `${asset.width}×${asset.height} · ${asset.fps} fps · ${seconds(asset.duration_s)}`);
    fact(facts, "Codec", asset.codec + (asset.has_audio ? " + " + asset.audio_codec : " · no audio"));
    fact(facts, "Size", bytes(asset.bytes));
    fact(facts, "SHA-256", asset.sha256.slice(0, 16) + "…", { mono: true, title: asset.sha256 });
  }
  if (job.synthetic) fact(facts, "Origin", "synthetic (sandbox)");
  dl.replaceChildren(...facts.childNodes);

  const err = $("d-error");
  show(err, Boolean(job.error));
  if (job.error) setText(err, (job.error.code ? job.error.code + ": " : "") + (job.error.message || ""));

  renderRoute(job.route);
  renderAttempts(job.attempts);
  renderQuality(job);

  if (job.state === "succeeded" && job.assets.length) loadVideo(job);
  else if (!state.video.jobId) setText($("player-empty"), playerNote(job));
}

function playerNote(job) {
  if (job.state === "succeeded") return "This job's files were deleted.";
  if (TERMINAL.has(job.state)) return "No video: the job " + stateLabel(job.state) + ".";
  return "The video appears here when the job succeeds.";
}

function renderRoute(route) {
  const tbody = $("route").tBodies[0];
  const rows = [];
  if (route && route.chosen) {
    const cands = [route.chosen, ...(route.runners_up || [])];
    cands.forEach((c, i) => {
      const lat = c.latency_s || {};
      rows.push(
        el("tr", { class: i === 0 ? "chosen" : null },
          el("td", {}, el("span", { class: i === 0 ? "tag ok" : "tag", text: i === 0 ? "chosen" : "#" + (i + 1) })),
          el("td", { class: "mono small", text: c.offering }),
          el("td", { text: c.provider }),
          el("td", { class: "num", text: money(c.estimated_cost_usd) }),
          el("td", { class: "num", text: `${seconds(lat.p50)} / ${seconds(lat.p90)}` }),
          el("td", { text: c.quality ? c.quality.tier : "" }),
        ),
      );
    });
    const n = route.feasible || cands.length;
    const from = (route.estimates_from || []).join(", ");
    const shown = n > cands.length ? ` (top ${cands.length} shown)` : "";
    setText($("route-summary"), `Policy ${route.policy}: ${n} feasible offering${n === 1 ? "" : "s"}${shown}` +
      (from ? `; latency estimates from ${from}` : "") + ".");
  } else {
    setText($("route-summary"), "No route recorded.");
  }
  tbody.replaceChildren(...rows);
  const rejected = (route && route.rejected) || [];
  setText($("rejected-summary"), `Rejected offerings (${rejected.length})`);
  show($("rejected-box"), rejected.length > 0);
  $("rejected").replaceChildren(
    ...rejected.map((x) => el("li", {}, el("span", { class: "mono small", text: x.offering }), " — ", (x.reasons || []).join("; "))),
  );
}

function renderAttempts(attempts) {
  $("attempts").tBodies[0].replaceChildren(
    ...attempts.map((a) =>
      el("tr", {},
        el("td", { text: a.n }),
        el("td", { class: "mono small", text: a.offering_id }),
        el("td", {}, pill(a.state)),
        el("td", { class: "num", text: money(a.estimated_cost_usd) }),
        el("td", { class: "num", text: money(a.cost_usd) }),
        el("td", { class: "small", text: a.error ? (a.error.code || "") + ": " + (a.error.message || "") : "" }),
      ),
    ),
  );
  show($("attempts"), attempts.length > 0);
}

// ---- the quality panel -------------------------------------------------------------------

// Each stage's checks (name, value, threshold, verdict), and under a check that flagged
// frames, a strip of those frames: thumbnails the server cuts from the stored video, fetched
// with the key (an <img src> cannot send it) and kept per job and timestamp.
const MAX_THUMBS = 12;
const thumbCache = new Map(); // "job@t" -> Promise of an object URL

function checkValue(v, unit) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") {
    const n = Number.isInteger(v) ? String(v) : v.toFixed(Math.abs(v) < 1 ? 3 : 2);
    return unit && unit !== "/10" ? n + " " + unit : unit === "/10" ? n + "/10" : n;
  }
  return String(v);
}

function verdictTag(v) {
  const cls = v === "pass" ? "tag ok" : v === "fail" ? "tag bad" : "tag";
  return el("span", { class: cls, text: v });
}

function thumbUrl(jobId, t) {
  const k = jobId + "@" + t;
  if (!thumbCache.has(k)) {
    const path = "/v1/dashboard/jobs/" + encodeURIComponent(jobId) + "/frames?t=" + encodeURIComponent(t);
    const p = api(path, { raw: true }).then((r) => r.blob()).then((b) => URL.createObjectURL(b));
    p.catch(() => thumbCache.delete(k)); // try again on the next render
    thumbCache.set(k, p);
  }
  return thumbCache.get(k);
}

function thumbStrip(jobId, check) {
  const strip = el("div", { class: "thumbs", "data-check": check.name });
  for (const t of check.frames_s.slice(0, MAX_THUMBS)) {
    const img = el("img", { alt: `${check.name} at ${t.toFixed(2)} s`, title: `${t.toFixed(2)} s`, "data-t": t });
    strip.append(el("figure", {}, img, el("figcaption", { text: seconds(t) })));
    thumbUrl(jobId, t).then((url) => { img.src = url; }, () => img.classList.add("broken"));
  }
  if (check.frames_s.length > MAX_THUMBS) {
    strip.append(el("span", { class: "muted small", text: `+${check.frames_s.length - MAX_THUMBS} more` }));
  }
  return strip;
}

function renderQuality(job) {
  const box = $("quality-box");
  const stages = job.stages || {};
  const sig = JSON.stringify([job.id, stages, job.quality]);
  if (box.dataset.sig === sig) return; // unchanged: keep the strip's loaded images
  const rows = [];
  for (const [stage, result] of Object.entries(stages)) {
    for (const c of result.checks || []) {
      rows.push(
        el("tr", { class: "check v-" + c.verdict, "data-check": c.name },
          el("td", { text: stage }),
          el("td", { class: "mono small", text: c.name }),
          el("td", { class: "num", text: checkValue(c.value, c.unit) }),
          el("td", { class: "num", text: checkValue(c.threshold, c.unit) }),
          el("td", {}, verdictTag(c.verdict)),
          el("td", { class: "small", text: c.detail || "" }),
        ),
      );
      if ((c.frames_s || []).length) {
        rows.push(el("tr", { class: "strip" }, el("td", { colspan: 6 }, thumbStrip(job.id, c))));
      }
    }
  }
  $("quality-checks").tBodies[0].replaceChildren(...rows);
  const q = job.quality;
  const parts = [];
  if (q) {
    parts.push("Gate: " + q.verdict + (q.score !== null && q.score !== undefined ? ` · score ${Number(q.score).toFixed(1)}/10` : ""));
    if (q.regenerations) parts.push(`${q.regenerations} regeneration${q.regenerations === 1 ? "" : "s"}`);
  }
  for (const [stage, result] of Object.entries(stages)) {
    const score = result.score !== null && result.score !== undefined ? ` ${Number(result.score).toFixed(1)}/10` : "";
    const cost = result.cost_usd ? ` (${money(result.cost_usd)})` : "";
    parts.push(`${stage}: ${result.verdict}${score}${cost}`);
  }
  setText($("quality-summary"), parts.join(" · "));
  show(box, rows.length > 0 || Boolean(q));
  box.dataset.sig = sig; // set last: a render that threw is tried again
}

// ---- the player -------------------------------------------------------------------------

// <video src> cannot carry the Authorization header, so the file is fetched and played
// from an object URL.
async function loadVideo(job) {
  if (state.video.jobId === job.id) return;
  clearVideo();
  state.video.jobId = job.id;
  const empty = $("player-empty");
  setText(empty, "Loading video…");
  try {
    const res = await api("/v1/jobs/" + encodeURIComponent(job.id) + "/content", { raw: true });
    const blob = await res.blob();
    if (state.video.jobId !== job.id) return; // the user moved on meanwhile
    const url = URL.createObjectURL(blob);
    state.video.url = url;
    const video = $("video");
    video.src = url;
    show(video, true);
    show(empty, false);
    const a = $("d-download");
    a.href = url;
    a.setAttribute("download", job.id + ".mp4");
    show(a, true);
  } catch (e) {
    if (state.video.jobId === job.id) {
      state.video.jobId = null;
      setText(empty, "Could not load the video: " + e.message);
    }
  }
}

function clearVideo() {
  const video = $("video");
  video.pause();
  video.removeAttribute("src");
  video.load();
  show(video, false);
  if (state.video.url) URL.revokeObjectURL(state.video.url);
  state.video = { jobId: null, url: null };
  setText($("player-empty"), "The video appears here when the job succeeds.");
  show($("player-empty"), true);
  show($("d-download"), false);
}

async function cancelSelected() {
  const id = state.selected;
  if (!id) return;
  const b = $("d-cancel");
  b.disabled = true;
  try {
    onJobEvent(await api("/v1/jobs/" + encodeURIComponent(id) + "/cancel", { method: "POST" }));
  } catch (e) {
    setText($("d-error"), e.message);
    show($("d-error"), true);
  } finally {
    b.disabled = false;
  }
}

// ---- summary: tiles, cost, health ---------------------------------------------------------

const HEALTH_TEXT = { closed: "healthy", half_open: "probing", open: "circuit open" };

function renderSummary(s) {
  state.summary = s;
  setText($("tenant-name"), s.tenant);
  show($("sandbox-badge"), s.sandbox);
  const by = s.jobs.by_state;
  setText($("t-active"), s.jobs.active);
  setText($("t-succeeded"), by.succeeded || 0);
  setText($("t-failed"), FAILED.reduce((n, k) => n + (by[k] || 0), 0));
  for (const id of ["t-active-sub", "t-succeeded-sub", "t-failed-sub"]) setText($(id), s.admin ? "all tenants" : "");
  setText($("t-spend-label"), "Spend");
  setText($("t-spend"), money(s.cost.total_usd));
  const own = s.cost.by_tenant.find((t) => t.tenant === s.tenant);
  const budget = s.admin
    ? "all tenants"
    : own && own.budget_usd !== null ? `of ${money(own.budget_usd)} budget` : "";
  setText($("t-budget"), budget);

  const offs = s.cost.by_offering;
  $("cost-offering").tBodies[0].replaceChildren(
    ...offs.map((o) =>
      el("tr", {},
        el("td", { class: "mono small", text: o.offering, title: `${o.clips} clip(s)` }),
        el("td", { class: "num", text: money(o.usd) }),
        el("td", { class: "num", text: money(o.estimated_usd || 0) }),
        // what the provider itself reported charging, where it reports it
        el("td", {
          class: "num" + (o.over_reservation ? " warn" : ""),
          text: o.reported_clips ? money(o.reported_usd) : "—",
          title: o.reported_clips
            ? `${o.reported_clips} clip(s) reported by the provider` +
              (o.over_reservation ? `; ${o.over_reservation} above the reservation` : "")
            : "the provider reports no cost: charged from the delivered clip",
        }),
      ),
    ),
  );
  show($("cost-offering"), offs.length > 0);
  show($("cost-offering-empty"), offs.length === 0);

  show($("tenant-card"), s.admin);
  if (s.admin) {
    $("cost-tenant").tBodies[0].replaceChildren(
      ...s.cost.by_tenant.map((t) =>
        el("tr", {},
          el("td", { text: t.tenant }),
          el("td", { class: "num", text: t.clips }),
          el("td", { class: "num", text: money(t.spent_usd) }),
          el("td", { class: "num muted", text: t.budget_usd === null ? "none" : money(t.budget_usd) }),
        ),
      ),
    );
  }

  const providers = s.health.providers;
  $("health").replaceChildren(
    ...providers.map((p) =>
      el("li", { class: "h-" + p.state + (p.observed ? "" : " unobserved"), dataset: { provider: p.provider } },
        el("span", { class: "dot", "aria-hidden": "true" }),
        el("span", { class: "name", text: p.provider }),
        el("span", {
          class: "state",
          text: p.observed ? HEALTH_TEXT[p.state] || p.state : "idle",
          title: p.offerings_not_closed.length
            ? "not closed: " + p.offerings_not_closed.join(", ")
            : p.observed ? null : "no calls yet",
        }),
      ),
    ),
  );
  const bad = providers.filter((p) => p.state !== "closed").length;
  const offBad = Object.values(s.health.offerings).filter((v) => v !== "closed").length;
  setText($("health-note"), bad || offBad
    ? `${bad} provider breaker${bad === 1 ? "" : "s"} and ${offBad} offering breaker${offBad === 1 ? "" : "s"} not closed.`
    : "All circuit breakers closed.");
}

// ---- start --------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return;
    const b = $("key-submit");
    b.disabled = true;
    show($("key-error"), false);
    try {
      await signIn(key);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) {
        // signOut() already showed a 401; anything else is shown here
        setText($("key-error"), e.message);
        show($("key-error"), true);
      }
    } finally {
      b.disabled = false;
    }
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("job-form").addEventListener("submit", submitJob);
  $("d-cancel").addEventListener("click", cancelSelected);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.key && state.timers.length) startPolling();
  });
  if (state.key) {
    signIn(state.key).catch((e) => {
      if (!(e instanceof ApiError && e.status === 401)) {
        show($("signin"), true);
        setText($("key-error"), e.message);
        show($("key-error"), true);
      }
    });
  } else {
    show($("signin"), true);
  }
});
