"""``kerma serve``'s process set-up (kerma.cli.serve): pyarrow kept out of the web process."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (the check is about what a new process imports)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_pandas_works_with_pyarrow_kept_out() -> None:
    """Kept out before pandas loads: pandas runs without it, strings and missing values
    behave as the dashboard expects, and a second call changes nothing."""
    out = run_python(
        """
        import sys
        from kerma.cli.serve import keep_pyarrow_out
        first = keep_pyarrow_out()
        import pandas as pd
        s = pd.Series(["ct", None, "dx"])
        frame = pd.DataFrame({"modality": s, "n": [1, 2, 3]})
        counts = frame.groupby("modality", dropna=False)["n"].sum().to_dict()
        print(first, keep_pyarrow_out(), sys.modules["pyarrow"], s.str.upper().tolist(), counts)
        """
    )
    assert out == "True False None ['CT', nan, 'DX'] {'ct': 1, 'dx': 3, nan: 2}"


def test_nothing_changes_once_pandas_is_loaded() -> None:
    """When pandas (and so pyarrow) is loaded already, the call leaves both as they are."""
    out = run_python(
        """
        import sys
        import pandas
        from kerma.cli.serve import keep_pyarrow_out
        print(keep_pyarrow_out(), sys.modules.get("pyarrow") is not None)
        """
    )
    assert out == "False True"
