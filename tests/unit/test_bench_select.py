from jestflow.bench.select import bench_select, markdown_table


def test_bench_select_measures_both_and_chunked_is_small(tmp_path):
    rows = bench_select([4096], dim=32, ratio=0.8, chunks=16, device="cpu", repeats=1, out=str(tmp_path))
    dense, chunked = rows
    assert dense["impl"] == "dense" and chunked["impl"] == "chunked"
    assert dense["peak_bytes"] > 4096 * 4096 * 4  # at least one dense N x N float matrix
    assert chunked["peak_bytes"] < 0.1 * dense["peak_bytes"]
    table = (tmp_path / "select.md").read_text()
    assert table == markdown_table(rows) and "| cpu | 4096 | 816 |" in table
