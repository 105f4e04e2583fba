"""`poyo-rt demo`, as the README's first command runs it (shortened), end to end in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

from poyo_rt.demo import DEFAULT_MIN_R2, bundled_checkpoint, heldout_session
from poyo_rt.train.evaluate import load_decoder


def test_bundled_checkpoint_knows_the_demo_population():
    model, norm, meta = load_decoder(bundled_checkpoint())
    session = heldout_session(meta)
    assert session.start_s >= 0 and session.duration_s > 30
    assert set(session.unit_ids) <= set(model.unit_emb.vocab)
    assert len(norm.mean) == model.readout_spec.dim == 2


def test_demo_quick_decodes_above_the_floor(tmp_path):
    res = subprocess.run([sys.executable, "-m", "poyo_rt.cli", "demo", "--quick", "--device", "cpu", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    result = json.loads((tmp_path / "demo.json").read_text())
    assert result["r2_mean"] >= DEFAULT_MIN_R2 and result["received"] > 200 and result["missed"] == 0
    assert (tmp_path / "demo.png").read_bytes()[:4] == b"\x89PNG"
    latency = json.loads((tmp_path / "latency.json").read_text())
    assert latency["summary"]["stages"]["forward"]["count"] == result["ticks"]
    assert "decoded R² per channel" in res.stdout
