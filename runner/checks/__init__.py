"""The checks a batch passes before anything is spent: each image by its content (``images``),
each prompt (``prompts``), each input against its model's schema (``schema``), each item with
its findings placed at its fields (``items``), and the preflight that runs them all and plans the
run (``preflight``); its report is printed by ``render``. What a check finds is a
``runner.diagnostics.Diagnostic``."""
