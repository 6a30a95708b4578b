"""`sila doctor` on row errors whose messages name their own row (id, path, numbers): one group
per message class; a verdict on bad input gets no `--retry-errors` advice."""

from __future__ import annotations

from sila.coordinator.ops.doctor import diagnose

import sila
from tests.conftest import make_numbers

NAMED = """
import hashlib
import pyarrow as pa
import sila

class Named(sila.Stage):
    name = "named"; table = "nums"; inputs = ["id", "x"]; version = "1"
    outputs = [pa.field("named", pa.float64())]
    def process_row(self, row):
        x = int(row["x"])
        sid = hashlib.sha1(row["id"].encode()).hexdigest()[:16]  # a content id, as sources'
        if x % 10 == 0:  # every message differs: it names the row's id, path and position
            raise sila.RowError(f"cannot decode frame {x * 3} (source {sid}: /data/cam{x}/a.mp4)")
        if x % 10 == 5:
            raise sila.RowError(f"no picture stream in '/data/my clips/{x}.mkv' ({sid})")
        return {"named": row["x"] * 1.0}
"""


def test_doctor_groups_messages_by_class(tmp_path):
    code = tmp_path / "named.py"
    code.write_text(NAMED)
    lk = sila.Lake(tmp_path / "lake").init()
    make_numbers(lk, fragments=2, rows_per_fragment=50)
    assert lk.run(f"{code}:Named")["state"] == "succeeded"
    (f,) = [f for f in diagnose(lk)["findings"] if f["kind"] == "row_errors"]
    top = dict(f["detail"]["top"])
    assert top == {"cannot decode frame N (source ID": 10, "no picture stream in PATH (ID)": 10}
    assert "20 row(s)" in f["message"] and "10 x cannot decode frame N" in f["message"]
    # the stage's verdicts: a retry gives them again, so no --retry-errors
    assert f["severity"] == "info" and f["fix"] is None
    examples = f["detail"]["examples"]
    assert examples["no picture stream in PATH (ID)"] in {f"r{i}" for i in range(5, 100, 10)}
