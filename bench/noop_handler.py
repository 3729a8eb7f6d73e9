"""The no-op child-process handler of `make bench`: written with the Python helper, as a user
would, so the figure includes the helper's own work per job."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
import sluice_handler  # noqa: E402

if __name__ == "__main__":
    sluice_handler.run(lambda input, ctx: None)
