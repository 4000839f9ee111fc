"""Reading a manifest: YAML nodes that keep their place (``yamlnodes``), the top level and each
item's fields (``fields``), an item's image (``imagesource``), and the items they make
(``reader``). Nothing here touches the network or the output directory."""

from runner.manifest.imagesource import SUFFIX_WARNING
from runner.manifest.reader import Item, Manifest, ManifestReading, load_manifest, read_manifest

__all__ = [
    "SUFFIX_WARNING",
    "Item",
    "Manifest",
    "ManifestReading",
    "load_manifest",
    "read_manifest",
]
