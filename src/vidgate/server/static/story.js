// vidgate story view: stories of this key's tenant, one story's shots as a strip (each shot's
// file once it is made), the film in a player. Files are fetched with the key and played from
// object URLs (<video src> cannot send the Authorization header). Text from the server is
// always set as text, never as markup.
"use strict";

const KEY_STORAGE = "vidgate.apiKey";
const TERMINAL = new Set(["succeeded", "failed", "canceled", "expired"]);
const state = { key: localStorage.getItem(KEY_STORAGE) || "", selected: null, urls: {}, timer: null };

const $ = (id) => document.getElementById(id);
const show = (el, on) => { el.hidden = !on; };
const text = (el, value) => { el.textContent = value; };

async function api(path, opts = {}) {
  const res = await fetch(path, {
    method: opts.method || "GET",
    headers: { Authorization: "Bearer " + state.key },
  });
  if (!res.ok) {
    let msg = res.status + " " + res.statusText;
    try { const body = await res.json(); msg = body.detail || body.title || msg; } catch (_) { /* not JSON */ }
    const err = new Error(msg);
    err.status = res.status;
    throw err;
  }
  return opts.raw ? res : res.json();
}

async function objectUrl(path) {
  if (state.urls[path]) return state.urls[path];
  const res = await api(path, { raw: true });
  const url = URL.createObjectURL(await res.blob());
  state.urls[path] = url;
  return url;
}

async function loadList() {
  const list = await api("/v1/stories");
  const ul = $("stories");
  ul.replaceChildren();
  for (const s of list.data) {
    const li = document.createElement("li");
    li.dataset.storyId = s.id;
    li.dataset.state = s.state;
    li.setAttribute("aria-selected", String(s.id === state.selected));
    text(li, s.title + " — " + s.state);
    li.addEventListener("click", () => select(s.id));
    ul.appendChild(li);
  }
  show($("stories-empty"), list.data.length === 0);
  if (!state.selected && list.data.length) select(list.data[0].id);
}

function select(id) {
  state.selected = id;
  history.replaceState(null, "", "?id=" + encodeURIComponent(id));
  for (const li of $("stories").children) li.setAttribute("aria-selected", String(li.dataset.storyId === id));
  refresh();
}

function shotCard(story, shot) {
  const li = document.createElement("li");
  li.className = "shot";
  li.dataset.shot = String(shot.shot + 1);
  li.dataset.state = shot.state;
  const head = document.createElement("strong");
  text(head, "Shot " + (shot.shot + 1) + " · " + shot.duration_s + "s");
  const bar = document.createElement("div");
  bar.className = "bar";
  const fill = document.createElement("span");
  fill.style.width = Math.round(100 * (shot.progress || 0)) + "%";
  bar.appendChild(fill);
  const meta = document.createElement("div");
  meta.className = "meta";
  const notes = [shot.state, shot.offering];
  if (shot.segments.length > 1) notes.push(shot.segments.length + " segments (" + shot.chain + ")");
  if (shot.switched_because) notes.push("switched: " + shot.switched_because);
  const q = shot.quality;
  if (q) {
    li.dataset.quality = q.verdict;
    notes.push("quality " + q.verdict + (q.score != null ? " " + Number(q.score).toFixed(1) : "") +
      (q.failed.length ? " (" + q.failed.join(", ") + ")" : ""));
  }
  text(meta, notes.join(" · "));
  li.append(head, bar, meta);
  if (shot.has_file) {
    const video = document.createElement("video");
    video.muted = true;
    video.controls = true;
    video.preload = "metadata";
    li.insertBefore(video, bar);
    objectUrl("/v1/stories/" + encodeURIComponent(story.id) + "/shots/" + (shot.shot + 1) + "/content")
      .then((url) => { video.src = url; })
      .catch(() => { /* the card still shows the state */ });
  }
  return li;
}

async function refresh() {
  clearTimeout(state.timer);
  const id = state.selected;
  if (!id) return;
  let story;
  try {
    story = await api("/v1/stories/" + encodeURIComponent(id));
  } catch (e) {
    text($("s-error"), e.message);
    show($("s-error"), true);
    return;
  }
  if (state.selected !== id) return;
  show($("story"), true);
  text($("s-title"), story.title);
  const st = $("s-state");
  text(st, story.state);
  st.dataset.state = story.state;
  const p = story.plan;
  text($("s-summary"), `${p.shots} shots · ${p.film_s}s · est. $${Number(p.estimated_cost_usd).toFixed(2)}` +
    (story.record ? ` · cost $${Number(story.record.cost_usd).toFixed(2)}` : ""));
  show($("s-error"), Boolean(story.error));
  text($("s-error"), story.error ? story.error.message : "");
  $("strip").replaceChildren(...story.shots.map((s) => shotCard(story, s)));
  const video = $("film");
  if (story.state === "succeeded" && story.film) {
    const url = await objectUrl("/v1/stories/" + encodeURIComponent(id) + "/content");
    if (video.src !== url) video.src = url;
    show(video, true);
    show($("film-empty"), false);
    text($("film-info"), `${story.film.duration_s.toFixed(2)}s · ${story.film.width}×${story.film.height} @ ${story.film.fps} fps`);
    show($("film-info"), true);
  } else {
    show(video, false);
    show($("film-empty"), true);
    show($("film-info"), false);
  }
  show($("s-cancel"), !TERMINAL.has(story.state));
  if (!TERMINAL.has(story.state)) state.timer = setTimeout(refresh, 1000);
  else loadList().catch(() => {});
}

async function start() {
  show($("signin"), !state.key);
  show($("app"), Boolean(state.key));
  if (!state.key) return;
  const wanted = new URLSearchParams(location.search).get("id");
  if (wanted) state.selected = wanted;
  try {
    await loadList();
    if (wanted) refresh();
  } catch (e) {
    if (e.status === 401) {
      localStorage.removeItem(KEY_STORAGE);
      state.key = "";
      start();
    }
  }
}

$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.key = $("api-key").value.trim();
  localStorage.setItem(KEY_STORAGE, state.key);
  start();
});
$("s-cancel").addEventListener("click", async () => {
  if (state.selected) await api("/v1/stories/" + encodeURIComponent(state.selected) + "/cancel", { method: "POST" });
  refresh();
});
start();
