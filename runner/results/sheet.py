"""``report.html``: the contact sheet of a batch, one card per item (pure).

The page opens from disk with no server and no network: one file with its style and a few
lines of script inline, and relative links to the videos beside it and to the pictures under
``report/``, so the folder can be copied or served as it is. Everything that comes from the
manifest, the ledger or the server (ids, prompts, errors, meta, URLs) is escaped; a remote
image is shown only from an http(s) URL. A Content-Security-Policy lets no script run but the
page's own (by its hash), should anything ever slip through.

The filter is the address's fragment: ``report.html#failed`` shows the failed items only
(``#done``, ``#pending``, ``#running``; ``#all`` or none: every item).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from html import escape
from urllib.parse import quote, urlsplit

from runner.money import usd
from runner.results.rows import STATUSES, Row, Totals


@dataclass(frozen=True)
class Media:
    """What a card shows of an item: relative URLs of the files that exist, or why not."""

    video: str | None = None  # the video beside report.html, if it is on disk
    poster: str | None = None  # its poster frame under report/posters/
    poster_note: str | None = None  # why there is no poster ("no preview: ...")
    image: str | None = None  # the input's picture under report/inputs/, or an http(s) URL
    image_note: str | None = None  # why there is no input picture


_SCRIPT = """(function () {
  var states = ["done", "failed", "pending", "running"];
  function show() {
    var want = location.hash.slice(1);
    if (states.indexOf(want) < 0) want = "";
    document.querySelectorAll("article.card").forEach(function (card) {
      card.hidden = want !== "" && card.getAttribute("data-status") !== want;
    });
    document.querySelectorAll("nav.filter a").forEach(function (link) {
      link.classList.toggle("on", link.getAttribute("href") === "#" + (want || "all"));
    });
  }
  window.addEventListener("hashchange", show);
  show();
})();"""

_STYLE = """
:root { color-scheme: light dark; --line: #8884; --muted: #888; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5rem 2rem; }
header { position: sticky; top: 0; background: Canvas; padding: .8rem 0; z-index: 1;
  border-bottom: 1px solid var(--line); }
h1 { font-size: 1.3rem; margin: 0 0 .4rem; }
dl.totals { display: flex; flex-wrap: wrap; gap: .3rem 1.4rem; margin: 0 0 .5rem; }
dl.totals div { display: flex; gap: .35rem; } dl.totals dt { color: var(--muted); }
dl.totals dd { margin: 0; font-weight: 600; }
nav.filter a { margin-right: .8rem; text-decoration: none; }
nav.filter a.on { font-weight: 700; text-decoration: underline; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr));
  gap: 1rem; margin-top: 1rem; }
article.card { border: 1px solid var(--line); border-radius: 8px; padding: .6rem;
  border-top: 4px solid var(--muted); overflow-wrap: anywhere; }
