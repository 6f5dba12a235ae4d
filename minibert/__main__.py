"""`python -m minibert`: the `minibert` command."""

import importlib.util
import sys
from pathlib import Path


def _load_this_package():
    """Make `minibert` the package this file belongs to.

    `python -m minibert` looks in the current directory first. There, a folder named minibert/
    without an __init__.py (a clone of this repository, say) is taken for a namespace package,
    and this file, found through an editable install, runs without minibert/__init__.py ever
    running. Then the package is loaded from this file's own folder instead.
    """
    package = sys.modules.get("minibert")
    if package is not None and getattr(package, "__file__", None) is not None:
        return  # the real package: the usual case
    here = Path(__file__).resolve().parent
    for name in [name for name in sys.modules if name.startswith("minibert.")]:
        del sys.modules[name]
    spec = importlib.util.spec_from_file_location("minibert", here / "__init__.py",
                                                  submodule_search_locations=[str(here)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["minibert"] = package
    spec.loader.exec_module(package)


_load_this_package()

from minibert.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
