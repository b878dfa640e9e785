// The worker's page: draw, upload, the live outbox and review, over the JSON API of app.py.
// Text from the server is only ever set as textContent (never parsed as HTML).
"use strict";

const state = { classes: [], queue: [], selected: 0, undo: [] };

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = body.detail;
    throw new Error(typeof detail === "string" ? detail : (detail && detail.message) || response.statusText);
  }
  return body;
}

function percent(p) { return `${(100 * p).toFixed(1)} %`; }

// The review flag's reasons (a list from /api/classify, a space-separated string in a row) as
// nodes to append: nothing when there are none.
function flag(review) {
  const reasons = Array.isArray(review) ? review : (review || "").split(" ").filter(Boolean);
  if (!reasons.length) return [];
  const words = reasons.flatMap((reason, i) => [i ? ", " : "", element("span", { class: "reason", text: reason })]);
  return [" ", element("span", { class: "flag" }, "review: ", ...words)];
}

// --- the model --------------------------------------------------------------------------------

async function loadModel() {
  const model = await api("/api/model");
  state.classes = model.classes;
  document.getElementById("model").textContent =
    `Model ${model.name}, version ${model.version} (${model.dataset}): ${model.classes.join(", ")}`;
  // A model of something else than digits gets no drawing pad: what it reads is photos.
  document.getElementById("draw").hidden = !model.draw;
  document.getElementById("draw-link").hidden = !model.draw;
  document.getElementById("draw-off").hidden = model.draw;
  if (model.reviewer) document.getElementById("reviewer").textContent = ` (as ${model.reviewer})`;
}

// --- drawing ----------------------------------------------------------------------------------

function setUpDrawing() {
  const canvas = document.getElementById("canvas");
  const context = canvas.getContext("2d");
  let drawing = false;
  const clear = () => {
    context.fillStyle = "#fff";
    context.fillRect(0, 0, canvas.width, canvas.height);
    document.getElementById("answer").textContent = "";
    document.getElementById("bars").replaceChildren();
    document.getElementById("seen-figure").hidden = true;  // no picture yet: no broken image
    document.getElementById("seen").removeAttribute("src");
  };
  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
  };
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true;
    canvas.setPointerCapture(event.pointerId);
    context.lineWidth = 18;
    context.lineCap = context.lineJoin = "round";
    context.strokeStyle = "#000";
    context.beginPath();
    context.moveTo(...at(event));
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    context.lineTo(...at(event));
    context.stroke();
  });
  const end = () => {
    if (!drawing) return;
    drawing = false;
    canvas.toBlob(classifyDrawing, "image/png");
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  document.getElementById("clear").addEventListener("click", clear);
  clear();
}

async function classifyDrawing(blob) {
  const form = new FormData();
  form.append("file", blob, "drawing.png");
  const answer = document.getElementById("answer");
  try {
    const result = await api("/api/classify", { method: "POST", body: form });
    document.getElementById("seen").src = result.seen;
    document.getElementById("seen-figure").hidden = false;
    answer.replaceChildren(`Looks like ${result.label} (${percent(result.confidence)})`, ...flag(result.review));
    showBars(result.probabilities);
  } catch (error) {
    answer.textContent = `No answer: ${error.message}`;
  }
  answer.scrollIntoView({ block: "nearest" });  // a phone's answer is under the pad
}

function showBars(probabilities) {
  const rows = Object.entries(probabilities).map(([label, p]) =>
    element("tr", {}, element("td", { text: label }), element("td", { text: percent(p) }),
      element("td", { class: "fill" }, element("div", { class: "bar", style: `width: ${100 * p}%` }))));
  document.getElementById("bars").replaceChildren(...rows);
}

// --- uploads ----------------------------------------------------------------------------------

function chosenFiles() { return Array.from(document.getElementById("files").files); }

async function classifyNow() {
  const list = document.getElementById("uploads");
  for (const file of chosenFiles()) {
    const item = element("li", { text: `${file.name}: …` });
    list.prepend(item);
    const form = new FormData();
    form.append("file", file);
    try {
      const r = await api("/api/classify", { method: "POST", body: form });
      item.replaceChildren(`${file.name}: ${r.label} (${percent(r.confidence)})`, ...flag(r.review));
    } catch (error) {
      item.textContent = `${file.name}: ${error.message}`;
      item.className = "error";
    }
  }
}

async function dropIntoInbox() {
  // One request a file: a request's body is capped at one upload's size.
  const list = document.getElementById("uploads");
  for (const file of chosenFiles()) {
    const form = new FormData();
    form.append("files", file);
    try {
      const { uploads } = await api("/api/inbox", { method: "POST", body: form });
      for (const upload of uploads) {
        const item = element("li", { "data-name": upload.name,
          text: `${upload.original}: in the inbox as ${upload.name}, waiting for the daemon…` });
        list.prepend(item);
        follow(upload, item);
      }
    } catch (error) {
      list.prepend(element("li", { class: "error", text: `${file.name} not dropped: ${error.message}` }));
    }
  }
}

