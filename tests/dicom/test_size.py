"""One water-equivalent-diameter algorithm (AAPM Report 220), whatever is installed."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from kerma.dicom.size import SEGMENTATION, patient_region, water_equivalent_diameter_from_hu


def water_phantom(diameter_mm: float = 250.0, spacing_mm: float = 0.8) -> np.ndarray:
    """Return an axial image (HU) of a water cylinder with a +200 HU table strip below it."""
    n = 512
    y, x = np.mgrid[:n, :n]
    centre = (n - 1) / 2
    radius = np.hypot((x - centre) * spacing_mm, (y - centre) * spacing_mm)
    hu = np.full((n, n), -1000.0)
    hu[radius <= diameter_mm / 2] = 0.0
    below = int(centre + diameter_mm / 2 / spacing_mm) + 10  # an air gap, then the table
    hu[below : below + 12, 60:450] = 200.0
    return hu


class TestWaterEquivalentDiameter:
    """Dw of synthetic water phantoms."""

    @pytest.mark.parametrize("diameter_mm", [160.0, 250.0, 320.0])
    def test_water_cylinder_measures_its_diameter(self, diameter_mm: float) -> None:
        """A water cylinder beside a table measures its own diameter ± 1 %, table left out."""
        dw = water_equivalent_diameter_from_hu(water_phantom(diameter_mm), (0.8, 0.8))
        assert dw == pytest.approx(diameter_mm, rel=0.01)

    def test_lung_hole_is_filled(self) -> None:
        """A -800 HU hole inside the body counts in the area (AAPM Report 220 contour)."""
        hu = water_phantom()
        hu[240:270, 240:270] = -800.0
        assert patient_region(hu)[255, 255]

    def test_method_names_the_one_segmentation(self) -> None:
        """The method text names the connected-region segmentation."""
        assert SEGMENTATION == "largest region above -400 HU, holes filled"

    def test_scipy_is_a_declared_dependency(self) -> None:
        """SciPy is a core dependency of the installed package, not an extra."""
        from importlib.metadata import requires

        core = [r for r in requires("kerma") or [] if "extra ==" not in r]
        assert any(r.lower().startswith("scipy") for r in core)

    def test_importing_kerma_dicom_does_not_import_scipy(self) -> None:
        """SciPy is imported where a size is measured, not when kerma.dicom is imported."""
        code = "import sys, kerma.dicom.extract, kerma.dicom.size; print('scipy' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.stdout.strip() == "False", out.stderr
