"""The CSV/TensorBoard metric logger of training runs and reading its CSV back."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from medtl.train.logger import MetricLogger, read_history


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_metric_logger_writes_header_and_rows(tmp_path):
    path = tmp_path / "run" / "metrics.csv"
    with MetricLogger(path) as log:
        log.log(0, train_loss=0.9, val_auc=np.float32(0.5))
        assert read_rows(path)[-1][0] == "0"  # flushed before close
        log.log(1, train_loss=0.7, val_auc=0.6)
    rows = read_rows(path)
    assert rows[0] == ["epoch", "train_loss", "val_auc"]
    assert rows[1:] == [["0", "0.9", "0.5"], ["1", "0.7", "0.6"]]
    assert read_history(path) == [{"epoch": 0, "train_loss": 0.9, "val_auc": 0.5},
                                  {"epoch": 1, "train_loss": 0.7, "val_auc": 0.6}]


def test_metric_logger_fixed_columns_and_new_keys(tmp_path):
    path = tmp_path / "metrics.csv"
    log = MetricLogger(path, columns=["train_loss", "val_loss"])
    assert read_rows(path) == [["epoch", "train_loss", "val_loss"]]
    log.log(0, train_loss=1.0)
    log.log(1, train_loss=0.8, val_loss=0.9, lr=0.01)  # new key widens the header, nothing lost
    log.close()
    log.close()
    with pytest.raises(RuntimeError, match="closed"):
        log.log(2, train_loss=0.5)
    assert read_rows(path) == [["epoch", "train_loss", "val_loss", "lr"],
                               ["0", "1.0", "", ""], ["1", "0.8", "0.9", "0.01"]]
    assert math.isnan(read_history(path)[0]["val_loss"])


def test_metric_logger_resume_truncates_rerun_epochs(tmp_path):
    path = tmp_path / "metrics.csv"
    with MetricLogger(path) as log:
        for epoch in range(5):
            log.log(epoch, loss=1.0 / (epoch + 1))
    with MetricLogger(path, resume=True, start_epoch=3) as log:
        assert [r["epoch"] for r in log.history] == [0, 1, 2]
        log.log(3, loss=0.01)
    assert [r[0] for r in read_rows(path)] == ["epoch", "0", "1", "2", "3"]
    assert read_history(path)[-1]["loss"] == 0.01
    with MetricLogger(path, resume=True) as log:  # no start_epoch: keep everything
        log.log(4, loss=0.001)
    assert len(read_history(path)) == 5
    with MetricLogger(path) as log:  # not resuming: a fresh file
        log.log(0, loss=2.0)
    assert read_history(path) == [{"epoch": 0, "loss": 2.0}]


def test_metric_logger_writes_tensorboard_events(tmp_path):
    pytest.importorskip("tensorboard")
    with MetricLogger(tmp_path / "m.csv", tensorboard_dir=tmp_path / "tb") as log:
        log.log(0, loss=1.0, note="text is skipped")
    assert any(f.name.startswith("events.out.tfevents") for f in (tmp_path / "tb").iterdir())


def test_metric_logger_on_a_full_disk_names_its_file(tmp_path):
    import errno

    class FullDisk:
        def write(self, text):
            return len(text)

        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

        close = flush

    log = MetricLogger(tmp_path / "metrics.csv", ["loss"])
    log._file.close()
    log._file = FullDisk()
    for step in (lambda: log.log(0, loss=1.0), log.close):
        with pytest.raises(OSError) as info:
            step()
        assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(tmp_path / "metrics.csv"))