async function follow(upload, item, tries = 0) {
  // By the name the upload was given, which no earlier file had, and by its bytes.
  const { name, original, sha256 } = upload;
  const query = `name=${encodeURIComponent(name)}&sha256=${sha256}`;
  const found = await api(`/api/record?${query}`).catch(() => ({ waiting: true }));
  if (found.row) {
    item.replaceChildren(`${original}: ${found.row.label} (${percent(found.row.confidence)})`,
      ...flag(found.row.review), `, row written for ${name}`);
  } else if (found.error) {
    item.textContent = `${original}: failed, ${found.error.kind}: ${found.error.message}`;
    item.className = "error";
  } else if (found.other) {
    item.textContent = `${original}: the daemon's record for ${name} is of another file (it was replaced in the inbox before the daemon took it)`;
    item.className = "error";
  } else if (tries < 600) {
    setTimeout(() => follow(upload, item, tries + 1), 500);
  }
}

// --- the live outbox ----------------------------------------------------------------------------

function figure(row) {
  const pair = element("div", { class: "pair" });
  if (row.picture) {
    pair.append(element("img", { src: row.picture.scan, alt: `${row.file} as scanned` }),
      element("img", { src: row.picture.seen, alt: "what the model saw", style: "background:#000" }));
  } else {
    pair.append(element("span", { class: "muted", text: "input not kept" }));
  }
  const caption = element("figcaption", {}, element("b", { text: row.label }),
    ` ${row.confidence.toFixed(3)} · ${row.file}`);
  caption.append(...flag(row.review));
  return element("figure", { "data-id": row.id, "data-file": row.file }, pair, caption);
}

async function refreshLive() {
  try {
    const live = await api(`/api/latest?limit=${cardsShown()}`);
    document.getElementById("latest").replaceChildren(...live.rows.map(figure));
    document.getElementById("failures").replaceChildren(...live.failures.map((f) =>
      element("li", { text: `${f.file}: ${f.kind}, ${f.message}` })));
    const s = live.status, r = live.report;
    const totals = r && !r.error ? `In all: ${r.predictions} predictions, ${r.failed} failed, ` +
      `${r.low_confidence} below ${r.low_confidence_threshold} confidence. ` : "";
    document.getElementById("numbers").textContent = totals + (s.error ? s.error :
      `${s.daemons_alive} daemon(s) running; ${s.waiting} waiting in the inbox, ${s.claimed} being read; ` +
      `failures today: ${Object.entries(s.failed_today).map(([k, n]) => `${k} ${n}`).join(", ") || "none"}`);
  } catch (error) {
    document.getElementById("numbers").textContent = `cannot read the outbox: ${error.message}`;
  }
}

// --- review -------------------------------------------------------------------------------------

// Up to this many classes a card offers a button each; more, a list to choose from.
const MOST_BUTTONS = 12;

// The key that picks class i: a one-character class name is its own key (digits 0-9); when no
// name is, the first ten classes are picked by their index (Fashion-MNIST's 0 is T-shirt/top).
function keyFor(i) {
  const name = state.classes[i];
  if (state.classes.some((c) => c.length === 1)) return name.length === 1 ? name : null;
  return i < 10 ? String(i) : null;
}

function classForKey(key) {
  const i = state.classes.findIndex((_, j) => keyFor(j) === key);
  return i < 0 ? null : state.classes[i];
}

async function loadQueue() {
  const { rows } = await api(`/api/review?limit=${cardsShown()}`);
  const ids = (queue) => queue.map((row) => row.id).join();
  if (state.queueShown && ids(rows) === ids(state.queue)) return;  // no redraw under a person's hand
  // Fetched again as rows come: the card chosen stays chosen, and the keys' focus stays.
  const chosen = state.queue[state.selected];
  const focused = document.getElementById("queue").contains(document.activeElement);
  const kept = chosen ? rows.findIndex((row) => row.id === chosen.id) : -1;
  state.queue = rows;
  state.selected = kept >= 0 ? kept : Math.min(state.selected, Math.max(0, rows.length - 1));
  state.queueShown = true;
  showQueue();
  if (focused) document.getElementById("queue").focus({ preventScroll: true });
}

