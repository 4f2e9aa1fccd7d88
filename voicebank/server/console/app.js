// voicebank console: a thin client of the HTTP API. Every action is one API call; every decision,
// check and message comes from the server. The API key lives in sessionStorage (this tab only).
"use strict";

const KEY = "voicebank.key";
const $ = (id) => document.getElementById(id);
const state = { role: null, name: null, speakers: [], thresholds: null, auditOffset: 0, notice: null };

// -- DOM and HTTP helpers --------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}
const fixed = (x, n = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(n));
const pct = (x) => {
  if (x === null || x === undefined) return "–";
  const v = 100 * x;
  return `${v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toPrecision(2)}%`;
};
const when = (iso) => (iso ? iso.replace("T", " ").slice(0, 19) : "");
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

// Each cell names its column (data-label): at a phone's width a table is drawn as one card per
// row, every column labelled, where five or more columns side by side would not fit.
function labelled(body) {
  const heads = [...body.closest("table").querySelectorAll("thead th")].map((th) => th.textContent);
  for (const row of body.rows) [...row.cells].forEach((td, i) => { td.dataset.label = heads[i] || ""; });
  return body;
}

function flash(message, ok = false) {
  const el = $("flash");
  el.textContent = message;
  el.className = ok ? "ok" : "";
  el.hidden = !message;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const key = sessionStorage.getItem(KEY);
  const response = await fetch(path, { method, body, headers: key ? { Authorization: `Bearer ${key}` } : {} });
  const data = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) {
    if (response.status === 401 && path !== "me") signOut(data.error);
    throw new ApiError(response.status, data.error || `HTTP ${response.status}`);
  }
  return data;
}

function form(fields, files = []) {
  const body = new FormData();
  for (const [k, v] of Object.entries(fields)) if (v !== null && v !== undefined && v !== "") body.append(k, v);
  for (const [field, blob, name] of files) body.append(field, blob, name);
  return body;
}

// -- microphone: Web Audio at the device rate, sent as 16-bit PCM WAV --------------------------
function wav(chunks, rate) {
  const n = chunks.reduce((s, c) => s + c.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * n));
  const text = (at, s) => [...s].forEach((ch, i) => view.setUint8(at + i, ch.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); text(8, "WAVE"); text(12, "fmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, 2 * n, true);
  let at = 44;
  for (const chunk of chunks) for (const x of chunk) {
    const s = Math.max(-1, Math.min(1, x));
    view.setInt16(at, s < 0 ? s * 0x8000 : s * 0x7fff, true);
    at += 2;
  }
  return new Blob([view], { type: "audio/wav" });
}

// A record/stop button with a live level meter. onStop(blob) gets the take; partial() the take so far.
function recorder(container, onStop, onTick) {
  const button = h("button", { type: "button", class: "record" }, "Record");
  const fill = h("div");
  const status = h("span", { class: "rec-status" });
  container.replaceChildren(button, h("div", { class: "meter", title: "input level" }, fill), status);
  let live = null;
  const partial = () => (live ? wav(live.chunks, live.ctx.sampleRate) : null);

  async function start() {
    const stream = await navigator.mediaDevices.getUserMedia(
      { audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 } });
    const ctx = new AudioContext();
    const source = ctx.createMediaStreamSource(stream);
    const node = ctx.createScriptProcessor(4096, 1, 1);
    live = { stream, ctx, node, chunks: [], started: Date.now() };
    node.onaudioprocess = (e) => {
      const data = e.inputBuffer.getChannelData(0);
      live.chunks.push(new Float32Array(data));
      let peak = 0;
      for (const x of data) peak = Math.max(peak, Math.abs(x));
      fill.style.width = `${Math.min(100, 100 * Math.sqrt(peak))}%`;  // sqrt: quiet speech still shows
    };
    source.connect(node);
    node.connect(ctx.destination);  // a processor runs only when connected; it outputs silence
    button.textContent = "Stop";
    status.className = "recording";
    status.textContent = "recording 0 s";
    let ticks = 0;
    live.timer = setInterval(() => {
      status.textContent = `recording ${((Date.now() - live.started) / 1000).toFixed(0)} s`;
      if (onTick && ++ticks % 2 === 0) onTick(partial);  // every 2 s: each check embeds every take again
    }, 1000);
  }

  async function stop() {
    const take = partial();
    clearInterval(live.timer);
    live.stream.getTracks().forEach((t) => t.stop());
    live.node.disconnect();
    await live.ctx.close();
    live = null;
    fill.style.width = "0";
    button.textContent = "Record";
    status.className = "";
    status.textContent = "";
    onStop(take);
  }

  button.addEventListener("click", () => {
    (live ? stop() : start()).catch((e) => flash(`Microphone: ${e.message}`));
  });
}

