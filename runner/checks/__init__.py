"""The checks a batch passes before anything is spent: each image by its content (``images``),
each prompt (``prompts``), each input against its model's schema (``schema``), and the preflight
that runs them all and reports what it found as ``Diagnostic`` s (``diagnostics``)."""
