"""The dashboard's stylesheet and its one script, both our own, served from /dashboard/.

They are served as files (not inline) so the Content-Security-Policy can say
`script-src 'self'; style-src 'self'` and allow nothing else. The script only
refreshes the figures: the page works without it.
"""

from __future__ import annotations

import hashlib

REFRESH_MS = 15_000

CSS = """\
:root { color-scheme: light; --ink: #1b1f24; --muted: #4a525c; --line: #d0d4da;
  --bad: #b3261e; --good: #11663a; --panel: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--ink); background: #fff; }
header.top { display: flex; flex-wrap: wrap; gap: .5rem 2rem; align-items: center;
  justify-content: space-between; padding: .75rem 1.5rem; border-bottom: 1px solid var(--line);
  background: var(--panel); }
header.top h1 { font-size: 1.35rem; margin: 0; }
form.controls, form.sign-out { display: flex; flex-wrap: wrap; gap: .5rem 1rem;
  align-items: center; margin: 0; }
main { padding: 1rem 1.5rem 3rem; max-width: 72rem; margin: 0 auto; }
button, select, input { font: inherit; }
button { padding: .3rem .9rem; border: 1px solid #6b7580; border-radius: 4px;
  background: #fff; cursor: pointer; }
button:focus-visible, select:focus-visible, input:focus-visible, summary:focus-visible {
  outline: 3px solid #1f5fa8; outline-offset: 2px; }
.period, .quiet, .none, .target { color: var(--muted); }
.refresh { min-height: 1.4em; color: var(--bad); margin: 0; }
section.channel, section.overview { border-top: 2px solid var(--line); margin-top: 1.5rem;
  padding-top: .5rem; }
h2 { font-size: 1.25rem; margin: .5rem 0 .25rem; }
h3 { font-size: 1.05rem; margin: 1.25rem 0 .4rem; }
dl.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(9rem, 1fr));
  gap: .5rem; margin: .75rem 0; }
dl.figures .figure { background: var(--panel); border-radius: 6px; padding: .5rem .75rem; }
dl.figures dt { font-size: .85rem; color: var(--muted); }
dl.figures dd { margin: 0; font-size: 1.35rem; font-weight: 600;
  font-variant-numeric: tabular-nums; }
figure.chart-box { margin: .5rem 0; }
svg.chart { width: 100%; max-width: 48rem; height: auto; display: block; }
ul.legend { list-style: none; display: flex; flex-wrap: wrap; gap: .25rem 1.25rem;
  padding: 0; margin: .25rem 0; font-size: .9rem; }
ul.legend li { display: flex; align-items: center; gap: .4rem; }
table { border-collapse: collapse; margin: .25rem 0; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: .3rem .9rem .3rem 0; border-bottom: 1px solid var(--line); }
thead th { font-size: .85rem; color: var(--muted); }
td.breached { color: var(--bad); font-weight: 600; }
td.ok { color: var(--good); }
details { margin: .25rem 0; }
main.sign-in { max-width: 28rem; margin-top: 3rem; }
main.sign-in form { display: grid; gap: .5rem; }
main.sign-in input { padding: .4rem; border: 1px solid #6b7580; border-radius: 4px; }
p.error { color: var(--bad); font-weight: 600; border-left: 4px solid var(--bad);
  padding-left: .6rem; }
"""

JS = """\
"use strict";
// helpline's dashboard: fetch the figures again every few seconds and swap them in place.
(function () {
  const main = document.getElementById("dashboard");
  if (!main || !main.dataset.figures) { return; }
  const every = Number(main.dataset.interval) || 15000;
  const status = document.getElementById("refresh-status");
  let busy = false;

  function say(text) {
    if (status && status.textContent !== text) { status.textContent = text; }
  }

  async function refresh() {
    if (busy || document.hidden) { return; }
    busy = true;
    try {
      const response = await fetch(main.dataset.figures, {
        credentials: "same-origin", cache: "no-store", headers: { "Accept": "text/html" },
      });
      if (response.status === 401) { window.location.reload(); return; }
      if (!response.ok) {
        say("Could not refresh the figures (HTTP " + response.status + "); retrying.");
        return;
      }
      const template = document.createElement("template");
      template.innerHTML = await response.text();
      const fresh = template.content.getElementById("figures");
      const current = document.getElementById("figures");
      if (!fresh || !current) { return; }
      for (const open of current.querySelectorAll("details[open][id]")) {
        const twin = fresh.querySelector("#" + CSS.escape(open.id));
        if (twin) { twin.open = true; }
      }
      current.replaceWith(fresh);
      say("");
    } catch (err) {
      say("Could not reach helpline to refresh the figures; retrying.");
    } finally {
      busy = false;
    }
  }

  window.setInterval(refresh, every);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) { refresh(); }
  });
})();
"""


def etag(text: str) -> str:
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:16] + '"'
