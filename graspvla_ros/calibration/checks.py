"""Set-up check of one camera's calibration (`graspvla doctor`): calibration/<camera>.yaml exists,
holds a measured pose, and that pose is within tolerance of GraspVLA's training viewpoint."""
from __future__ import annotations

from pathlib import Path

from graspvla_ros.calibration.deviation import Thresholds, deviation
from graspvla_ros.calibration.nominal import CALIBRATION_DIR, NOMINAL_PATH, load_nominal
from graspvla_ros.calibration.store import calibration_path, load_calibration
from graspvla_ros.checks import Check, fail, ok


def calibration_check(camera: str, directory: Path | str = CALIBRATION_DIR, thresholds: Thresholds = Thresholds(),
                      nominal_path: Path | str = NOMINAL_PATH) -> Check:
    name = f"{camera} calibration"
    measure = (f"measure the {camera} camera: graspvla calibrate board --images DIR --poses DIR/poses.yaml "
               f"--camera {camera} (calibration/README.md)")
    path = calibration_path(camera, directory)
    if not path.exists():
        return fail(name, f"{path} does not exist", measure)
    try:
        cal = load_calibration(path)
    except ValueError as err:
        return fail(name, str(err), measure)
    if cal.pose is None:
        return fail(name, f"{path} holds no measured pose", measure)
    d = deviation(load_nominal(nominal_path).camera(camera), cal.pose, cal.intrinsics, thresholds)
    what = (f"{d.translation_mm:.1f} mm and {d.rotation_deg:.2f}° from the training viewpoint (limits "
            f"{thresholds.translation_mm:g} mm, {thresholds.rotation_deg:g}°; {path.name} of {cal.date})")
    if d.passed:
        return ok(name, what)
    steps = d.advice()
    fix = (f"{', then '.join(steps)} (left/right as seen from behind the camera), and re-measure (calibration/README.md)"
           if steps else "use a camera with a wider field of view and calibrate it (calibration/README.md)")
    return fail(name, f"{what}: {'; '.join(d.problems)}", fix)
