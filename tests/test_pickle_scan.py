"""pickle_scan: calls that would allocate what the file does not hold are found before unpickling."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch

from wmap.errors import UnsafePickle
from wmap.io import read_checkpoint
from wmap.pickle_scan import allocating_call


class Call:
    """Pickles as ``function(*args)``: what a crafted file can ask the unpickler to do."""

    def __init__(self, function: Any, *args: Any) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.function, self.args


def data_pkl(path: Path) -> io.BytesIO:
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        return io.BytesIO(archive.read(name))


def real_state_dict() -> dict[str, Any]:
    """What real files hold: tensors, a parameter, a shared view, a tensor with an attribute."""
    state: OrderedDict[str, Any] = OrderedDict(a=torch.randn(3), b=torch.nn.Parameter(torch.randn(2, 2)))
    tagged = torch.randn(4)
    tagged.note = "kept"  # type: ignore[attr-defined]
    state["c"], state["d"] = tagged, state["a"][1:]
    return {"model": state, "cfg": {"lr": [0.1]}, "extra": {1, 2}, "complex": 1j}


def test_real_files_use_storage_classes_only_as_type_tags(tmp_path: Path) -> None:
    torch.save(real_state_dict(), tmp_path / "zip.pt")
    torch.save(real_state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert allocating_call(data_pkl(tmp_path / "zip.pt")) is None
    with open(tmp_path / "legacy.pt", "rb") as stream:
        assert allocating_call(stream, pickles=4) is None
    assert read_checkpoint(tmp_path / "zip.pt").unwrap().layout["d"] == (2,)


@pytest.mark.parametrize(
    ("function", "name"),
    [
        (bytearray, "builtins.bytearray"),
        (torch.FloatStorage, "torch.FloatStorage"),
        (torch.storage.UntypedStorage, "torch.storage.UntypedStorage"),
        (torch.LongTensor, "torch.LongTensor"),
    ],
)
def test_an_allocating_call_is_found_directly_through_the_memo_and_inside_arguments(function: Any, name: str) -> None:
    direct = pickle.dumps({"x": Call(function, 10)}, protocol=2)
    again = pickle.dumps({"tag": function, "x": Call(function, 10)}, protocol=4)  # second use is a memo get
    wrapped = pickle.dumps({"x": Call(torch._tensor._rebuild_from_type_v2, function, torch.Tensor, (10,), {})})
    for data in (direct, again, wrapped):
        assert allocating_call(io.BytesIO(data)) == name


def test_a_tiny_file_cannot_make_the_reader_allocate_gigabytes(tmp_path: Path) -> None:
    """The 892-byte case: torch's legacy reader unpickles a 'magic number' first, which may be a
    ``bytearray(1.5e9)``; and a torch zip whose data.pkl calls it. Measured in a fresh process: the
    reference (torch.load itself) allocates the 1.5 GB, wmap's reader refuses first."""
    legacy = tmp_path / "magic.pt"
    legacy.write_bytes(pickle.dumps(Call(bytearray, 1_500_000_000), protocol=2))
    archive = tmp_path / "zip.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "x": Call(bytearray, 1_500_000_000)}, archive)
    assert legacy.stat().st_size < 100 and archive.stat().st_size < 2000

    def peak_growth_mib(imports: str, code: str, path: Path) -> subprocess.Popen[str]:
        """Growth of the process's peak virtual memory (``VmPeak``): an allocation counts whether or not
        its pages are touched (calloc'd zeros may never be)."""
        script = (
            f"import sys, {imports}\n"
            "def peak():\n"
            "    with open('/proc/self/status') as status:\n"
            "        return next(int(line.split()[1]) for line in status if line.startswith('VmPeak'))\n"
            "before = peak()\n"
            f"try:\n    {code}\nexcept Exception as error:\n    print(type(error).__name__, file=sys.stderr)\n"
            "print((peak() - before) / 1024)\n"
        )
        return subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)

    for path in (legacy, archive):
        result = read_checkpoint(path)
        assert isinstance(result.failure(), UnsafePickle)
        assert "bytearray" in str(result.failure())
    runs = [
        (peak_growth_mib("wmap.io", "wmap.io.read_checkpoint(sys.argv[1])", path), False) for path in (legacy, archive)
    ]
    runs += [  # the negative control: torch's own reader
        (peak_growth_mib("torch", "torch.load(sys.argv[1], weights_only=True)", path), True)
        for path in (legacy, archive)
    ]
    for run, allocates in runs:
        out, _ = run.communicate(timeout=300)
        growth = float(out.split()[-1])
        assert growth > 1000 if allocates else growth < 100, (growth, allocates)
