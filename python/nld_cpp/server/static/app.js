// The nld_cpp chat page: an OpenAI-style streaming chat with a live view of
// the diffusion block being denoised. Model text only ever reaches the page
// through textContent, never innerHTML.
"use strict";

const $ = (id) => document.getElementById(id);
const API_KEY_STORAGE = "nld_cpp.api_key";

const messagesEl = $("messages");
const canvasEl = $("canvas");
const promptEl = $("prompt");

const history = [];     // finished turns, {role, content}: the server is stateless, so every request carries them
let controller = null;  // the AbortController of the request in flight, null when idle
let prevPieces = null;  // the previous canvas of the current block, to highlight cells decided since
let chatId = 0;         // bumped by "New chat", so an answer aborted by it leaves the new history alone

function setBusy(busy) {
  document.body.dataset.busy = busy ? "1" : "0";
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

function headers(extra) {
  const key = $("api-key").value.trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

async function loadProps() {
  try {
    const res = await fetch("props", { headers: headers() });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const props = await res.json();
    const nld = props.nld || {};
    if (Array.isArray(nld.modes) && nld.modes.length) {
      const select = $("mode");
      const current = select.value;
      select.replaceChildren(...nld.modes.map((m) => new Option(m, m)));
      select.value = nld.modes.includes(current) ? current : nld.modes[0];
    }
    if (nld.block_size) $("block-length").placeholder = `server default (${nld.block_size})`;
    const name = props.model_alias || (props.model_path || "").split("/").pop();
    $("model-info").textContent = name || "";
    document.body.dataset.props = "loaded";
  } catch (err) {
    // The page still works on its built-in defaults.
    $("model-info").textContent = `could not read /props: ${err.message}`;
    document.body.dataset.props = "failed";
  }
}

function addMessage(role) {
  const root = document.createElement("div");
  root.className = `message ${role}`;
  const text = document.createElement("div");
  text.className = "text";
  root.append(text);
  messagesEl.append(root);
  return { root, text, reasoning: null };
}

function scrollToEnd() {
  messagesEl.scrollTop = messagesEl.scrollHeight;
}

// Thinking goes into its own collapsed block, created on its first token.
function appendReasoning(reply, piece) {
  if (!reply.reasoning) {
    const details = document.createElement("details");
    details.className = "reasoning";
    const summary = document.createElement("summary");
    summary.textContent = "reasoning";
    reply.reasoning = document.createElement("div");
    details.append(summary, reply.reasoning);
    reply.root.insertBefore(details, reply.text);
  }
  reply.reasoning.textContent += piece;
}

// Whitespace would leave a decided cell looking empty, i.e. undecided.
function visiblePiece(piece) {
  if (piece === "") return "∅";
  return piece.replace(/ /g, "·").replace(/\n/g, "⏎").replace(/\t/g, "⇥");
}

function renderCanvas({ step, pieces }) {
  // A step that does not follow the last one, or a decided cell masked
  // again, means a new block: there is nothing to compare with.
  const sameBlock = prevPieces && prevPieces.length === pieces.length && step > Number(canvasEl.dataset.step)
    && prevPieces.every((p, i) => p === null || pieces[i] !== null);
  const prev = sameBlock ? prevPieces : null;
  const cells = pieces.map((piece, i) => {
    const cell = document.createElement("span");
    cell.className = "cell";
    if (piece === null) {
      cell.classList.add("masked");
      cell.textContent = "░";
    } else {
      cell.textContent = visiblePiece(piece);
      cell.title = JSON.stringify(piece);
      if (/^\s*$/.test(piece)) cell.classList.add("space");
      if (!prev || prev[i] === null) cell.classList.add("fresh");
    }
    return cell;
  });
  const decided = pieces.filter((p) => p !== null).length;
  canvasEl.querySelector(".canvas-cells").replaceChildren(...cells);
  canvasEl.querySelector(".canvas-head").textContent = `step ${step} · ${decided}/${pieces.length} decided`;
  canvasEl.dataset.step = String(step);
  canvasEl.hidden = false;
  prevPieces = pieces;
}

// The embedded tiny model denoises a whole block in a few milliseconds;
// waiting for the next frame paints every step at least once. The timeout
// keeps a hidden tab, where frames never come, from stalling the stream.
function nextFrame() {
  return new Promise((resolve) => {
    requestAnimationFrame(resolve);
    setTimeout(resolve, 100);
  });
}

// Yields each `data:` payload of a server-sent event stream, parsed, up to [DONE].
async function* sseEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    // CRLF and CR end lines too; a CR at the end may be half of a CRLF split across reads.
    buffer = (buffer + value).replace(/\r\n|\r(?!$)/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

async function errorMessage(res) {
  const body = await res.text();
  try {
    const err = JSON.parse(body).error;
    return `${err.message || body} (HTTP ${res.status})`;
  } catch {
    return `HTTP ${res.status}: ${body.slice(0, 300)}`;
  }
}

function requestBody() {
  const mode = $("mode").value;
  const body = {
    messages: history.slice(),
    stream: true,
    mode,
    max_tokens: parseInt($("max-tokens").value, 10) || 256,
    temperature: parseFloat($("temperature").value) || 0,
    stream_options: { include_usage: true },
  };
  const blockLength = $("block-length").value.trim();
  const threshold = $("threshold").value.trim();
  if (blockLength) body.block_length = blockLength.toLowerCase() === "auto" ? "auto" : parseInt(blockLength, 10);
  if (threshold) body.threshold = parseFloat(threshold);
  if (mode !== "ar") body.canvas = true;
  return body;
}

function formatStats(finish, usage) {
  const nld = finish.nld || {};
  const timings = finish.timings || {};
  const parts = [];
  if (nld.mode) parts.push(nld.mode);
  if (nld.tokens_per_forward != null) parts.push(`${nld.tokens_per_forward.toFixed(2)} tokens per forward`);
  const tps = nld.tokens_per_s ?? timings.predicted_per_second;
  if (tps != null) parts.push(`${tps.toFixed(1)} tok/s`);
  if (nld.forwards != null) parts.push(`${nld.forwards} forwards`);
  if (usage) parts.push(`${usage.completion_tokens} tokens`);
  if (nld.time_to_first_token_s != null) parts.push(`first token ${(nld.time_to_first_token_s * 1000).toFixed(0)} ms`);
  const accepted = nld.accepted_lengths || [];
  if (accepted.length) {
    const mean = accepted.reduce((a, b) => a + b, 0) / accepted.length;
    const shown = accepted.slice(0, 24).join(" ") + (accepted.length > 24 ? " …" : "");
    parts.push(`accepted lengths ${shown} (mean ${mean.toFixed(2)})`);
  }
  const drafts = nld.draft_lengths || [];
  if (nld.rounds && (nld.mode === "auto" || new Set(drafts).size > 1)) {
    const range = drafts.length ? ` (draft ${Math.min(...drafts)}-${Math.max(...drafts)})` : "";
    parts.push(`${nld.rounds.ar} AR steps + ${nld.rounds.spec} rounds${range}`);
  }
  parts.push(`finish ${finish.choices[0].finish_reason}`);
  return parts.join(" · ");
}

function showNote(reply, text, className) {
  const note = document.createElement("div");
  note.className = className;
  note.textContent = text;
  reply.root.append(note);
}

async function send() {
  const text = promptEl.value.trim();
  if (!text || controller) return;
  promptEl.value = "";
  addMessage("user").text.textContent = text;
  history.push({ role: "user", content: text });
  const reply = addMessage("assistant");
  reply.root.append(canvasEl);
  canvasEl.querySelector(".canvas-cells").replaceChildren();
  canvasEl.dataset.step = "";
  prevPieces = null;
  const body = requestBody();
  const chat = chatId;
  controller = new AbortController();
  setBusy(true);
  scrollToEnd();
  let answer = "";
  let finish = null;
  let usage = null;
  try {
    const res = await fetch("v1/chat/completions", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!res.ok) throw new Error(await errorMessage(res));
    for await (const event of sseEvents(res)) {
      if (event.error) throw new Error(event.error.message || JSON.stringify(event.error));
      if (event.usage) usage = event.usage;
      if (event.nld && event.nld.canvas) {
        renderCanvas(event.nld.canvas);
        await nextFrame();
      }
      const choice = (event.choices || [])[0];
      if (!choice) continue;
      const delta = choice.delta || {};
      if (delta.reasoning_content) appendReasoning(reply, delta.reasoning_content);
      if (delta.content) {
        answer += delta.content;
        reply.text.textContent = answer;
      }
      if (choice.finish_reason) finish = event;
      scrollToEnd();
    }
    if (chat === chatId) history.push({ role: "assistant", content: answer });
    if (!answer) showNote(reply, "(empty answer)", "note");
    if (finish) showNote(reply, formatStats(finish, usage), "stats");
  } catch (err) {
    const stopped = err.name === "AbortError";
    // Keep the history equal to what the page shows, so the next turn continues this one.
    if (chat !== chatId) return;
    if (answer) history.push({ role: "assistant", content: answer });
    else history.pop();
    showNote(reply, stopped ? "(stopped)" : `Error: ${err.message}`, stopped ? "note" : "error");
  } finally {
    canvasEl.hidden = true;
    controller = null;
    setBusy(false);
    scrollToEnd();
  }
}

function newChat() {
  if (controller) controller.abort();
  chatId += 1;
  history.length = 0;
  canvasEl.hidden = true;
  messagesEl.replaceChildren(canvasEl);
  promptEl.focus();
}

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  send();
});
promptEl.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("new-chat").addEventListener("click", newChat);

const keyEl = $("api-key");
keyEl.value = localStorage.getItem(API_KEY_STORAGE) || "";
keyEl.addEventListener("input", () => localStorage.setItem(API_KEY_STORAGE, keyEl.value.trim()));

setBusy(false);
loadProps();
