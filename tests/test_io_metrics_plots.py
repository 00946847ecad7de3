"""Atomic files, metric logging (jsonl + TensorBoard event files) and the PNG figures."""

from __future__ import annotations

import glob
import json
import os
import struct
from pathlib import Path

import jax
import numpy as np
import pytest
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c

from elbo_jax import io, metrics, plots


def _listdir(path):
  return sorted(os.listdir(path))


# --- io -------------------------------------------------------------------------------------------


def test_write_json_atomic_round_trip_and_numpy_values(tmp_path):
  path = tmp_path / "r.json"
  io.write_json_atomic(path, {"a": np.float32(1.5), "b": np.arange(3), "c": [1, "x"]})
  assert io.read_json(path) == {"a": 1.5, "b": [0, 1, 2], "c": [1, "x"]}
  assert _listdir(tmp_path) == ["r.json"]
  (tmp_path / "plain").write_text("")  # atomic files get the permissions a plain open() gives
  assert os.stat(path).st_mode == os.stat(tmp_path / "plain").st_mode


def test_failed_json_write_keeps_old_file_and_no_temp(tmp_path):
  path = tmp_path / "r.json"
  io.write_json_atomic(path, {"v": 1})
  # The unserialisable value comes after serialisable ones, so the failure happens mid-stream.
  with pytest.raises(TypeError):
    io.write_json_atomic(path, {"a": list(range(1000)), "z": object()})
  assert io.read_json(path) == {"v": 1}
  assert _listdir(tmp_path) == ["r.json"]


def test_failed_text_write_keeps_old_file(tmp_path):
  path = tmp_path / "t.txt"
  io.write_text_atomic(path, "old")
  with pytest.raises(RuntimeError), io.atomic_writer(path) as f:
    f.write("new, half-written")
    raise RuntimeError("killed")
  assert path.read_text() == "old"
  assert _listdir(tmp_path) == ["t.txt"]


def test_read_json_errors_name_the_path(tmp_path):
  missing = tmp_path / "missing.json"
  with pytest.raises(FileNotFoundError, match="missing.json"):
    io.read_json(missing)
  corrupt = tmp_path / "corrupt.json"
  corrupt.write_text('{"a": 1')
  with pytest.raises(ValueError, match="corrupt.json"):
    io.read_json(corrupt)


def test_append_jsonl_repairs_a_truncated_tail(tmp_path):
  path = tmp_path / "m.jsonl"
  io.append_jsonl(path, {"step": 1})
  with open(path, "a") as f:
    f.write('{"step": 2, "x"')  # a write interrupted by a kill
  assert io.read_jsonl(path) == [{"step": 1}]
  io.append_jsonl(path, {"step": 3})  # the resumed run
  assert io.read_jsonl(path) == [{"step": 1}, {"step": 3}]
  with open(path, "a") as f:
    f.write('{"step": 4}')  # complete record without its newline: kept
  io.append_jsonl(path, {"step": 5})
  assert [r["step"] for r in io.read_jsonl(path)] == [1, 3, 4, 5]


def test_read_jsonl_raises_on_corruption_before_the_last_line(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
  with pytest.raises(ValueError, match="m.jsonl:2"):
    io.read_jsonl(path)


# --- metrics --------------------------------------------------------------------------------------


def _read_tfrecords(path):
  """Parses TFRecord framing (len u64, crc u32, data, crc u32), checking both masked CRCs."""
  data = Path(path).read_bytes()
  records, pos = [], 0
  while pos < len(data):
    header = data[pos:pos + 8]
    (length,) = struct.unpack("<Q", header)
    assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == masked_crc32c(header)
    body = data[pos + 12:pos + 12 + length]
    assert struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] == masked_crc32c(body)
    records.append(body)
    pos += 16 + length
  return records


def test_metric_writer_jsonl_and_tensorboard(tmp_path):
  with metrics.MetricWriter(tmp_path) as writer:
    writer.write_scalars(0, {"train/elbo": np.float32(-200.5), "train/kl": 10})
    writer.write_scalars(100, {"train/elbo": jax.numpy.asarray(-120.25), "eval/nll_k5000": 95.0})
    writer.flush()
  records = metrics.read_metrics(tmp_path)
  assert records == [
      {"step": 0, "train/elbo": -200.5, "train/kl": 10.0},
      {"step": 100, "train/elbo": -120.25, "eval/nll_k5000": 95.0},
  ]
  assert all(isinstance(r["step"], int) for r in records)

  (event_file,) = glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
  scalars = []
  for body in _read_tfrecords(event_file):
    event = event_pb2.Event.FromString(body)
    scalars += [(event.step, v.tag, v.simple_value) for v in event.summary.value]
  assert sorted(scalars) == sorted([
      (0, "train/elbo", -200.5), (0, "train/kl", 10.0),
      (100, "train/elbo", -120.25), (100, "eval/nll_k5000", 95.0),
  ])


