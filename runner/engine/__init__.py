"""Carrying a batch out: the scheduler that keeps the in-flight cap full, when to poll
(``policy``), what to do after each answer (``decisions``), and finding a create whose answer
was lost (``reconcile``)."""