// -- sign in, roles, routing -----------------------------------------------------------------
async function signIn(key) {
  sessionStorage.setItem(KEY, key);
  try {
    const me = await api("GET", "me");
    state.role = me.role;
    state.name = me.name;
  } catch (e) {
    signOut(e.message);
    return;
  }
  $("who").textContent = `${state.name} (${state.role})`;
  $("nav").hidden = false;
  document.querySelectorAll("[data-admin]").forEach((el) => { el.hidden = state.role !== "admin"; });
  flash("");
  if (!location.hash || location.hash === "#signin") location.hash = "#speakers";
  else route();
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  state.role = null;
  $("nav").hidden = true;
  $("who").textContent = "";
  show("signin");
  flash(message || "");
}

function show(view) {
  document.querySelectorAll(".view").forEach((el) => { el.hidden = el.id !== `view-${view}`; });
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.hash === `#${view}`));
}

const ADMIN_VIEWS = new Set(["enroll", "audit"]);
const VIEWS = { speakers: renderSpeakers, speaker: renderSpeaker, enroll: renderEnroll, identify: renderIdentify,
  verify: renderVerify, audit: renderAudit, calibration: renderCalibration };

function route() {
  if (!state.role) return show("signin");
  const [view, ...rest] = location.hash.slice(1).split("/");
  const render = VIEWS[view] || VIEWS.speakers;
  const name = VIEWS[view] ? view : "speakers";
  if (ADMIN_VIEWS.has(name) && state.role !== "admin") {
    show("none");  // no page: the server would refuse its calls anyway
    return flash(`The ${name} page needs an admin key; this is a ${state.role} key.`);
  }
  let arg;
  try {
    arg = decodeURIComponent(rest.join("/"));
  } catch (e) {  // a malformed % escape (typed, or a link cut short): there is no page to guess at
    show("none");
    return flash(`No such page: the address ${location.hash} has a malformed % escape. Open the page from the menu.`);
  }
  flash(state.notice || "", Boolean(state.notice));
  state.notice = null;
  show(name);
  render(arg).catch((e) => {
    if (e.status === 404) show("none");  // not the page of the speaker shown before
    flash(e.message);
  });
}

// -- speakers --------------------------------------------------------------------------------
async function renderSpeakers() {
  state.speakers = await api("GET", "speakers");
  drawSpeakers();
}

function drawSpeakers() {
  const q = $("speaker-search").value.trim().toLowerCase();
  const shown = state.speakers.filter((s) => !q || s.name.toLowerCase().includes(q)
    || JSON.stringify(s.metadata).toLowerCase().includes(q));
  $("speaker-rows").replaceChildren(...shown.map((s) => h("tr", {},
    h("td", {}, h("a", { href: `#speaker/${encodeURIComponent(s.name)}` }, s.name)),
    h("td", {}, Object.entries(s.metadata).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join(", ")),
    h("td", {}, s.recordings.length), h("td", {}, `${fixed(s.speech_s, 1)} s`), h("td", {}, when(s.created_at)))));
  labelled($("speaker-rows"));
  $("speaker-count").textContent = `${shown.length} of ${state.speakers.length} speakers`;
}

// A browser reads a path segment "." or ".." as this folder or the one above (even written %2E), so
// speakers/. would ask for the list and speakers/.. for the console: such a name (and none) is found
// in the list, which holds the same speakers.
const inPath = (name) => name !== "" && name !== "." && name !== "..";

