import os
import zlib
from pathlib import Path

import numpy as np
import pytest

DATA = Path(os.environ.get("PERSISTE_DATA_DIR", Path(__file__).resolve().parents[3] / "data"))
HARRIS = (DATA / "harris2022-plants30" / "harris2022_dated_tree.nwk",
          DATA / "harris2022-plants30" / "harris2022_pam.Rtab")
EFM = (DATA / "efm-clade-powerbacgwas" / "efm_clade.tree.nwk",
       DATA / "efm-clade-powerbacgwas" / "efm_clade.gene_presence_absence.Rtab.gz")
EFM_RESISTANCE = (Path(__file__).resolve().parents[1] / "persiste" / "data"
                  / "efm_resistance_genes.txt")

# data/harris2022-plants30/REFERENCE.md at gain 0.14, loss 0.35
HARRIS_REF = {
    "none": (-205361.7276424572, [-12.802627074919, -8.920948884983, -21.280171853575,
                                  -6.966540751921, -9.709389152363]),
    "present": (-201262.4335841910, [-12.605753861094, -8.724075671158, -21.083298639750,
                                     -6.769667538096, -9.512515938538]),
    "variable": (-201067.7062615576, [-12.596401862120, -8.714723672184, -21.073946640776,
                                      -6.760315539122, -9.503163939564]),
}
# data/efm-clade-powerbacgwas/REFERENCE.md at gain 32, loss 27
EFM_REF = {"none": -477505.6824325649, "present": -477505.6822940703,
           "variable": -477505.6793157684}


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name: reproducible, distinct per test."""
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


def cli(*args, status=0):
    """Runs `python -m persiste ARGS`: the exit status expected, never a
    traceback."""
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "persiste", *map(str, args)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == status, p.stderr
    assert "Traceback" not in p.stderr
    return p
