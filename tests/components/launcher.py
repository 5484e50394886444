"""A stand-in for what KFP's launcher does around one step, so each step can be called directly
(`component.python_func`) on real `kfp.dsl` artifacts in seconds. A test aid, not evidence: the rules
are from kubeflow/pipelines backend/src/v2/component/launcher_v2.go (2.17):

- `executeV2` runs the user code with every output artifact at a *local* path (`LocalPathForURI`: for a
  gs:// URI, /gcs/...) and uploads each output to its remote URI only after the user code returned
  (`uploadOutputArtifacts`); until then nothing is at the URI.
- Input artifacts are downloaded from their URI to a local path before the user code starts
  (`downloadArtifacts`), and their metadata travels with them (the MLMD artifact).

Here the "remote" is a local folder (fast tests); tests/integration puts it on the GCS emulator.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

from kfp import dsl


class Launcher:
    def __init__(self, root: Path, remote: str | None = None):
        self.scratch = root / "scratch"  # the pod's local disk
        self.remote = remote or str(root / "remote")  # the pipeline root
        self._n = itertools.count()

    def output(self, cls: type = dsl.Artifact, name: str = "out") -> dsl.Artifact:
        """An output artifact: its URI under the pipeline root, its path on the pod's disk."""
        n = next(self._n)
        a = cls(name=name, uri=f"{self.remote}/{name}-{n}", metadata={})
        a.set_path(str(self.scratch / "outputs" / f"{name}-{n}"))
        return a

    def run(self, component, **kwargs):
        """Call the step's body as the launcher would: outputs absent at their URIs until it returns,
        then uploaded (a file or a folder, whichever the step wrote at the path)."""
        outputs = [v for v in kwargs.values() if isinstance(v, dsl.Artifact) and "outputs" in Path(v.path).parts]
        outputs += [a for v in kwargs.values() if isinstance(v, list) for a in v if isinstance(a, dsl.Artifact)
                    and "outputs" in Path(a.path).parts]  # fmt: skip
        for a in outputs:
            assert not _exists(a.uri), f"{a.uri} exists before the step ran"
        result = component.python_func(**kwargs)
        for a in outputs:
            _upload(Path(a.path), a.uri)
        return result

    def input(self, produced: dsl.Artifact) -> dsl.Artifact:
        """The artifact as a downstream step receives it: a fresh local copy of what is at its URI, at a
        local path that is a function of the URI (LocalPathForURI), the same in every pod."""
        a = type(produced)(name=produced.name, uri=produced.uri, metadata=dict(produced.metadata))
        local = self.scratch / "inputs" / produced.uri.lstrip("/")
        if local.is_dir():
            shutil.rmtree(local)
        _download(produced.uri, local)
        a.set_path(str(local))
        return a


def _exists(uri: str) -> bool:
    return Path(uri).exists()


def _upload(path: Path, uri: str) -> None:
    if path.is_dir():
        shutil.copytree(path, uri)
    elif path.exists():
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, uri)


def _download(uri: str, local: Path) -> None:
    if Path(uri).is_dir():
        shutil.copytree(uri, local)
    else:
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(uri, local)
