"""The benchmark still runs: its quick mode, end to end, through the real scripts."""
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_quick_benchmark_prints_a_complete_table(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "benchmark.py"), "--quick", "--seeds", "1",
                             "--output", str(tmp_path / "table.md")], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| (seed-style script|program default) \|(.*)\|$",
                                                          result.stdout, re.MULTILINE)}
    assert set(rows) == {"seed-style script", "program default"}
    for name, cells in rows.items():
        chosen, startup, seconds_per_epoch, wall, _, validation, accuracy, memory, speedup, _ = (
            c.strip() for c in cells.split("|"))
        assert validation == "—"  # no run held out a validation split
        if name == "seed-style script":  # the original example's steps record no start-up
            assert chosen == "tensorflow, float32" and startup == "—"
        else:  # the program's precision: measured, or remembered from an earlier run on this machine
            assert re.fullmatch(r"tensorflow, (float32|bfloat16) \((measured|remembered)\)", chosen), chosen
            assert 0 < float(startup) < float(wall)
        assert float(seconds_per_epoch) > 0 and float(wall) > float(seconds_per_epoch)
        assert 0.5 < float(accuracy.split(" ± ")[0]) <= 1  # 2,000 images, 1 epoch: well above chance
        assert int(memory.replace(",", "")) > 100 and speedup.endswith("x")
    assert "quick mode" in result.stdout and "Machine: " in result.stdout
    if "avx2" in Path("/proc/cpuinfo").read_text():  # the instruction sets that decide the speed are named
        assert re.search(r"^Machine: .*\(avx2[a-z0-9_ ]*\)", result.stdout, re.MULTILINE)
    assert re.search(r"^Each epoch's seconds, program default: \d+\.\d$", result.stdout, re.MULTILINE)
    assert (tmp_path / "table.md").read_text().startswith("Command: `python benchmarks/benchmark.py --quick")
