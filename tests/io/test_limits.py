"""medtl.io.limits: what a child process is told."""

from __future__ import annotations

from medtl.io import limits


def test_environ_writes_an_override_in_force_over_the_environment(monkeypatch):
    monkeypatch.setenv("MEDTL_MAX_BYTES", "1GiB")
    monkeypatch.delenv("MEDTL_MAX_VOXELS", raising=False)
    assert limits.environ()["MEDTL_MAX_BYTES"] == "1GiB" and "MEDTL_MAX_VOXELS" not in limits.environ()
    with limits.override(max_voxels=1000):
        env = limits.environ()
        assert (env["MEDTL_MAX_BYTES"], env["MEDTL_MAX_VOXELS"]) == (str(2**30), "1000")
        assert limits.parse_size(env["MEDTL_MAX_FRAME_PIXELS"]) == limits.Limits().max_frame_pixels
    assert limits.environ()["MEDTL_MAX_BYTES"] == "1GiB"
