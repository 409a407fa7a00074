"""Calibration proved on rendered ground truth: a ChArUco board textured into a MuJoCo scene
(sim/calibration_board.xml), whose cameras' true intrinsics (fovy, image size) and true poses
(the model) are known. The images go through files and ``robot-policy calibrate ...`` exactly as
a user's would. Tolerances: focal length 0.5 %, principal point 1 px, hand-eye 2 mm and 0.2 deg."""

from __future__ import annotations

import json

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("mujoco")

from robot_policy.calibration.ground_truth import (  # noqa: E402
    DEFAULT_BOARD,
    check_hand_eye,
    pose_errors,
    wrist_views,
)
from robot_policy.calibration.hand_eye import write_pose  # noqa: E402
from robot_policy.calibration.results import read_result  # noqa: E402
from robot_policy.calibration.synthetic import BoardScene, look_at  # noqa: E402
from robot_policy.camera_model import invert_pose, load_intrinsics  # noqa: E402
from robot_policy.cli.main import main  # noqa: E402

W, H = 640, 480


@pytest.fixture(scope="module")
def scene():
    s = BoardScene(DEFAULT_BOARD, W, H)
    yield s
    s.close()


@pytest.fixture(scope="module")
def board_yaml(tmp_path_factory):
    import yaml

    p = tmp_path_factory.mktemp("board") / "board.yaml"
    p.write_text(yaml.safe_dump(DEFAULT_BOARD.to_dict()))
    return p


def save(folder, views) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, img, T_base_gripper in views:
        cv2.imwrite(str(folder / name), img[..., ::-1])  # PNG: lossless
        write_pose(folder / name.replace(".png", ".json"), T_base_gripper)


def test_pixel_centre_convention_is_opencvs(scene):
    # With the true pose, corners project where they are detected only with cx = (W - 1) / 2.
    from robot_policy.calibration.detect import BoardDetector

    scene.set_body_pose(
        "gripper",
        scene.gripper_pose_for(look_at(scene.board_center() + [0.05, 0.03, 0.4], scene.board_center())),
    )
    det = BoardDetector(DEFAULT_BOARD).detect(scene.render("wrist"))
    T_cam_board = invert_pose(scene.camera_pose("wrist")) @ scene.board_pose()
    K = scene.intrinsics("wrist").K
    assert (K[0, 2], K[1, 2]) == ((W - 1) / 2, (H - 1) / 2)
    errs = {}
    for name, shift in (("opencv (W-1)/2", 0.0), ("W/2", 0.5)):
        Ks = K.copy()
        Ks[:2, 2] += shift
        rvec, _ = cv2.Rodrigues(T_cam_board[:3, :3])
        proj, _ = cv2.projectPoints(det.object_points.astype(float), rvec, T_cam_board[:3, 3], Ks, None)
        errs[name] = float(np.sqrt(np.mean((proj.reshape(-1, 2) - det.corners) ** 2)))
    print(f"\nreprojection with the true pose: {errs}")
    assert errs["opencv (W-1)/2"] < 0.15 < errs["W/2"], errs