async function speakerNamed(name) {
  if (inPath(name)) return api("GET", `speakers/${encodeURIComponent(name)}`);
  const found = (await api("GET", "speakers")).find((s) => s.name === name);
  if (!found) throw new ApiError(404, `no speaker named '${name}' is enrolled (\`voicebank list\` shows who is).`);
  return found;
}

async function renderSpeaker(name) {
  const s = await speakerNamed(name);
  drawSpeaker(s);
  $("add-result").replaceChildren();
  recorder($("add-recorder"), (blob) => addRecordings(s.name, [[blob, `microphone-${when(new Date().toISOString())}.wav`]]));
  $("add-files").onchange = (e) => { addRecordings(s.name, [...e.target.files].map((f) => [f, f.name])); e.target.value = ""; };
  $("remove-speaker").onclick = async () => {
    if (!inPath(s.name)) {
      return flash(`A browser cannot send the name "${s.name}" in a web address (it reads it as a folder): remove `
        + `this speaker with voicebank remove ${s.name}`);
    }
    if (!confirm(`Remove ${s.name} and every recording of their voice? This cannot be undone.`)) return;
    try {
      await api("DELETE", `speakers/${encodeURIComponent(s.name)}`);
      state.notice = `Removed ${s.name}.`;  // shown by the route to the list
      location.hash = "#speakers";
    } catch (e) { flash(e.message); }
  };
}

