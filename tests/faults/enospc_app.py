"""``python app.py`` with an injected full disk, for machines where a small tmpfs cannot
be mounted: while the file named by ``ENOSPC_FLAG`` exists, every write of the localdisk
driver fails with ``ENOSPC``."""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import storage.localdisk as localdisk  # noqa: E402

FLAG = Path(os.environ["ENOSPC_FLAG"])
_write_all = localdisk.LocalDiskWriter._write_all


def _full_disk_write(self: localdisk.LocalDiskWriter, view: memoryview) -> None:
    if FLAG.exists():
        raise OSError(errno.ENOSPC, "No space left on device (injected)")
    _write_all(self, view)


localdisk.LocalDiskWriter._write_all = _full_disk_write  # type: ignore[method-assign]

if __name__ == "__main__":
    import app

    sys.exit(app.main(sys.argv[1:]))