function choices(row, i) {
  const pick = (label) => { state.selected = i; decide(label); };
  if (state.classes.length > MOST_BUTTONS) {
    const list = element("select", { "aria-label": `right label for ${row.file}` },
      ...state.classes.map((c) => element("option", { value: c, text: c })));
    list.value = row.label;
    const record = element("button", { type: "button", text: "Record" });
    record.addEventListener("click", () => pick(list.value));
    return element("div", { class: "choices list" }, list, record);
  }
  const long = state.classes.some((c) => c.length > 2);
  const buttons = state.classes.map((label, j) => {
    const key = keyFor(j);
    const button = element("button", {
      type: "button", "data-label": label, class: label === row.label ? "said" : "",
      title: `${label === row.label ? "confirm" : "correct to"} ${label}${key ? ` (key ${key})` : ""}`,
    });
    if (key && key !== label) button.append(element("kbd", { text: key }), " ");
    button.append(label);
    button.addEventListener("click", () => pick(label));
    return button;
  });
  return element("div", { class: long ? "choices long" : "choices", role: "group",
    "aria-label": `right label for ${row.file}` }, ...buttons);
}

function showQueue() {
  const figures = state.queue.map((row, i) => {
    const f = figure(row);
    f.append(choices(row, i));
    if (i === state.selected) f.classList.add("selected");
    f.addEventListener("click", (event) => {
      if (event.target.closest("button, select")) return;
      state.selected = i;
      showQueue();
      document.getElementById("queue").focus({ preventScroll: true });
    });
    // Tabbing to a card's buttons chooses that card for the keys too (not redrawn: focus stays).
    f.addEventListener("focusin", () => {
      document.querySelector("#queue figure.selected")?.classList.remove("selected");
      f.classList.add("selected");
      state.selected = i;
    });
    return f;
  });
  document.getElementById("queue").replaceChildren(...figures);
  document.getElementById("queue-empty").hidden = state.queue.length > 0;
  const undo = document.getElementById("undo");
  const last = state.undo[state.undo.length - 1];
  undo.hidden = !last;
  if (last) undo.textContent = `Undo: ${last.row.file} ${verb(last.row, last.label)} ${last.label}`;
}

function verb(row, label) { return label === row.label ? "confirmed as" : "corrected to"; }

function postReview(path, row, label) {
  return api(path, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ id: row.id, file: row.file, predicted: row.label, label }),
  });
}

async function decide(label) {
  const row = state.queue[state.selected];
  if (!row) return;
  const said = document.getElementById("review-said");
  try {
    await postReview("/api/reviews", row, label);
    said.textContent = `${row.file}: ${label === row.label ? "confirmed" : "corrected to"} ${label}`;
    state.undo.push({ row, label, index: state.selected });
    state.queue.splice(state.selected, 1);
    state.selected = Math.min(state.selected, Math.max(0, state.queue.length - 1));
    showQueue();
    document.getElementById("queue").focus({ preventScroll: true });
  } catch (error) {
    said.textContent = `not recorded: ${error.message}`;
  }
}

async function undoLast() {
  const last = state.undo.pop();
  if (!last) return;
  const said = document.getElementById("review-said");
  try {
    await postReview("/api/reviews/undo", last.row, last.label);
    said.textContent = `${last.row.file}: undone, back in the queue`;
    state.selected = Math.min(last.index, state.queue.length);
    state.queue.splice(state.selected, 0, last.row);
  } catch (error) {
    said.textContent = `not undone: ${error.message}`;
  }
  showQueue();
  document.getElementById("queue").focus({ preventScroll: true });
}

function onReviewKey(event) {
  const row = state.queue[state.selected];
  const onControl = event.target.closest("button, select");
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") { event.preventDefault(); undoLast(); return; }
  if (event.ctrlKey || event.metaKey || event.altKey || (onControl && [" ", "Enter"].includes(event.key))) return;
  if (event.key === "ArrowRight" || event.key === "ArrowDown") state.selected = Math.min(state.selected + 1, state.queue.length - 1);
  else if (event.key === "ArrowLeft" || event.key === "ArrowUp") state.selected = Math.max(state.selected - 1, 0);
  else if (event.key === "Backspace") { event.preventDefault(); undoLast(); return; }
  else if (event.key === "Enter" && row) { event.preventDefault(); decide(row.label); return; }
  else if (classForKey(event.key) !== null && !onControl?.matches("select")) { event.preventDefault(); decide(classForKey(event.key)); return; }
  else return;
  event.preventDefault();
  showQueue();
  document.querySelector("#queue figure.selected")?.scrollIntoView({ block: "nearest" });
}

// A phone shows fewer cards: two to a row, a page a person scrolls through.
function cardsShown() { return window.matchMedia("(max-width: 600px)").matches ? 8 : 24; }

document.addEventListener("DOMContentLoaded", async () => {
  setUpDrawing();
  document.getElementById("classify-now").addEventListener("click", classifyNow);
  document.getElementById("to-inbox").addEventListener("click", dropIntoInbox);
  document.getElementById("review").addEventListener("keydown", onReviewKey);
  document.getElementById("undo").addEventListener("click", undoLast);
  await loadModel();
  await Promise.all([refreshLive(), loadQueue()]);
  followChanges({ latest: refreshLive, review: loadQueue });
});
