"""The results of a batch for people and machines, in its output directory.

``items.json`` (``snapshot``): the batch's items as the last run read them, written when a run
starts, so everything below can be made from the directory alone. ``results.jsonl`` and
``results.csv`` (``rows``: one row per item; ``files``: the two formats) and ``report.html``
(``sheet``: the contact sheet; ``posters``: its pictures under ``report/``), written at the end
of each run and by ``i2v-runner report DIR`` (``publish``). Every file goes through
``store.disk.write_if_changed``: whole, never through a link, and only when it changed.
"""

from runner.results.publish import (
    HTML_NAME,
    Published,
    publish,
    publish_run,
    report_directory,
    save_snapshot,
)
from runner.results.snapshot import SNAPSHOT_NAME

__all__ = [
    "HTML_NAME",
    "SNAPSHOT_NAME",
    "Published",
    "publish",
    "publish_run",
    "report_directory",
    "save_snapshot",
]
