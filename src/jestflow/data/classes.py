"""An evaluation split's zero-shot classes: ``classes.json`` beside its shards and each sample's
metadata `label`. One rule for `jestflow data check` and evaluation, so a split the check passes is
one evaluation accepts."""

from __future__ import annotations

from dataclasses import dataclass

from .. import storage
from .shards import Sample


@dataclass(frozen=True)
class Classes:
    """The class names and prompt templates of ``classes.json`` (`uri`)."""

    uri: str
    names: list
    templates: list


def read_classes(split_uri: str) -> Classes | None:
    """The split's ``classes.json``, or None when it has none (zero-shot is then skipped).

    It must hold non-empty ``classes`` and ``templates`` lists, every template with a ``{}`` where the
    class name goes; anything else is a ValueError naming the file."""
    uri = storage.join(split_uri, "classes.json")
    if not storage.exists(uri):
        return None
    d = storage.read_json(uri)
    if not isinstance(d, dict) or not d.get("classes") or not d.get("templates"):
        raise ValueError(f"{uri}: needs non-empty 'classes' and 'templates' lists")
    if not isinstance(d["classes"], list) or not isinstance(d["templates"], list):
        raise ValueError(f"{uri}: 'classes' and 'templates' must be lists")
    if any(not isinstance(t, str) or "{}" not in t for t in d["templates"]):
        raise ValueError(f"{uri}: every template needs a '{{}}' placeholder")
    return Classes(uri, list(d["classes"]), list(d["templates"]))


def label_of(sample: Sample, classes: Classes | None) -> int:
    """A sample's class index from its metadata `label`: an integer in [0, len(classes)), or absent (-1).
    Anything else would give a wrong zero-shot accuracy without a word, so it fails naming the uid."""
    if "label" not in sample.meta:
        return -1
    label = sample.meta["label"]
    if not isinstance(label, int) or isinstance(label, bool):
        raise ValueError(f"evaluation sample {sample.uid}: label {label!r} is not an integer class index")
    if classes is None:
        return label  # no zero-shot without classes.json; the label is not used
    if not 0 <= label < len(classes.names):
        n = len(classes.names)
        raise ValueError(
            f"evaluation sample {sample.uid}: label {label} is not a class index of {classes.uri} "
            f"({n} classes: 0..{n - 1})"
        )
    return label