def test_resumed_metric_writer_tells_tensorboard_to_hide_the_steps_it_logs_again(tmp_path):
  # A run resumed from a checkpoint at step 20 logs step 30 again; TensorBoard drops the older
  # events from step purge_step = 21 on when it meets this START marker.
  with metrics.MetricWriter(tmp_path, purge_step=21) as writer:
    writer.write_scalars(30, {"train/elbo": -31.0})
  (event_file,) = glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
  events = [event_pb2.Event.FromString(b) for b in _read_tfrecords(event_file)]
  starts = [e.step for e in events
            if e.HasField("session_log") and e.session_log.status == event_pb2.SessionLog.START]
  assert starts == [21]
  assert [e.step for e in events if e.summary.value] == [30]


def test_read_metrics_skips_truncated_last_line(tmp_path):
  lines = [json.dumps({"step": s, "train/elbo": -float(s)}) for s in range(3)]
  (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 3, "train/el')
  assert [r["step"] for r in metrics.read_metrics(tmp_path)] == [0, 1, 2]


def test_metric_writer_is_a_no_op_when_disabled_or_not_process_zero(tmp_path, monkeypatch):
  disabled = metrics.MetricWriter(tmp_path / "off", enabled=False)
  disabled.write_scalars(0, {"train/elbo": 1.0})
  disabled.close()
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  other_host = metrics.MetricWriter(tmp_path / "host1")
  other_host.write_scalars(0, {"train/elbo": 1.0})
  other_host.close()
  assert _listdir(tmp_path) == []


# --- plots ----------------------------------------------------------------------------------------


def _png_size(path):
  """(width, height) from the PNG IHDR chunk."""
  data = Path(path).read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
  return struct.unpack(">II", data[16:24])


def test_image_grid_gray_and_rgb(tmp_path):
  rng = np.random.default_rng(0)
  gray = plots.image_grid(rng.uniform(-0.5, 1.5, (16, 28, 28, 1)), tmp_path / "g.png", title="x")
  w, h = _png_size(gray)
  assert 400 <= w <= 1000 and 400 <= h <= 1100
  rgb = plots.image_grid(rng.uniform(size=(6, 32, 32, 3)), tmp_path / "c.png", nrow=3)
  w, h = _png_size(rgb)
  assert w > h and 300 <= w <= 1000
  with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
    plots.image_grid(np.zeros((4, 28, 28)), tmp_path / "bad.png")


def test_reconstructions(tmp_path):
  x = np.random.default_rng(0).uniform(size=(13, 28, 28, 1))
  path = plots.reconstructions(x, 1.0 - x, tmp_path / "r.png")
  w, h = _png_size(path)
  assert 300 <= w <= 1000 and 100 <= h <= 1000 and w > h  # 4 rows of 10, 28-pixel images


def test_training_curves_with_and_without_terms(tmp_path):
  records = [{"step": s, "train/elbo": -100 - 1e3 / (s + 1), "train/kl": 20.0 + s / 100,
              "train/log_px_given_z": -80 - 1e3 / (s + 1)} for s in range(0, 1000, 10)]
  records += [{"step": s, "eval/elbo": -105 - 1e3 / (s + 1)} for s in range(0, 1000, 100)]
  _, h_two = _png_size(plots.training_curves(records, tmp_path / "c2.png", title="run"))
  only_elbo = [{k: v for k, v in r.items() if k in ("step", "train/elbo")} for r in records]
  w, h_one = _png_size(plots.training_curves(only_elbo, tmp_path / "c1.png"))
  assert 500 <= w <= 1000 and h_two > h_one
  _png_size(plots.training_curves([], tmp_path / "empty.png"))


def test_latent_manifold_grid_order(tmp_path):
  seen = {}

  def decode_mean(z):
    seen["z"] = z
    # Brightness tracks z1 so the picture shows a left-to-right ramp; flattened output is allowed.
    return np.repeat(1 / (1 + np.exp(-z[:, :1])), 28 * 28, axis=1)

  path = plots.latent_manifold(decode_mean, tmp_path / "m.png", n=5)
  z = seen["z"].reshape(5, 5, 2)
  assert np.all(np.diff(z[..., 0], axis=1) > 0) and np.all(np.diff(z[..., 1], axis=0) < 0)
  np.testing.assert_allclose(z[0, 0], [-1.6448536, 1.6448536], rtol=1e-6)
  w, h = _png_size(path)
  assert 400 <= w <= 1000 and 400 <= h <= 1100
  with pytest.raises(ValueError, match="decode_mean_fn"):
    plots.latent_manifold(lambda z: np.zeros((len(z), 3)), tmp_path / "bad.png", n=5)
