"""The self-contained HTML page of ``research-env view``: inline CSS and JS, no CDN, so the
file opens offline, in a CI artifact or attached to an issue.

The episodes travel as one JSON document inside ``<script type="application/json">``; the
script builds every token with ``textContent``, never ``innerHTML``, so a transcript is
data, not markup, whatever it contains. :func:`embed_json` escapes ``<``, ``>`` and ``&``
so that not even ``</script>`` in a retrieved document can end the data block early.

Each rendered episode counts its trained-token spans as it draws them and shows that
number (and sets ``data-trained``): what the reader sees is what was counted, which the
browser test compares with the loss mask.
"""

from __future__ import annotations

import html
import json
import math
import re
from typing import Any


def embed_json(data: Any) -> str:
    """JSON that is safe inside a ``<script>`` element (no ``</script>``, no ``<!--``) and
    valid (a non-finite number, which ``JSON.parse`` refuses, is written as null: the page
    shows "nan")."""
    text = json.dumps(finite(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def finite(data: Any) -> Any:
    """``data`` with every NaN or infinity (as Python's JSON reader accepts) made None."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, list):
        return [finite(v) for v in data]
    return data


def render_page(title: str, payload: dict[str, Any]) -> str:
    """The whole page for ``payload`` (``episodes``, ``roles``, ``page_size``, ``notes``)."""
    parts = {
        "TITLE": html.escape(title),
        "STYLE": STYLE,
        "SCRIPT": SCRIPT,
        "DATA": embed_json(payload),
    }
    # One pass: text substituted in (a title, the data) is never searched for placeholders.
    return re.sub(r"__(TITLE|STYLE|SCRIPT|DATA)__", lambda m: parts[m.group(1)], PAGE)


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>__TITLE__</title>
<style>__STYLE__</style>
</head>
<body>
<header>
  <h1>__TITLE__</h1>
  <p id="notes"></p>
  <div id="legend"></div>
  <form id="filters" onsubmit="return false">
    <label>EM <select id="filter-em"></select></label>
    <label>hops <select id="filter-hops"></select></label>
    <label>searches <select id="filter-searches"></select></label>
    <label>source <select id="filter-source"></select></label>
    <label>step <select id="filter-step"></select></label>
    <label>ended by <select id="filter-finish"></select></label>
    <span id="shown"></span>
    <button type="button" id="prev">&larr; previous</button>
    <span id="page"></span>
    <button type="button" id="next">next &rarr;</button>
  </form>
</header>
<main id="episodes"></main>
<script type="application/json" id="transcripts">__DATA__</script>
<script>__SCRIPT__</script>
</body>
</html>
"""

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d1d1f; background: #fafafa; }
header { position: sticky; top: 0; background: #fff; border-bottom: 1px solid #ddd;
  padding: 8px 16px; z-index: 1; }
h1 { font-size: 18px; margin: 0 0 4px; }
#notes { margin: 0 0 6px; color: #555; }
#filters label { margin-right: 10px; }
#shown, #page { margin: 0 8px; color: #555; }
.legend-item { display: inline-block; margin-right: 12px; }
main { padding: 8px 16px; }
.episode { background: #fff; border: 1px solid #ddd; border-radius: 6px; margin: 10px 0;
  padding: 8px 12px; }
.episode h2 { font-size: 15px; margin: 0 0 4px; }
.meta { color: #444; margin-bottom: 4px; }
.meta b { font-weight: 600; }
.leak { color: #b00020; font-weight: 700; }
.dropped { color: #8a5a00; font-weight: 600; }
.tokens { font: 13px/1.9 ui-monospace, Menlo, Consolas, monospace; white-space: pre-wrap;
  word-break: break-word; }
.tok { border-right: 1px solid rgba(0, 0, 0, 0.28); padding: 0 1px; border-radius: 2px; }
.tok.empty { color: #999; }
.tok.P { background: #e8e8e8; }
.tok.T { background: #b7e4c7; }
.tok.U { background: #ffd6a5; text-decoration: underline dotted #a05a00; }
.tok.R { background: #cfe1ff; color: #334; }
.tok.E { background: #f1d1f5; }
.tok.leaked { outline: 2px solid #b00020; }
.tok:hover { outline: 2px solid #222; }
details.prompt summary { cursor: pointer; color: #555; }
"""

SCRIPT = r"""
"use strict";
const DATA = JSON.parse(document.getElementById("transcripts").textContent);
const EPISODES = DATA.episodes;
const ROLES = DATA.roles;
const PAGE_SIZE = DATA.page_size;
const FILTERS = {
  em: ep => ep.em === undefined || ep.em === null ? "" : (Number(ep.em) >= 1 ? "1" : "0"),
  hops: ep => text(ep.hops),
  searches: ep => text(ep.searches),
  source: ep => text(ep.source),
  step: ep => text(ep.step),
  finish: ep => text(ep.finish_reason),
};
let page = 0;

function text(value) { return value === undefined || value === null ? "" : String(value); }
function fixed(value, digits) {  // null: a NaN or infinity in the transcript
  return value === undefined ? "n/a" : value === null ? "nan" : Number(value).toFixed(digits);
}
function el(tag, cls, content) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (content !== undefined) node.textContent = content;
  return node;
}

function fillFilter(name) {
  const select = document.getElementById("filter-" + name);
  const values = [...new Set(EPISODES.map(FILTERS[name]))].filter(v => v !== "");
  values.sort((a, b) => (isNaN(a) || isNaN(b)) ? a.localeCompare(b) : Number(a) - Number(b));
  select.append(new Option("any", ""));
  for (const v of values) select.append(new Option(v, v));
  select.disabled = values.length === 0;
  select.addEventListener("change", () => { page = 0; render(); });
}

function chosen() {
  const out = {};
  for (const name of Object.keys(FILTERS)) {
    out[name] = document.getElementById("filter-" + name).value;
  }
  return out;
}

function matches(ep, want) {
  return Object.keys(FILTERS).every(name => want[name] === "" || FILTERS[name](ep) === want[name]);
}

function evaluated(ep) {
  return ep.step === null || ep.step === undefined;
}

function roleName(ep, role) {
  return role === "T" && evaluated(ep) ? "generated (evaluation: not trained)" : ROLES[role];
}

function tokenSpan(ep, i, counts, leaks) {
  const role = ep.roles[i] || "E";
  counts[role] = (counts[role] || 0) + 1;
  const piece = ep.tokens[i];
  const cls = "tok " + role + (piece === "" ? " empty" : "") + (leaks.has(i - ep.prompt_len) ? " leaked" : "");
  const span = el("span", cls, piece === "" ? "\u2205" : piece);
  let tip = "token " + i + " \u00b7 id " + ep.ids[i] + " \u00b7 " + roleName(ep, role);
  const r = i - ep.prompt_len;
  if (r >= 0) {
    tip += "\nloss mask " + ep.loss_mask[r] + " \u00b7 sampling log-prob " + fixed(ep.logprobs[r], 4);
    if (ep.advantages) tip += " \u00b7 advantage " + fixed(ep.advantages[r], 4);
  }
  span.title = tip;
  return span;
}

function renderEpisode(ep) {
  const section = el("section", "episode");
  section.dataset.index = ep._index;
  const where = ep.source + (ep.step !== null && ep.step !== undefined ? " \u00b7 step " + ep.step : "");
  section.append(el("h2", null, "#" + ep._index + " \u00b7 " + where + " \u00b7 " + text(ep.question)));
  const meta = el("div", "meta");
  const field = (label, value) => {
    meta.append(el("b", null, label + " "), document.createTextNode(value + "   "));
  };
  field("reward", fixed(ep.reward, 3));
  field("ended by", text(ep.finish_reason) + (ep.termination && ep.termination !== ep.finish_reason ? " (" + ep.termination + ")" : ""));
  field("EM", fixed(ep.em, 0));
  field("F1", fixed(ep.f1, 2));
  field("hops", text(ep.hops) || "n/a");
  field("searches", text(ep.searches) || "n/a");
  field("prediction", JSON.stringify(text(ep.prediction)));
  field("gold", JSON.stringify(ep.golden_answers || []));
  const trained = el("span", "trained-count");
  // An evaluation trains nothing: its loss-mask-1 tokens are the policy's own, scored only.
  const label = evaluated(ep) ? "loss-mask-1 tokens (evaluation: not trained) " : "trained tokens ";
  meta.append(el("b", null, label), trained, document.createTextNode("   "));
  const roleCounts = el("span", "role-counts");
  meta.append(roleCounts);
  section.append(meta);

  const counts = {};
  const leaks = new Set(ep.leaks || []);
  const prompt = el("details", "prompt");
  const promptTokens = el("div", "tokens");
  const response = el("div", "tokens response");
  for (let i = 0; i < ep.tokens.length; i++) {
    (i < ep.prompt_len ? promptTokens : response).append(tokenSpan(ep, i, counts, leaks));
  }
  prompt.append(el("summary", null, "prompt (" + ep.prompt_len + " tokens)"), promptTokens);
  section.append(prompt, response);
  const nTrained = counts.T || 0;
  trained.textContent = String(nTrained);
  section.dataset.trained = String(nTrained);
  roleCounts.textContent = Object.keys(ROLES).map(r => roleName(ep, r) + " " + (counts[r] || 0)).join(" \u00b7 ");
  if (ep.dropped) {
    meta.append(el("span", "dropped", "  dropped before the update (a flat group): the loss never saw it"));
  }
  if (leaks.size) {
    meta.append(el("span", "leak", "  " + leaks.size + " observation token(s) have loss mask 1 (outlined)"));
  }
  return section;
}

function render() {
  const want = chosen();
  const shown = EPISODES.filter(ep => matches(ep, want));
  const pages = Math.max(1, Math.ceil(shown.length / PAGE_SIZE));
  page = Math.min(Math.max(page, 0), pages - 1);
  const main = document.getElementById("episodes");
  const fragment = document.createDocumentFragment();
  for (const ep of shown.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE)) {
    fragment.append(renderEpisode(ep));
  }
  main.replaceChildren(fragment);
  const counter = document.getElementById("shown");
  counter.textContent = shown.length + " of " + EPISODES.length + " episodes";
  counter.dataset.count = String(shown.length);
  document.getElementById("page").textContent = "page " + (page + 1) + " of " + pages;
  document.getElementById("prev").disabled = page === 0;
  document.getElementById("next").disabled = page >= pages - 1;
}

function legend() {
  const box = document.getElementById("legend");
  for (const [code, name] of Object.entries(ROLES)) {
    const item = el("span", "legend-item");
    item.append(el("span", "tok " + code, name));
    box.append(item);
  }
  box.append(el("span", null, "(hover a token: id, loss mask, sampling log-prob, advantage)"));
}

EPISODES.forEach((ep, i) => { ep._index = i; });
document.getElementById("notes").textContent = DATA.notes.join(" ");
legend();
Object.keys(FILTERS).forEach(fillFilter);
document.getElementById("prev").addEventListener("click", () => { page -= 1; render(); });
document.getElementById("next").addEventListener("click", () => { page += 1; render(); });
render();
"""
