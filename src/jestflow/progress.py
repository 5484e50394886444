"""Progress-bar policy: on unless the caller says no or TQDM_DISABLE is set."""

import os


def show_progress(requested: bool = True) -> bool:
    return bool(requested) and os.environ.get("TQDM_DISABLE", "") in ("", "0")
