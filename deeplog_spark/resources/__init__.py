"""Files shipped inside the package: the default config, the log4j settings and the embedded sample.

The checkout's ``conf/deeplog.toml``, ``conf/log4j2.properties`` and ``data/sample/`` are links to
these files, so a git checkout and an installed wheel read the same defaults. When the package is
imported from a zip (``spark-submit --py-files deeplog_spark.whl``), a file that Spark or the JVM
must open by path is copied once to a cache folder first.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from importlib import resources
from pathlib import Path

from deeplog_spark import __version__

#: Input paths of the default config that name the embedded sample (``data/sample/<file>``).
SAMPLE_PREFIX = "data/sample/"


def resource_path(name: str) -> Path | None:
    """A real file path for the packaged resource ``name`` (e.g. ``"deeplog.toml"``), or None.

    Returns the file itself when the package is installed as files, else a copy extracted to
    ``$TMPDIR/deeplog_spark-<version>-<content hash>/`` (keyed by content, so a rebuilt wheel of
    the same version never reads a stale copy; written atomically, so concurrent jobs may share it).
    """
    res = resources.files(__name__).joinpath(name)
    if not res.is_file():
        return None
    if isinstance(res, Path):
        return res
    data = res.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"deeplog_spark-{__version__}-{digest}" / name
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, out)
    return out


def sample_input(path: str) -> str:
    """``path`` itself, unless it is a relative ``data/sample/...`` path absent from the current
    directory (a wheel run outside a checkout): then the packaged copy of that sample file."""
    if not path.startswith(SAMPLE_PREFIX) or Path(path).exists():
        return path
    found = resource_path("sample/" + path[len(SAMPLE_PREFIX):])
    return str(found) if found is not None else path
