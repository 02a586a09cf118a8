"""The results-table schema is declared once and every writer and reader agrees with it."""
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from parity.runs import schema
from parity.runs.tables import jitter_table, lane_table

ROOT = Path(__file__).resolve().parents[1]


def test_reports_readme_shows_the_declared_schema():
    text = (ROOT / "reports" / "README.md").read_text()
    for title, cols in schema.TABLES.items():
        m = re.search(rf"<!-- schema: {re.escape(title)} -->\n(.*?)\n<!-- /schema -->", text, re.S)
        assert m, f"reports/README.md has no schema block for {title}"
        assert m.group(1) == schema.markdown(cols), f"reports/README.md's {title} table differs from parity/runs/schema.py"


def test_lane_table_has_every_declared_column_in_order_and_type():
    x = np.random.default_rng(0).normal(300, 50, (3, 2, 5)).astype(np.float32)
    x[1, 0] = np.nan
    t = lane_table("c", np.arange(3), np.arange(3) / 10, "torch", "vehicle", "ck", ["a", "b"], x,
                   {"bend_px": np.zeros((3, 2))}, {"frame_accuracy": np.ones(3)}, np.full(3, 2.5),
                   parity_reference="torch@vehicle", bending_jitter_reference="gt")
    assert t.column_names == [c.name for c in schema.LANES]
    for c in schema.LANES:
        assert t.schema.field(c.name).type == schema.arrow_type(c, 5), c.name
    assert t.column("exists").to_pylist() == [True, True, False, True, True, True]
    assert t.column("dx_ref_mean_px").null_count == 6  # not given: null, never 0
    assert t.column("infer_ms").to_pylist() == [2.5] * 6


def test_undeclared_column_is_refused():
    with pytest.raises(ValueError, match="not declared"):
        lane_table("c", [0], [0.0], "torch", "v", "ck", ["a"], np.zeros((1, 1, 2), np.float32), {"made_up": np.zeros((1, 1))})


def test_jitter_table_follows_its_schema():
    t = jitter_table([{"case": "c", "runner": "torch", "pipeline": "v", "perturbation": "none", "severity": 0, "lane": 1,
                       "lane_name": "a", "lookahead": "near", "row": 17, "reference": "gt", "jitter_rms": 0.5}])
    assert t.column_names == [c.name for c in schema.JITTER]
    assert t.schema.field("severity").type == pa.int8() and t.column("jitter_p95").null_count == 1


def test_a_units_result_travels_as_one_table_of_each_kind_in_one_piece():
    """A pool worker's result is pickled to the parent: a list of a case's ~60 small tables per kind took
    ~70x longer there and back than one table in one piece (runs.tables.unit_result)."""
    import pickle
    from types import SimpleNamespace

    from parity.runs.tables import unit_result

    lanes = [pa.table({"frame": [i, i + 1], "x": [0.5 * i, 1.5]}) for i in range(0, 6, 2)]
    outputs = [pa.table({"frame": [i], "raw_max": [float(i)]}) for i in range(3)]
    runner = SimpleNamespace(name="torch", describe=lambda: {"name": "torch"})
    got = pickle.loads(pickle.dumps(unit_result(lanes, [{"lane": 0, "rms_px": 1.0}], outputs, [runner])))
    assert got["tables"].equals(pa.concat_tables(lanes)) and got["outputs"].equals(pa.concat_tables(outputs))
    for table in (got["tables"], got["outputs"], got["jitter"]):
        assert {c.num_chunks for c in table.columns} == {1}
    assert got["jitter"].num_rows == 1 and got["runners"] == {"torch": {"name": "torch"}}
