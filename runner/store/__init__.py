"""What a run keeps on disk and reads back: the ledger (``ledger``), the plan for each item made
from it (``plan``), and the dollars already spent against the user's ``--budget`` (``budget``)."""
