// Live updates: the server's event stream (/api/events) says when the live outbox or the review
// queue changed, and only then is that part fetched again. Where no stream can be had (a browser
// without EventSource, a proxy that buffers, too many tabs open or a server stopping: 503) the
// page polls instead, and tries a stream again now and then.
"use strict";

const POLL_MS = 2000;
const STREAM_AGAIN_MS = 60000;

// `fetchAgain` run one at a time: a call while it runs makes one more run after it, not two.
function oneAtATime(fetchAgain) {
  let running = false, again = false;
  const run = async () => {
    if (running) { again = true; return; }
    running = true;
    try { await fetchAgain(); } catch (error) { /* each part shows its own trouble */ }
    running = false;
    if (again) { again = false; run(); }
  };
  return run;
}

// Other scripts of the page follow the same changes: each part fetched again is announced on
// `document` as an "outbox-changed" event naming it (search.js redraws its chart on "latest").
function announce(part) {
  document.dispatchEvent(new CustomEvent("outbox-changed", { detail: { part } }));
}

// `parts`: a function per part the server numbers ("latest", "review"), which fetches it again.
function followChanges(parts) {
  const refresh = Object.fromEntries(Object.entries(parts).map(([part, fetchAgain]) => {
    const run = oneAtATime(fetchAgain);
    return [part, () => { run(); announce(part); }];
  }));
  const everything = () => Object.values(refresh).forEach((run) => run());
  let polling = null;
  const poll = () => {
    document.body.dataset.live = "polling";
    polling = polling || setInterval(everything, POLL_MS);
  };
  if (!window.EventSource) { poll(); return; }
  const seen = {};
  const listen = () => {
    let opened = false;  // a stream just (re)opened: what changed while none was open is unknown
    const source = new EventSource("/api/events");
    source.addEventListener("open", () => { opened = true; });
    source.addEventListener("versions", (event) => {
      document.body.dataset.live = "events";
      if (polling) { clearInterval(polling); polling = null; }
      const versions = JSON.parse(event.data);
      if (opened) everything();
      for (const [part, version] of Object.entries(versions)) {
        if (!opened && seen[part] !== version && refresh[part]) refresh[part]();
        seen[part] = version;
      }
      opened = false;
    });
    // The browser reconnects on its own after a dropped stream; a refused one (503, 401) is
    // final: poll, and ask for a stream again later (the server may have been restarting).
    source.addEventListener("error", () => {
      if (source.readyState !== EventSource.CLOSED) return;
      poll();
      setTimeout(listen, STREAM_AGAIN_MS);
    });
  };
  listen();
}