def test_intrinsics_from_rendered_views_via_the_cli(scene, board_yaml, tmp_path):
    views = wrist_views(scene, 20, seed=0)
    # Views that must be rejected: two blurred copies and one with the board out of sight.
    views.append(("blurred_a.png", cv2.GaussianBlur(views[0][1], (0, 0), 3.0), views[0][2]))
    views.append(("blurred_b.png", cv2.GaussianBlur(views[1][1], (0, 0), 3.5), views[1][2]))
    away = look_at(scene.board_center() + [0.0, 0.0, 0.4], scene.board_center() + [0.0, 2.0, 0.4])
    scene.set_body_pose("gripper", scene.gripper_pose_for(away))
    views.append(("no_board.png", scene.render("wrist"), scene.body_pose("gripper")))
    save(tmp_path / "shots", views)

    out = tmp_path / "wrist_intrinsics.json"
    cmd = ["calibrate", "intrinsics", "--images", str(tmp_path / "shots"), "--board", str(board_yaml)]
    assert main([*cmd, "--out", str(out), "--camera", "wrist"]) == 0
    doc = read_result(out, "intrinsics")
    for key in (
        "K",
        "dist",
        "rms",
        "image_size",
        "views_used",
        "views_rejected",
        "date",
        "data",
        "residuals",
    ):
        assert key in doc
    assert doc["image_size"] == [W, H] and len(doc["views_used"]) == 20
    rejected = {r["view"]: r["reason"] for r in doc["views_rejected"]}
    assert set(rejected) == {"blurred_a.png", "blurred_b.png", "no_board.png"}
    assert rejected["no_board.png"].startswith("board not found")
    assert all(
        rejected[v].startswith(("blurred", "board not found")) for v in ("blurred_a.png", "blurred_b.png")
    )
    assert any(rejected[v].startswith("blurred") for v in ("blurred_a.png", "blurred_b.png"))

    got, truth = load_intrinsics(out), scene.intrinsics("wrist")
    f_err = (abs(got.fx / truth.fx - 1), abs(got.fy / truth.fy - 1))
    pp_err = (abs(got.cx - truth.cx), abs(got.cy - truth.cy))
    print(
        f"\nintrinsics on ground truth: focal {100 * max(f_err):.3f} %, principal point {max(pp_err):.2f} px, rms {doc['rms']:.3f} px"
    )
    assert max(f_err) < 0.005 and max(pp_err) < 1.0
    assert doc["rms"] < 0.2


def test_hand_eye_eye_in_hand_via_the_cli(scene, board_yaml, tmp_path):
    views = wrist_views(scene, 16, seed=1)
    save(tmp_path / "shots", views)
    intr = tmp_path / "wrist_intrinsics.json"
    assert (
        main(
            [
                "calibrate",
                "intrinsics",
                "--images",
                str(tmp_path / "shots"),
                "--board",
                str(board_yaml),
                "--out",
                str(intr),
            ]
        )
        == 0
    )
    out = tmp_path / "wrist_hand_eye.json"
    cmd = ["calibrate", "hand-eye", "--images", str(tmp_path / "shots"), "--board", str(board_yaml)]
    assert main([*cmd, "--intrinsics", str(intr), "--mount", "eye-in-hand", "--out", str(out)]) == 0
    doc = read_result(out, "hand_eye")
    assert doc["setup"] == "eye_in_hand" and doc["method"] == "park" and len(doc["views_used"]) == 16
    err = pose_errors(np.asarray(doc["T_gripper_cam"]), scene.camera_in_body("wrist"))
    print(
        f"\neye-in-hand on ground truth: {err['translation_err_mm']:.2f} mm, {err['rotation_err_deg']:.3f} deg"
    )
    assert err["translation_err_mm"] < 2.0 and err["rotation_err_deg"] < 0.2
    # The residuals tell a user the same story without knowing the truth.
    assert doc["residuals"]["translation_rms_mm"] < 1.0 and doc["residuals"]["reprojection_rms_px"] < 0.3


def test_hand_eye_eye_to_hand_with_the_robot_world_solver():
    err = check_hand_eye("eye_to_hand", n_views=16, seed=2, method="shah")
    print(
        f"\neye-to-hand on ground truth: {err['translation_err_mm']:.2f} mm, {err['rotation_err_deg']:.3f} deg"
    )
    assert err["views"] == 16
    assert err["translation_err_mm"] < 2.0 and err["rotation_err_deg"] < 0.2


def test_hand_eye_needs_a_pose_beside_every_image(scene, board_yaml, tmp_path, capsys):
    views = wrist_views(scene, 3, seed=3)
    save(tmp_path / "shots", views)
    (tmp_path / "shots" / "view_001.json").unlink()
    intr = tmp_path / "i.json"
    intr.write_text(
        json.dumps({"K": scene.intrinsics("wrist").K.tolist(), "dist": [0] * 5, "image_size": [W, H]})
    )
    cmd = ["calibrate", "hand-eye", "--images", str(tmp_path / "shots"), "--board", str(board_yaml)]
    assert main([*cmd, "--intrinsics", str(intr), "--out", str(tmp_path / "he.json")]) == 1
    assert "view_001.png has no arm pose: expected" in capsys.readouterr().err
    assert not (tmp_path / "he.json").exists()
