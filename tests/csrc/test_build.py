"""The optional extension is loaded in one place and never breaks `import lowprec`."""

import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

PROBE = """
import sys
import lowprec
loaded_early = [m for m in ("lowprec._C", "lowprec._lowprec_C") if m in sys.modules]
reasons = lowprec.available(return_reason=True, device_type="cpu")
print(repr((loaded_early, reasons["cpu"], reasons["reference"])))
"""


def test_no_ext_switch_and_lazy_loading():
    """`import lowprec` loads no compiled code; LOWPREC_NO_EXT=1 turns the extension off
    and the cpu backend says why, while the reference stays available."""
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, "LOWPREC_NO_EXT": "1"}, check=True)
    loaded_early, cpu_reason, reference_reason = eval(  # noqa: S307 (our own repr)
        result.stdout.strip().splitlines()[-1])
    assert loaded_early == []
    assert "LOWPREC_NO_EXT=1" in cpu_reason
    assert reference_reason is None
