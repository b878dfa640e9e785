// The search of the outbox: filters applied by the server (/api/rows, /api/failures), a page at
// a time; a row opened in a dialog (/api/rows/{id}); the view as CSV; rows per minute (/api/activity).
// Uses api(), percent() and element() of app.js and dom.js. Text is only ever set as textContent.
"use strict";

const search = { next: null, query: "" };
// The chart is drawn again when the live outbox changes (live.js's "outbox-changed" events), at
// most once in ACTIVITY_SECONDS: a busy daemon changes it at every look, and each drawing reads
// the JSONL's tail. While it shows any rows it is drawn once a minute too, as they move along
// the hour. Over an idle hour a page asks for it only when its stream opens again (live.js
// then fetches everything: what changed while none was open is unknown).
const ACTIVITY_SECONDS = 15;
const MINUTE_MS = 60000;
const plotted = { at: 0, due: null, rows: 0 };

// A moment in the reader's time zone, its UTC in the title.
function moment(iso) {
  const when = new Date(iso);
  return element("time", { datetime: iso, title: `${iso} (UTC)`,
    text: when.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" }) });
}

function filters() {
  const form = document.getElementById("search-form");
  const failures = form.show.value === "failures";
  const names = failures ? ["kind", "folder", "name"] : ["label", "flagged", "folder", "name"];
  const query = new URLSearchParams();
  for (const name of names) if (form[name].value.trim()) query.set(name, form[name].value.trim());
  return { failures, query };
}

function onShowChanged() {
  const failures = document.getElementById("f-show").value === "failures";
  document.getElementById("f-label").disabled = failures;
  document.getElementById("f-flagged").disabled = failures;
  document.getElementById("f-kind").disabled = !failures;
  document.getElementById("csv").hidden = failures;
}

function head(...names) {
  return element("tr", {}, ...names.map((name) => element("th", { scope: "col", text: name })));
}

function rowLine(row) {
  const open = element("button", { type: "button", text: row.file, title: `open ${row.file}` });
  open.addEventListener("click", () => openRow(row.id));
  return element("tr", { "data-id": row.id }, element("td", { class: "file" }, open),
    element("td", { text: row.label }), element("td", { class: "number", text: row.confidence.toFixed(3) }),
    element("td", {}, ...flag(row.review)), element("td", {}, moment(row.processed_at)));
}

function failureLine(failure) {
  return element("tr", {}, element("td", { class: "file", text: failure.file }),
    element("td", { text: failure.kind }), element("td", { class: "file", text: failure.message }),
    element("td", {}, failure.time ? moment(failure.time) : ""));
}

async function runSearch(event) {
  event?.preventDefault();
  const { failures, query } = filters();
  search.query = query.toString();
  document.getElementById("csv").href = `/api/rows.csv?${search.query}`;
  const table = document.getElementById("results");
  // The file first: on a phone the table scrolls sideways, and the file is what is looked for.
  table.tHead.replaceChildren(failures ? head("file", "kind", "message", "time")
    : head("file", "label", "confidence", "flag", "time"));
  table.tBodies[0].replaceChildren();
  search.next = null;
  if (failures) {
    await show(async () => {
      const found = await api(`/api/failures?${search.query}`);
      table.tBodies[0].append(...found.failures.map(failureLine));
      return null;
    });
  } else {
    await more();
  }
}

// A phone gets a short page of lines (More brings the next), a desktop a longer one.
function linesShown() { return window.matchMedia("(max-width: 600px)").matches ? 10 : 50; }

async function more() {
  const cursor = search.next === null ? "" : `&cursor=${search.next}`;
  await show(async () => {
    const found = await api(`/api/rows?${search.query}&limit=${linesShown()}${cursor}`);
    document.getElementById("results").tBodies[0].append(...found.rows.map(rowLine));
    return found.next;
  });
}

// Runs a search step; says how many lines are shown and whether there may be more.
async function show(step) {
  const said = document.getElementById("search-said");
  const button = document.getElementById("more");
  said.textContent = "searching…";
  try {
    search.next = await step();
    const shown = document.getElementById("results").tBodies[0].rows.length;
    said.textContent = `${shown} shown${search.next !== null ? "; more may be further back" : ", the whole outbox searched"}.`;
  } catch (error) {
    search.next = null;
    said.textContent = `cannot search: ${error.message}`;
  }
  button.hidden = search.next === null;
}

async function openRow(id) {
  const dialog = document.getElementById("row-dialog");
  try {
    const { row, history } = await api(`/api/rows/${encodeURIComponent(id)}`);
    document.getElementById("row-title").textContent = row.file;
    const pictures = document.getElementById("row-pictures");
    pictures.replaceChildren(...(row.picture
      ? [element("img", { src: row.picture.scan, alt: `${row.file} as archived` }),
        element("img", { class: "seen", src: row.picture.seen, alt: "the 28x28 image the model saw" })]
      : [element("span", { class: "muted", text: "input not kept (not in processed/)" })]));
    document.getElementById("row-facts").replaceChildren(`${row.label} (${percent(row.confidence)}), `,
      `model ${row.model || "?"} ${row.model_version || ""}, `, moment(row.processed_at), ...flag(row.review));
    document.getElementById("row-bars").replaceChildren(...Object.entries(row.probabilities).map(([label, p]) =>
      element("tr", {}, element("td", { text: label }), element("td", { text: percent(p) }),
        element("td", { class: "fill" }, element("div", { class: "bar", style: `width: ${100 * p}%` })))));
    document.getElementById("row-history").replaceChildren(...(history.length ? history.map((h) =>
      element("li", {}, h.time ? moment(h.time) : "", ` ${h.reviewer || "someone"}: `,
        h.undone ? `took back ${h.undone}` : `said ${h.label}`))
      : [element("li", { class: "muted", text: "no decision yet" })]));
    dialog.showModal();
  } catch (error) {
    document.getElementById("search-said").textContent = `cannot open it: ${error.message}`;
  }
}

function activitySoon() {
  if (plotted.due !== null) return;
  const wait = Math.max(0, plotted.at + ACTIVITY_SECONDS * 1000 - Date.now());
  plotted.due = setTimeout(() => { plotted.due = null; refreshActivity(); }, wait);
}

async function refreshActivity() {
  plotted.at = Date.now();
  const caption = document.getElementById("activity-caption");
  caption.dataset.usual ??= caption.textContent;  // said again once the chart is back
  try {
    const { minutes } = await api("/api/activity?minutes=60");
    const peak = Math.max(1, ...minutes.map((m) => m.rows));
    const columns = minutes.map((m) => {
      const column = element("div", { class: "minute", style: `height: ${100 * m.rows / peak}%`,
        title: `${new Date(m.minute).toLocaleTimeString(undefined, { timeStyle: "short" })}: ${m.rows} rows, ${m.flagged} flagged` });
      if (m.rows) column.append(element("div", { class: "flagged", style: `height: ${100 * m.flagged / m.rows}%` }));
      return column;
    });
    const chart = document.getElementById("activity");
    chart.replaceChildren(...columns);
    const rows = minutes.reduce((sum, m) => sum + m.rows, 0);
    const flagged = minutes.reduce((sum, m) => sum + m.flagged, 0);
    plotted.rows = rows;
    chart.setAttribute("aria-label", `rows per minute over the last hour: ${rows} rows, ${flagged} flagged, at most ${peak} a minute`);
    caption.textContent = caption.dataset.usual;
  } catch (error) {
    caption.textContent = `no chart: ${error.message}`;
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("search-form").addEventListener("submit", runSearch);
  document.getElementById("f-show").addEventListener("change", onShowChanged);
  document.getElementById("more").addEventListener("click", more);
  document.addEventListener("outbox-changed", (event) => { if (event.detail.part === "latest") activitySoon(); });
  const model = await api("/api/model").catch(() => ({ classes: [] }));
  document.getElementById("f-label").append(...model.classes.map((c) => element("option", { value: c, text: c })));
  onShowChanged();
  await Promise.all([runSearch(), refreshActivity()]);
  setInterval(() => { if (plotted.rows) activitySoon(); }, MINUTE_MS);
});