article.card[hidden] { display: none; }
article.status-done { border-top-color: #2a2; } article.status-failed { border-top-color: #d33; }
article.status-running { border-top-color: #d90; }
.media { display: grid; grid-template-columns: 1fr 2fr; gap: .4rem; align-items: start; }
.media img, .media video { width: 100%; border-radius: 4px; background: #0002; }
.none { display: flex; align-items: center; justify-content: center; min-height: 5rem;
  color: var(--muted); background: #0001; border-radius: 4px; text-align: center;
  font-size: .85em; padding: .3rem; }
h2 { font-size: 1rem; margin: .5rem 0 .2rem; } .badge { font-size: .8em; color: var(--muted); }
p.prompt { margin: .2rem 0 .4rem; }
dl.facts { display: grid; grid-template-columns: auto 1fr; gap: .1rem .6rem; margin: 0;
  font-size: .9em; } dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; }
p.error { color: #d33; margin: .4rem 0 0; }
pre.meta { font-size: .8em; white-space: pre-wrap; margin: .2rem 0 0; }
"""


def script_hash() -> str:
    """The CSP source of the page's one script: ``'sha256-<base64>'``."""
    digest = hashlib.sha256(_SCRIPT.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def remote_image(url: str) -> str | None:
    """``url`` if it may be shown as an image: http or https with a host; else None (no
    ``javascript:``, ``data:`` or ``file:`` URL ever reaches the page)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme.lower() in ("http", "https") and parts.hostname else None


def local_url(name: str) -> str:
    """A relative URL of a file under the output directory, each path segment escaped."""
    return "/".join(quote(part, safe="") for part in name.split("/"))


def render_sheet(batch: str, rows: Sequence[Row], media: Sequence[Media], sums: Totals) -> str:
    """The whole page: the totals and the filter at the top, then a card per row, in order.
    ``media[i]`` is what the card of ``rows[i]`` shows."""
    csp = (
        "default-src 'none'; img-src * data:; media-src *; style-src 'unsafe-inline'; "
        f"script-src {script_hash()}; base-uri 'none'; form-action 'none'"
    )
    cards = "\n".join(_card(row, shown) for row, shown in zip(rows, media, strict=True))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{escape(csp)}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(batch)}: contact sheet</title>
<style>{_STYLE}</style>
</head>
<body>
<header>
<h1>batch {escape(batch)}</h1>
{_totals(sums)}
{_filter(sums)}
</header>
<main id="cards">
{cards}
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def _totals(sums: Totals) -> str:
    counts = sums.counts
    parts = [f'<div><dt>items</dt><dd data-count="total">{counts["total"]}</dd></div>']
    parts += [
        f'<div><dt>{name}</dt><dd data-count="{name}">{counts[name]}</dd></div>'
        for name in STATUSES
    ]
    parts.append(
        f'<div><dt>spent</dt><dd data-cost-usd="{sums.cost_usd}">{_money(sums.cost_usd)}</dd></div>'
    )
    return f'<dl class="totals" id="totals">{"".join(parts)}</dl>'


def _filter(sums: Totals) -> str:
    links = [f'<a href="#all">all ({sums.counts["total"]})</a>']
    links += [f'<a href="#{name}">{name} ({sums.counts[name]})</a>' for name in STATUSES]
    return f'<nav class="filter">show: {" ".join(links)}</nav>'


def _card(row: Row, media: Media) -> str:
    item = row.item
    status = row.status if row.status in STATUSES else "running"
    facts = [
        ("model", item.model),
        ("status", row.status),
        ("prediction", row.prediction_id or "none"),
        ("run time", "" if row.predict_time is None else f"{row.predict_time:.1f} s"),
        ("cost", _money(row.cost)),
    ]
    if row.duplicate_of:
        facts.append(("same video as", row.duplicate_of))
    if item.image and not media.image:
        facts.append(("image", item.image))
    listed = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts if v)
    error = ""
    if row.error:
        code = f"[{row.error_code}] " if row.error_code else ""
        error = f'<p class="error">{escape(code + row.error)}</p>'
    meta = ""
    if item.meta is not None:
        text = json.dumps(dict(item.meta), ensure_ascii=False, indent=1)
        meta = f'<details><summary>meta</summary><pre class="meta">{escape(text)}</pre></details>'
    return (
        f'<article class="card status-{status}" id="item-{escape(item.id)}" '
        f'data-status="{status}" data-id="{escape(item.id)}">\n'
        f'<div class="media">{_image(row, media)}{_video(row, media)}</div>\n'
        f'<h2>{escape(item.id)} <span class="badge">{escape(row.status)}</span></h2>\n'
        f'<p class="prompt">{escape(item.prompt)}</p>\n'
        f'<dl class="facts">{listed}</dl>{error}{meta}\n'
        "</article>"
    )


def _image(row: Row, media: Media) -> str:
    if media.image is None:
        note = media.image_note or "no input picture"
        return f'<div class="none">{escape(note)}</div>'
    alt = f"input image of {row.item.id}"
    return (
        f'<img src="{escape(media.image)}" alt="{escape(alt)}" loading="lazy" '
        'referrerpolicy="no-referrer">'
    )


def _video(row: Row, media: Media) -> str:
    if media.video is None:
        note = "video not on disk" if row.status == "done" else f"no video ({row.status})"
        return f'<div class="none">{escape(note)}</div>'
    poster = f' poster="{escape(media.poster)}"' if media.poster else ""
    title = f' title="{escape(media.poster_note)}"' if media.poster_note else ""
    video = f'<video controls preload="none"{poster}{title} src="{escape(media.video)}"></video>'
    if media.poster:
        return video
    return f'<div>{video}<div class="none">{escape(media.poster_note or "no preview")}</div></div>'


def _money(amount: Decimal | float | None) -> str:
    value = usd(amount)
    return "" if value is None else f"${value:.2f}"