function drawSpeaker(s) {
  $("speaker-name").textContent = s.name;
  const facts = [["Metadata", JSON.stringify(s.metadata)], ["Speech", `${fixed(s.speech_s, 1)} s`],
    ["Enrolled", when(s.created_at)], ["Updated", when(s.updated_at)]];
  $("speaker-facts").replaceChildren(...facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  $("speaker-recordings").replaceChildren(...s.recordings.map((r) => h("tr", {}, h("td", {}, r.label),
    h("td", {}, `${fixed(r.duration_s, 1)} s`), h("td", {}, `${fixed(r.speech_s, 1)} s`), h("td", {}, when(r.created_at)))));
  labelled($("speaker-recordings"));
}

// More takes of an enrolled voice (POST /speakers/{name}/recordings): the server checks each as
// enrollment does, stores all or none, and computes the voiceprint again from every recording.
async function addRecordings(name, files) {
  if (!inPath(name)) {
    return flash(`A browser cannot send the name "${name}" in a web address (it reads it as a folder): add `
      + `recordings with voicebank add ${name} FILE...`);
  }
  const out = $("add-result");
  out.replaceChildren(h("p", {}, "Checking and adding…"));
  try {
    const s = await api("POST", `speakers/${encodeURIComponent(name)}/recordings`, form({}, files.map(([blob, label]) => ["files", blob, label])));
    drawSpeaker(s);
    out.replaceChildren(h("p", { class: "decision yes" }, `Added ${plural(files.length, "recording")} to ${s.name}: `
      + `${plural(s.recordings.length, "recording")}, ${fixed(s.speech_s, 1)} s of speech in all.`),
    ...s.warnings.map((w) => h("p", { class: "problem" }, w)));
  } catch (e) { out.replaceChildren(h("p", { class: "problem" }, e.message)); }
}

// -- enroll: takes checked by the server as they come ----------------------------------------
const takes = [];  // {blob, label, check}
let checking = null;
let needed = null;

function renderEnroll() {
  recorder($("enroll-recorder"), (blob) => addTakes([[blob, `take-${takes.length + 1}.wav`]]), liveCount);
  drawTakes();
  return Promise.resolve();
}

function addTakes(items) {
  for (const [blob, label] of items) takes.push({ blob, label, check: null });
  drawTakes();
  runCheck();
}

async function check(extra) {
  const files = takes.map((t) => ["files", t.blob, t.label]);
  if (extra) files.push(["files", extra, "recording.wav"]);
  return api("POST", "check", form({}, files));
}

async function runCheck() {
  if (!takes.length) return drawTakes();
  const pending = check();
  checking = pending;
  try {
    const result = await pending;
    if (checking !== pending) return;  // a newer check supersedes this one
    result.recordings.forEach((r, i) => { if (takes[i]) takes[i].check = r; });
    drawTakes(result);
  } catch (e) { flash(e.message); } finally { if (checking === pending) checking = null; }
}

let liveBusy = false;
async function liveCount(partial) {  // while recording: the speech heard so far, every few seconds
  if (liveBusy || checking) return;
  const blob = partial();
  if (!blob || blob.size < 48000) return;
  liveBusy = true;
  try { speechCount((await check(blob)).speech_s, true); } catch (e) { /* the take is checked when it stops */ }
  finally { liveBusy = false; }
}

function speechCount(seconds, live) {
  const need = needed || 0;
  $("speech-count").textContent = `${fixed(seconds, 1)} s of speech of ${fixed(need, 1)} s needed${live ? " (recording)" : ""}`;
  $("speech-fill").style.width = `${need ? Math.min(100, (100 * seconds) / need) : 0}%`;
  $("speech-fill").classList.toggle("enough", need > 0 && seconds >= need);
}

function drawTakes(result) {
  if (result) needed = result.needed_s;
  $("takes").replaceChildren(...takes.map((t, i) => {
    const c = t.check;
    const bad = c && !c.usable;
    return h("li", { class: c ? (bad ? "bad" : "ok") : "" },
      h("strong", {}, t.label),
      h("span", {}, c && c.duration_s !== null ? `${fixed(c.duration_s, 1)} s, ${fixed(c.speech_s, 1)} s of speech` : "checking…"),
      h("button", { type: "button", class: "link", onclick: () => { takes.splice(i, 1); runCheck(); } }, "remove"),
      h("span", { class: bad ? "msg bad-msg" : "msg" }, c ? (bad ? c.problems.join(" ") : "usable") : ""));
  }));
  if (!takes.length) { speechCount(0); $("enroll-problems").textContent = ""; }
  if (result) {
    speechCount(result.speech_s);
    $("enroll-problems").textContent = result.warnings.join(" ");
  }
  $("enroll-submit").disabled = !(result && result.ready) || takes.some((t) => !t.check);
}

async function enroll() {
  const name = $("enroll-name").value.trim();
  if (!name) return flash("Give the speaker's name first.");
  $("enroll-submit").disabled = true;
  try {
    const s = await api("POST", "speakers", form({ name, metadata: $("enroll-metadata").value },
      takes.map((t) => ["files", t.blob, t.label])));
    takes.length = 0;
    drawTakes();
    $("enroll-name").value = "";
    $("enroll-metadata").value = "";
    $("enroll-result").replaceChildren(h("p", { class: "decision yes" }, `Enrolled ${s.name}: ${s.recordings.length} `
      + `recordings, ${fixed(s.speech_s, 1)} s of speech.`), ...s.warnings.map((w) => h("p", { class: "problem" }, w)));
  } catch (e) {
    flash(e.message);
    $("enroll-submit").disabled = false;
  }
}

// -- identify and verify ---------------------------------------------------------------------
function meaning(p) {  // what a threshold promises, in words, from its stored operating point
  if (!p) return "";
  if (p.method === "default") return "a starting default, not calibrated: it promises no measured rate.";
  if (p.method === "manual") return "set by hand: it promises no measured rate.";
  if (p.method === "eer") return "calibrated at the equal-error rate.";
  if (p.purpose === "identify" || p.gallery_at_calibration !== undefined) {
    const then = p.gallery_at_calibration !== undefined ? p.gallery_at_calibration : p.gallery;
    const now = p.gallery_at_calibration !== undefined && p.expected_rate !== null
      ? `; with ${p.gallery} now, ${pct(p.expected_rate)} expected` : "";
    return `calibrated for ${pct(p.target)} unknown-person false alarms with ${then} speakers${now}`
      + `${p.outgrown ? " (outgrown: calibrate again)" : ""}.`;
  }
  return `calibrated for ${pct(p.target)} false accepts per claim.`;
}

// One bar per candidate from a labelled start (a multiple of 0.05 just under the lowest score, or
// the threshold under the best-score rule) to 1: from 0, the differences that decide would not show.
function chart(candidates, threshold, rule) {
  const scores = candidates.map((c) => c.score);
  const lo = Math.floor(20 * Math.max(-1, Math.min(...scores, rule === "best" ? threshold : 1) - 0.05)) / 20;
  const hi = Math.max(...scores, threshold, 0) > 1 ? Math.max(...scores, threshold) : 1;
  const x = (v) => `${(100 * (v - lo)) / (hi - lo)}%`;
  const rows = candidates.map((c) => {
    const fill = h("div", { class: `barfill${rule === "best" && c.score >= threshold ? " above" : ""}` });
    fill.style.width = x(c.score);
    const track = h("div", { class: "track" }, fill);
    if (rule === "best") {
      const line = h("div", { class: "threshold", title: `threshold ${fixed(threshold, 4)}` });
      line.style.left = x(threshold);
      track.append(line);
    }
    return h("div", { class: "row" }, h("span", { class: "name" }, c.name), track, h("span", { class: "score" }, fixed(c.score, 4)));
  });
  const axis = h("div", { class: "axis" }, h("span", {}, "score"),
    h("div", { class: "ticks" }, h("span", {}, fixed(lo, 2)), h("span", {}, fixed(hi, 2))), h("span"));
  return h("div", { class: "chart", role: "img", "aria-label": `candidate scores, on an axis from ${fixed(lo, 2)} to ${fixed(hi, 2)}` },
    rows, axis);
}

async function identifyBlob(blob, label) {
  const out = $("identify-result");
  out.replaceChildren(h("p", {}, "Identifying…"));
  try {
    const r = await api("POST", "identify", form({ top_k: 5 }, [["file", blob, label]]));
    const rule = r.decision.rule;
    out.replaceChildren(
      h("p", { class: `decision ${r.match ? "yes" : "no"}` }, r.match ? `Identified: ${r.match.name}` : "No match: not an enrolled voice"),
      h("p", {}, `${rule === "margin" ? "Margin score (2 × best − second best)" : "Best score"} `
        + `${fixed(r.decision.score, 4)} against the threshold ${fixed(r.threshold, 4)} (${r.calibration.score}).`),
      chart(r.candidates, r.threshold, rule),
      h("p", { class: "hint" }, `The identification threshold is ${meaning(r.calibration)}`));
  } catch (e) { out.replaceChildren(h("p", { class: "problem" }, e.message)); }
}

async function renderIdentify() {
  recorder($("identify-recorder"), (blob) => identifyBlob(blob, "microphone.wav"));
  $("identify-file").onchange = (e) => { const f = e.target.files[0]; if (f) identifyBlob(f, f.name); e.target.value = ""; };
}

async function verifyBlob(blob, label) {
  const out = $("verify-result");
  const name = $("verify-name").value;
  if (!name) return flash("Choose the claimed speaker first.");
  out.replaceChildren(h("p", {}, "Verifying…"));
  try {
    const r = await api("POST", "verify", form({ name }, [["file", blob, label]]));
    const point = state.thresholds && state.thresholds.points.verify;
    out.replaceChildren(
      h("p", { class: `decision ${r.accepted ? "yes" : "no"}` }, r.accepted ? `Accepted: this is ${r.name}` : `Rejected: not ${r.name}`),
      h("p", {}, `Score ${fixed(r.score, 4)} against the threshold ${fixed(r.threshold, 4)}.`),
      chart([{ name: r.name, score: r.score }], r.threshold, "best"),
      h("p", { class: "hint" }, `The verification threshold is ${meaning(point)}`));
  } catch (e) { out.replaceChildren(h("p", { class: "problem" }, e.message)); }
}

async function renderVerify() {
  recorder($("verify-recorder"), (blob) => verifyBlob(blob, "microphone.wav"));
  $("verify-file").onchange = (e) => { const f = e.target.files[0]; if (f) verifyBlob(f, f.name); e.target.value = ""; };
  const [speakers, thresholds] = await Promise.all([api("GET", "speakers"), api("GET", "calibration")]);
  state.thresholds = thresholds;
  const select = $("verify-name");
  const kept = select.value;
  select.replaceChildren(h("option", { value: "" }, "— choose —"), ...speakers.map((s) => h("option", {}, s.name)));
  select.value = speakers.some((s) => s.name === kept) ? kept : "";
}

// -- audit -----------------------------------------------------------------------------------
async function renderAudit(more) {
  const fields = Object.fromEntries(new FormData($("audit-form")));
  const params = new URLSearchParams({ limit: 50, offset: more === true ? state.auditOffset : 0 });
  for (const [k, v] of Object.entries(fields)) if (v) params.set(k, v);
  const page = await api("GET", `audit?${params}`);
  const rows = page.entries.map((e) => h("tr", {}, h("td", {}, when(e.at)), h("td", {}, e.operation),
    h("td", {}, e.claimed || ""), h("td", {}, e.returned || (e.accepted ? "" : "— rejected")),
    h("td", {}, fixed(e.score, 4)), h("td", {}, fixed(e.threshold, 4)), h("td", {}, e.client || "")));
  if (more === true) $("audit-rows").append(...rows); else $("audit-rows").replaceChildren(...rows);
  labelled($("audit-rows"));
  state.auditOffset = page.next_offset;
  $("audit-more").hidden = page.next_offset === null;
}

// -- calibration -----------------------------------------------------------------------------
function pointRows(points, status) {
  const table = h("table", { class: "list" }, h("thead", {}, h("tr", {}, ["For", "Threshold", "Set by", "Promise"].map((t) => h("th", {}, t)))),
    h("tbody", {}, Object.entries(points).map(([which, p]) => h("tr", {}, h("td", {}, which), h("td", {}, fixed(p.threshold, 4)),
      h("td", {}, p.method), h("td", {}, meaning(status ? { ...p, ...status[which] } : p))))));
  labelled(table.tBodies[0]);
  return table;
}

async function renderCalibration() {
  const t = await api("GET", "calibration");
  state.thresholds = t;
  $("thresholds").replaceChildren(pointRows(t.points, t.status));
}

async function dryRun(event) {
  event.preventDefault();
  const out = $("dryrun-result");
  out.replaceChildren(h("p", {}, "Measuring on the bank's own recordings…"));
  try {
    const r = await api("POST", "calibration/dry-run", new FormData(event.target));
    const rates = (points, label) => Object.entries(points).map(([which, p]) => h("li", {}, `${label} ${which} threshold `
      + `${fixed(p.threshold, 4)}: ` + (which === "verify"
      ? `false accepts ${pct(p.rate)} (${p.counted} of ${p.trials} counted), false rejects ${pct(p.miss)}`
      : `unknown-person false alarms ${pct(p.rate)} (${p.counted} of ${p.trials}), correctly identified ${pct(p.hit)}`)));
    out.replaceChildren(
      h("p", {}, `${r.gallery} speakers: ${r.trials.genuine} genuine, ${r.trials.impostor} impostor, `
        + `${r.trials.unknown} unknown-person trials (${r.score} score). Nothing was stored.`),
      h("ul", { id: "dryrun-rates" }, rates(r.chosen, "chosen"), rates(r.stored, "stored")),
      ...Object.entries(r.plots).map(([k, src]) => h("img", { class: "det", src, alt: k === "det" ? "DET curve" : "open-set identification" })));
  } catch (e) { out.replaceChildren(h("p", { class: "problem" }, e.message)); }
}

// -- wiring ----------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("key").value.trim()); $("key").value = ""; });
  $("signout").addEventListener("click", () => { signOut("Signed out."); location.hash = ""; });
  $("speaker-search").addEventListener("input", drawSpeakers);
  $("enroll-submit").addEventListener("click", enroll);
  $("enroll-files").addEventListener("change", (e) => { addTakes([...e.target.files].map((f) => [f, f.name])); e.target.value = ""; });
  const drop = $("enroll-drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    addTakes([...e.dataTransfer.files].map((f) => [f, f.name]));
  });
  $("audit-form").addEventListener("submit", (e) => { e.preventDefault(); renderAudit().catch((x) => flash(x.message)); });
  $("audit-more").addEventListener("click", () => renderAudit(true).catch((x) => flash(x.message)));
  $("dryrun-form").addEventListener("submit", dryRun);
  window.addEventListener("hashchange", route);
  const key = sessionStorage.getItem(KEY);
  if (key) signIn(key); else show("signin");
});
