// voicebank console, the live page: the microphone streamed to WS /live as 16-bit PCM while the
// server's updates are drawn (docs/live.md). Uses app.js's helpers (h, $, api, flash, fixed, KEY).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const PLOT = { left: 44, right: 590, top: 14, bottom: 176, width: 600, height: 204 };
let session = null;  // {ws, stream, ctx, node, queue, ready, points, changes, claim}

function s(tag, attrs, text) {  // an SVG element (h() makes HTML ones)
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function pcm16(samples) {  // Web Audio's float32 in [-1, 1] as 16-bit little-endian PCM
  const view = new DataView(new ArrayBuffer(2 * samples.length));
  samples.forEach((x, i) => { const v = Math.max(-1, Math.min(1, x)); view.setInt16(2 * i, v < 0 ? v * 0x8000 : v * 0x7fff, true); });
  return view.buffer;
}

// What an update decided, in words, and the score the threshold applies to.
function decided(u) {
  if (u.accepted !== undefined) {
    return { yes: u.accepted, score: u.score, text: u.accepted ? `Accepted: this is ${u.name}` : `Rejected: not ${u.name}` };
  }
  if (u.candidates !== undefined) {
    return { yes: Boolean(u.match), score: u.decision.score,
      text: u.match ? `Identified: ${u.match.name}` : "No match: not an enrolled voice" };
  }
  return null;
}

function drawTrace() {
  const { points, changes, threshold } = session;
  const svg = $("live-trace");
  const scores = points.map((p) => p.score);
  const lo = Math.floor(20 * Math.max(-1, Math.min(...scores, threshold ?? 1) - 0.05)) / 20;
  const hi = Math.max(1, ...scores);
  const end = 5 * Math.ceil(Math.max(9, ...points.map((p) => p.at), ...changes) / 5 + 0.2);  // room to the right
  const x = (t) => PLOT.left + ((PLOT.right - PLOT.left) * t) / end;
  const y = (v) => PLOT.bottom - ((PLOT.bottom - PLOT.top) * (v - lo)) / (hi - lo);
  const parts = [
    s("line", { class: "axis", x1: PLOT.left, y1: PLOT.top, x2: PLOT.left, y2: PLOT.bottom }),
    s("line", { class: "axis", x1: PLOT.left, y1: PLOT.bottom, x2: PLOT.right, y2: PLOT.bottom }),
    s("text", { class: "tick", x: PLOT.left - 4, y: y(hi) + 4, "text-anchor": "end" }, fixed(hi, 2)),
    s("text", { class: "tick", x: PLOT.left - 4, y: y(lo) + 4, "text-anchor": "end" }, fixed(lo, 2)),
    s("text", { class: "tick", x: PLOT.left, y: PLOT.bottom + 16 }, "0 s"),
    s("text", { class: "tick", x: PLOT.right, y: PLOT.bottom + 16, "text-anchor": "end" }, `${end.toFixed(0)} s of audio`),
  ];
  if (threshold !== null) {
    parts.push(s("line", { class: "thr", x1: PLOT.left, y1: y(threshold), x2: PLOT.right, y2: y(threshold) }),
      s("text", { class: "thr-label", x: PLOT.right, y: y(threshold) - 4, "text-anchor": "end" }, `threshold ${fixed(threshold, 2)}`));
  }
  for (const at of changes) {
    const right = x(at) > (PLOT.left + PLOT.right) / 2;  // the label on the side with room for it
    parts.push(s("line", { class: "change", x1: x(at), y1: PLOT.top, x2: x(at), y2: PLOT.bottom }),
      s("text", { class: "change-label", x: x(at) + (right ? -4 : 4), y: PLOT.top + 10, "text-anchor": right ? "end" : "start" },
        "speaker change"));
  }
  if (points.length) {
    parts.push(s("polyline", { class: "line", points: points.map((p) => `${x(p.at)},${y(p.score)}`).join(" ") }),
      ...points.map((p) => {
        const dot = s("circle", { class: p.yes ? "dot yes" : "dot no", cx: x(p.at), cy: y(p.score), r: 3.5 });
        dot.append(s("title", {}, `${fixed(p.at, 1)} s: ${p.text} (${fixed(p.score, 3)})`));
        return dot;
      }));
  }
  svg.replaceChildren(...parts);
}

function onUpdate(u) {
  if (u.error) return $("live-problem").replaceChildren(u.error);
  if (u.event === "ready") {
    session.ready = true;
    session.queue.splice(0).forEach((frame) => session.ws.send(frame));
    $("live-status").textContent = "listening";
    return;
  }
  const heard = `${fixed(u.heard, 1)} s of speech heard`;
  if (u.event === "listening") { $("live-status").textContent = `listening: ${heard}`; return; }
  if (u.event === "change") {
    session.changes.push(u.at);
    $("live-events").append(h("li", {}, `${fixed(u.at, 1)} s: the voice changed (recent speech ${fixed(u.change_score, 2)} `
      + `against the earlier, below ${fixed(u.change_threshold, 2)}); deciding on the new voice from here`));
    drawTrace();
    return;
  }
  const d = decided(u);
  const box = $("live-decision");
  box.hidden = false;
  if (!d) {  // a final update on too little speech
    box.className = "decision no";
    box.textContent = "No decision: too little speech";
  } else {
    box.className = `decision ${d.yes ? "yes" : "no"}`;
    box.textContent = `${u.event === "final" ? "Final: " : ""}${d.text}`;
    if (u.event === "decision" && d.score !== null) {
      session.threshold = u.threshold;
      session.points.push({ at: u.at, score: d.score, yes: d.yes, text: d.text });
    }
  }
  const score = d && d.score !== null ? `score ${fixed(d.score, 3)} on ` : "";
  $("live-status").textContent = `${u.event === "final" ? "ended" : "live"}: ${score}${fixed(u.speech, 1)} s of speech (${heard})`;
  drawTrace();
}

async function startLive() {
  const stream = await navigator.mediaDevices.getUserMedia(
    { audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 } });
  const ctx = new AudioContext();
  const rate = ctx.sampleRate;
  const claim = $("live-name").value;
  const url = new URL(`live?${new URLSearchParams({ rate, ...(claim ? { name: claim } : {}) })}`, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const node = ctx.createScriptProcessor(4096, 1, 1);  // 85 ms at 48 kHz: the server takes up to 1 s a frame
  session = { ws, stream, ctx, node, queue: [], ready: false, points: [], changes: [], threshold: null };
  const level = $("live-level");
  node.onaudioprocess = (e) => {
    const data = e.inputBuffer.getChannelData(0);
    let peak = 0;
    for (const v of data) peak = Math.max(peak, Math.abs(v));
    level.style.width = `${Math.min(100, 100 * Math.sqrt(peak))}%`;
    if (ws.readyState !== WebSocket.OPEN) return;
    const frame = pcm16(data);
    if (session && session.ready) ws.send(frame); else if (session) session.queue.push(frame);
  };
  stream.getAudioTracks().forEach((t) => t.addEventListener("ended", stopLive));  // the microphone went away
  ctx.createMediaStreamSource(stream).connect(node);
  node.connect(ctx.destination);  // a processor runs only when connected; it outputs silence
  ws.onopen = () => ws.send(JSON.stringify({ key: sessionStorage.getItem(KEY) }));  // no header on a WebSocket
  ws.onmessage = (e) => { if (session && session.ws === ws) onUpdate(JSON.parse(e.data)); };
  ws.onclose = (e) => {
    if (e.code !== 1000 && e.reason && session && session.ws === ws) $("live-problem").textContent = e.reason;
    stopMicrophone(ws);
  };
  $("live-toggle").textContent = "Stop";
  $("live-status").textContent = "connecting";
  $("live-decision").hidden = true;
  $("live-events").replaceChildren();
  $("live-problem").textContent = "";
  drawTrace();
}

function stopMicrophone(ws) {  // the session's microphone off; the socket waits for the final decision
  if (!session || session.ws !== ws || !session.stream) return;
  session.stream.getTracks().forEach((t) => t.stop());
  session.node.disconnect();
  session.ctx.close();
  session.stream = null;
  $("live-level").style.width = "0";
  $("live-toggle").textContent = "Start";
}

function stopLive() {
  if (!session) return;
  const { ws } = session;
  stopMicrophone(ws);
  if (ws.readyState === WebSocket.OPEN) ws.send("end");  // the server answers with the final decision, then closes
  else ws.close();
}

async function renderLive() {
  const select = $("live-name");
  const kept = select.value;
  const speakers = await api("GET", "speakers");
  select.replaceChildren(h("option", { value: "" }, "nobody: who is speaking?"), ...speakers.map((p) => h("option", {}, p.name)));
  select.value = speakers.some((p) => p.name === kept) ? kept : "";
}

VIEWS.live = renderLive;
document.addEventListener("DOMContentLoaded", () => {
  $("live-toggle").addEventListener("click", () => {
    if (session && session.stream) return stopLive();
    startLive().catch((e) => { flash(`Microphone: ${e.message}`); if (session) stopLive(); });
  });
  window.addEventListener("hashchange", () => { if (location.hash !== "#live") stopLive(); });  // leaving the page ends the call
});
