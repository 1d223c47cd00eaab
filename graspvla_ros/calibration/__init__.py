"""Camera calibration against GraspVLA's training viewpoints (pure core: no rclpy).

GraspVLA has no extrinsics input, so the real cameras must sit where it was trained to see.
`nominal` holds those viewpoints (calibration/nominal.yaml), `charuco` measures a camera's pose
from a ChArUco board, `handeye` turns board views with the board held by the gripper into
camera → base, `deviation` says how far off a camera is and which way to move it, `overlay`
scores a live image against the expected arm silhouette, `store` writes and reads
calibration/<camera>.yaml.
"""
