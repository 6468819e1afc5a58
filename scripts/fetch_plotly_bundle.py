"""Fetch plotly's basic partial bundle (plotly.js-basic-dist-min 4.1.1, MIT) from the npm registry into
src/seglab/reporting/assets/, checked against its SHA-256; `make install` runs it. Reports inline it (1.2 MB)
instead of plotly's full 4.8 MB bundle, and fall back to the full one when it is absent."""
import hashlib
import io
import os
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

URL = "https://registry.npmjs.org/plotly.js-basic-dist-min/-/plotly.js-basic-dist-min-4.1.1.tgz"
SHA256 = "99784e3abfb07b142a15e521a439e6d9addceadb3f79553fd24c72774f0649ba"  # of plotly-basic.min.js
TARGET = Path(__file__).resolve().parents[1] / "src" / "seglab" / "reporting" / "assets" / "plotly-basic.min.js"


def main() -> int:
    if TARGET.is_file() and hashlib.sha256(TARGET.read_bytes()).hexdigest() == SHA256:
        return 0
    try:
        with urllib.request.urlopen(URL, timeout=60) as r:
            archive = r.read()
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            data = tar.extractfile("package/plotly-basic.min.js").read()  # type: ignore[union-attr]
    except Exception as exc:  # offline: the reports use plotly's full bundle instead
        print(f"warning: could not fetch {URL} ({exc}); reports will inline plotly's full bundle", file=sys.stderr)
        return 0
    if hashlib.sha256(data).hexdigest() != SHA256:
        print(f"error: {URL}: plotly-basic.min.js does not have the expected SHA-256; not installed", file=sys.stderr)
        return 1
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=TARGET.parent, prefix=".plotly-basic.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, TARGET)
    return 0


if __name__ == "__main__":
    sys.exit(main())
