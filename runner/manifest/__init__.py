"""Reading a manifest: the file composed into YAML nodes that keep their place (``document``),
the reader that checks them (``yamlnodes``), the top level and each item's fields (``fields``),
an item's image (``imagesource``), names safe as file names (``ids``), where each item's fields
are written (``places``), and the items they make (``reader``); a CSV or JSONL catalog's rows
read as items (``catalog``, ``rownodes``). Nothing here touches the network or the output
directory."""

from runner.manifest.reader import Item, Manifest, ManifestReading, load_manifest, read_manifest

__all__ = [
    "Item",
    "Manifest",
    "ManifestReading",
    "load_manifest",
    "read_manifest",
]
